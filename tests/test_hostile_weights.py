"""Hostile weights files: every reader gives a one-line VisiontkError, never a crash, a read
outside the file's data, unbounded memory or executed code. The files are made by tests/hostile.py;
a fuzzer (hypothesis) varies headers, strides, offsets and shapes around the hand-written cases."""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from hostile import (
    Tensor,
    npy_bytes,
    peak_memory_mb,
    torch_pickle,
    write_npz,
    write_pth,
    write_safetensors,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from visiontk.branches import read_conv_layers
from visiontk.errors import VisiontkError
from visiontk.tensorfiles import read_pth, read_safetensors

FLOATS = np.arange(100, dtype="<f4")
FIXTURE = [HealthCheck.function_scoped_fixture]  # tmp_path is reused: each example rewrites


def one_line_error(call, *args, match: str | None = None) -> str:
    with pytest.raises(VisiontkError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message and message
    if match:
        assert match in message, message
    return message


def pth(tmp_path, tensor: Tensor, storage: bytes = FLOATS.tobytes(), name="w.pth"):
    return write_pth(tmp_path / name, {"conv.weight": tensor}, {"0": storage})


# --- PyTorch checkpoints: the cases of issue #10 ----------------------------------------------


def test_a_well_formed_hand_written_checkpoint_reads_back(tmp_path):
    path = pth(tmp_path, Tensor("0", 10, (2, 3), (30, 2)))
    got = read_pth(path)["conv.weight"]
    np.testing.assert_array_equal(got, [[10, 12, 14], [40, 42, 44]])


@pytest.mark.parametrize(
    ("offset", "size", "stride", "problem"),
    [
        (99, (1000,), (-1_000_000_000,), "strides"),  # segfaulted before
        (99, (100,), (-1,), "strides"),  # in range: read memory before the data
        (-50, (10,), (1,), "offset"),  # before the storage
        (0, (20000, 3, 100, 100), (0, 0, 0, 0), "elements"),  # 4 bytes → 2.5 GB before
        (95, (10,), (1,), "addresses element"),  # past the end
        (0, (10, 10), (1,), "strides"),  # one stride for two dimensions
        (0, (True, 3), (3, 1), "shape"),
        (0, (2.5,), (1,), "shape"),
        (0, (-3,), (1,), "shape"),
        ("0", (3,), (1,), "offset"),
        (0, (3,), (1.0,), "strides"),
        (0, "abc", (1,), "shape"),
    ],
)
def test_crafted_tensor_records_are_refused(tmp_path, offset, size, stride, problem):
    storage = FLOATS[:1].tobytes() if problem == "elements" else FLOATS.tobytes()
    one_line_error(
        read_pth, pth(tmp_path, Tensor("0", offset, size, stride), storage), match=problem
    )


def test_crafted_tensors_never_reach_the_report(tmp_path):
    """visiontk branches / attention on the same files: an error, not exit 139 or a report."""
    from visiontk.vit import read_weights

    path = pth(tmp_path, Tensor("0", 99, (4, 3, 5, 5), (-1_000_000_000, 1, 1, 1)))
    one_line_error(read_conv_layers, path, match="strides")
    one_line_error(read_weights, path, match="strides")


def test_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A deflated storage of 256 MiB of zeros (about 250 KB on disk)."""
    path = write_pth(
        tmp_path / "bomb.pth",
        {"w": Tensor("0", 0, (64, 1 << 20), (1 << 20, 1))},
        {"0": bytes(256 << 20)},
        compression=zipfile.ZIP_DEFLATED,
    )
    assert path.stat().st_size < 2 << 20
    grown, outcome = peak_memory_mb(f"visiontk.tensorfiles.read_pth({str(path)!r})")
    assert outcome.startswith("VisiontkError") and "zip bomb" in outcome, outcome
    assert grown < 64, f"{grown:.0f} MB"


def test_size_limit_is_checked_from_the_header_and_can_be_raised(tmp_path, monkeypatch):
    values = np.ones(1000, "<f4")
    path = write_pth(
        tmp_path / "big.pth", {"w": Tensor("0", 0, (1000,), (1,))}, {"0": values.tobytes()}
    )
    monkeypatch.setenv("VISIONTK_MAX_WEIGHTS_BYTES", "2000")
    one_line_error(read_pth, path, match="VISIONTK_MAX_WEIGHTS_BYTES")
    monkeypatch.setenv("VISIONTK_MAX_WEIGHTS_BYTES", "9000")
    np.testing.assert_array_equal(read_pth(path)["w"], values)


def test_zero_strides_and_repeated_views_stay_bounded(tmp_path):
    """4 bytes asking for 2.5 GB, and one storage viewed by 2000 tensors."""
    broadcast = pth(
        tmp_path, Tensor("0", 0, (20000, 3, 100, 100), (0, 0, 0, 0)), FLOATS[:1].tobytes()
    )
    grown, outcome = peak_memory_mb(f"visiontk.branches.read_conv_layers({str(broadcast)!r})")
    assert outcome.startswith("VisiontkError") and grown < 64, (grown, outcome)
    storage = np.zeros(1 << 18, "<f4").tobytes()  # 1 MiB
    state = {f"l{i}.weight": Tensor("0", 0, (64, 64, 8, 8), (4096, 64, 8, 1)) for i in range(2000)}
    many = write_pth(tmp_path / "many.pth", state, {"0": storage})
    code = (
        "import os; os.environ['VISIONTK_MAX_WEIGHTS_BYTES'] = str(256 << 20); "
        f"visiontk.branches.read_conv_layers({str(many)!r})"
    )
    grown, outcome = peak_memory_mb(code)
    assert "over the limit" in outcome and grown < 600, (grown, outcome)


def test_self_referencing_and_deeply_nested_pickles(tmp_path):
    loop: dict = {}
    loop["model"] = loop
    one_line_error(read_pth, write_pth(tmp_path / "loop.pth", loop), match="nested")
    deep = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
    one_line_error(read_pth, write_pth(tmp_path / "deep.pth", None, data_pkl=deep))


def test_pickle_memo_index_cannot_allocate(tmp_path):
    """LONG_BINPUT 2**28: the C unpickler zero-fills a 4 GB memo for these 9 bytes."""
    memo = b"\x80\x02N" + b"r" + struct.pack("<I", 1 << 28) + b"."
    path = write_pth(tmp_path / "memo.pth", None, data_pkl=memo)
    grown, outcome = peak_memory_mb(f"visiontk.tensorfiles.read_pth({str(path)!r})")
    assert outcome.startswith("VisiontkError") and grown < 64, (grown, outcome)


def test_globals_are_fresh_per_file(tmp_path):
    """BUILD on an allowed global must not change how the next file is read."""
    ok = pth(tmp_path, Tensor("0", 0, (3,), (1,)))
    # GLOBAL torch FloatStorage, BUILD (None, {"dtype": "bfloat16"}) on it, then discard it
    poison = (
        b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeX\x08\x00\x00\x00bfloat16"
        b"s\x86b0" + torch_pickle({"w": Tensor("0", 0, (3,), (1,))})[2:]
    )
    write_pth(tmp_path / "poison.pth", None, {"0": FLOATS.tobytes()}, data_pkl=poison)
    with contextlib.suppress(VisiontkError):
        read_pth(tmp_path / "poison.pth")
    np.testing.assert_array_equal(read_pth(ok)["conv.weight"], [0, 1, 2])


def test_refused_pickles_execute_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    for payload in ({"w": Boom()}, {"w": eval}, {"w": pickle.loads}):
        path = write_pth(tmp_path / "evil.pth", None, data_pkl=pickle.dumps(payload, protocol=2))
        one_line_error(read_pth, path, match="refused")
    assert not marker.exists()


def test_storage_problems(tmp_path):
    one_line_error(read_pth, pth(tmp_path, Tensor("missing", 0, (3,), (1,))), match="missing")
    one_line_error(
        read_pth, pth(tmp_path, Tensor("0", 0, (3,), (1,)), b"\x00" * 7), match="whole number"
    )
    state = {
        "a": Tensor("0", 0, (3,), (1,)),
        "b": Tensor("0", 0, (3,), (1,), storage_type="DoubleStorage"),
    }
    two = write_pth(tmp_path / "two.pth", state, {"0": FLOATS.tobytes()})
    one_line_error(read_pth, two, match="two different types")


def test_truncated_and_corrupt_archives(tmp_path):
    good = pth(tmp_path, Tensor("0", 0, (10, 10), (10, 1)))
    blob = good.read_bytes()
    for cut in (0, 10, len(blob) // 2, len(blob) - 5):
        (tmp_path / "cut.pth").write_bytes(blob[:cut])
        one_line_error(read_pth, tmp_path / "cut.pth")
    crc = bytearray(blob)
    at = blob.index(FLOATS[50:51].tobytes())
    crc[at] ^= 0xFF
    (tmp_path / "crc.pth").write_bytes(bytes(crc))
    one_line_error(read_pth, tmp_path / "crc.pth", match="corrupt")


def test_zip_directory_of_a_newer_version(tmp_path):
    """zipfile raises NotImplementedError (not BadZipFile) for a central-directory entry that
    needs a newer zip version: the fuzzer found it in an .npz; .pth is a zip too."""
    npz = write_npz(tmp_path / "v.npz", {"c.weight": np.zeros((2, 3, 4, 4), np.float32)})
    for path, reader in (
        (npz, read_conv_layers),
        (pth(tmp_path, Tensor("0", 0, (10, 10), (10, 1))), read_pth),
    ):
        blob = bytearray(path.read_bytes())
        blob[blob.rfind(b"PK\x01\x02") + 6] = 64  # version needed to extract: 6.4
        path.write_bytes(bytes(blob))
        one_line_error(reader, path, match="zip file version 6.4")


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE)
@given(
    offset=st.integers(-5, 120),
    size=st.lists(st.integers(-2, 12), min_size=0, max_size=4),
    stride=st.lists(st.integers(-3, 40), min_size=0, max_size=4),
)
@example(offset=0, size=[3], stride=[-3])
@example(offset=4, size=[0, 2**40, 2**40], stride=[1, 1, 1])
def test_fuzz_tensor_records(tmp_path, offset, size, stride):
    """Any record: refused in one line, or exactly the elements it names, all inside the data."""
    path = pth(tmp_path, Tensor("0", offset, tuple(size), tuple(stride)))
    try:
        got = read_pth(path)["conv.weight"]
    except VisiontkError as exc:
        assert "\n" not in str(exc)
        return
    assert got.shape == tuple(size)
    for index in np.ndindex(*size):
        flat = offset + sum(i * s for i, s in zip(index, stride, strict=True))
        assert 0 <= flat < FLOATS.size
        assert got[index] == FLOATS[flat]


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE)
@given(data=st.data())
def test_fuzz_corrupted_bytes_of_every_format(tmp_path, data):
    """Random byte changes in valid .pth, .safetensors and .npz files: a result or a
    VisiontkError, nothing else."""
    weights = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype="<f4")
    pth_file = write_pth(
        tmp_path / "f.pth",
        {"c.weight": Tensor("0", 0, (2, 3, 4, 4), (48, 16, 4, 1))},
        {"0": weights.tobytes()},
    )
    st_file = write_safetensors(
        tmp_path / "f.safetensors",
        {"c.weight": {"dtype": "F32", "shape": [2, 3, 4, 4], "data_offsets": [0, weights.nbytes]}},
        weights.tobytes(),
    )
    npz_file = write_npz(
        tmp_path / "f.npz",
        {"c.weight": weights.reshape(2, 3, 4, 4)},
        compression=data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
    )
    for path in (pth_file, st_file, npz_file):
        blob = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 6))):
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(blob[: data.draw(st.integers(1, len(blob)))]))
        try:
            read_conv_layers(path)
        except VisiontkError as exc:
            assert "\n" not in str(exc)


# --- safetensors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({"w": {"dtype": "F32", "shape": [2**31, 2**33], "data_offsets": [0, 16]}}, "too large"),
        ({"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 16]}}, "bytes"),
        ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "shape"),
        ({"w": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}}, "shape"),
        ({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}, "shape"),
        ({"w": {"dtype": "F32", "shape": [4]}}, "data_offsets"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, "outside"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, "outside"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, "bytes"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, "outside"),
        ({"w": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}, "dtype"),
        ({"w": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, "dtype"),
        ({"w": [1, 2]}, "not an object"),
        ({"w": "F32"}, "not an object"),
        ([{"dtype": "F32"}], "not an object"),
    ],
)
def test_malformed_safetensors_headers(tmp_path, header, problem):
    path = write_safetensors(tmp_path / "m.safetensors", header, bytes(16))
    one_line_error(read_safetensors, path, match=problem)
    one_line_error(read_conv_layers, path, match=problem)


def test_safetensors_header_length_and_json(tmp_path):
    one_line_error(
        read_safetensors,
        write_safetensors(tmp_path / "a.safetensors", {}, length=1 << 62),
        match="past the end",
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    one_line_error(
        read_safetensors, write_safetensors(tmp_path / "b.safetensors", deep), match="not JSON"
    )
    one_line_error(
        read_safetensors, write_safetensors(tmp_path / "c.safetensors", b"\xff{}"), match="not JSON"
    )
    (tmp_path / "d.safetensors").write_bytes(b"\x01")
    one_line_error(read_safetensors, tmp_path / "d.safetensors", match="too short")


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE)
@given(
    shape=st.lists(st.integers(-1, 2**40), max_size=4),
    start=st.integers(-8, 600),
    length=st.integers(-8, 600),
    dtype=st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL"]),
)
@example(shape=[0, 1220716, 1221437, 1546479], start=0, length=0, dtype="F32")
def test_fuzz_safetensors_headers(tmp_path, shape, start, length, dtype):
    data = bytes(range(256)) * 2
    header = {"w": {"dtype": dtype, "shape": shape, "data_offsets": [start, start + length]}}
    path = write_safetensors(tmp_path / "f.safetensors", header, data)
    try:
        got = read_safetensors(path)["w"]
    except VisiontkError as exc:
        assert "\n" not in str(exc)
        return
    assert start >= 0 and start + length <= len(data)
    assert got.shape == tuple(shape)
    if dtype in ("U8", "BOOL"):
        np.testing.assert_array_equal(
            got.reshape(-1).view(np.uint8), np.frombuffer(data[start : start + length], np.uint8)
        )


# --- .npz and ONNX ----------------------------------------------------------------------------


def conv_npz(tmp_path, first, name="w.npz", **kw) -> object:
    second = (
        np.ones((8, first.shape[0] // 2, 3, 3), np.float32)
        if first.ndim == 4 and first.shape[0]
        else np.ones((8, 1, 3, 3), np.float32)
    )
    return write_npz(tmp_path / name, {"conv1.weight": first, "conv2.weight": second}, **kw)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (np.full((4, 3, 5, 5), "x"), "text"),
        (np.ones((4, 3, 5, 5), np.complex64), "complex"),
        (np.full((4, 3, 5, 5), np.nan, np.float32), "NaN"),
        (np.full((4, 3, 5, 5), np.inf, np.float64), "NaN or infinite"),
        (np.full((4, 3, 5, 5), 1e300, np.float64), "overflow"),
        (np.zeros((0, 3, 5, 5), np.float32), "no units"),
    ],
)
def test_npz_weights_that_mean_nothing(tmp_path, values, problem):
    one_line_error(read_conv_layers, conv_npz(tmp_path, values), match=problem)


def test_npz_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    raw = npy_bytes(
        header={"descr": "|O", "shape": (1,)},
        body=pickle.dumps(np.array([Boom()], dtype=object), protocol=2),
    )
    path = write_npz(tmp_path / "o.npz", {"conv1.weight": raw})
    one_line_error(read_conv_layers, path, match="object")
    assert not marker.exists()


def test_npz_headers_that_lie_and_broken_archives(tmp_path):
    lie = npy_bytes(np.ones((4, 3, 5, 5), np.float32), header={"shape": (400, 3, 5, 5)})
    one_line_error(
        read_conv_layers,
        write_npz(tmp_path / "lie.npz", {"c.weight": lie}),
        match="bytes for shape",
    )
    junk = write_npz(tmp_path / "junk.npz", {"c.weight": b"\x93NUMPY\x01\x00\xff\xff{junk"})
    one_line_error(read_conv_layers, junk, match="not a valid .npy")
    good = conv_npz(tmp_path, np.ones((4, 3, 5, 5), np.float32), compression=zipfile.ZIP_DEFLATED)
    blob = bytearray(good.read_bytes())
    (tmp_path / "cut.npz").write_bytes(bytes(blob[: len(blob) // 2]))
    one_line_error(read_conv_layers, tmp_path / "cut.npz")
    info = zipfile.ZipFile(good).infolist()[0]
    blob[info.header_offset + 30 + len(info.filename) + 5] ^= 0x55  # inside the deflated data
    (tmp_path / "crc.npz").write_bytes(bytes(blob))
    one_line_error(read_conv_layers, tmp_path / "crc.npz", match="corrupt")


def test_npz_zip_bomb(tmp_path):
    body = bytes(256 << 20)
    raw = npy_bytes(header={"descr": "<f4", "shape": (64, 1 << 20)}, body=body)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conv1.weight.npy", raw)
    grown, outcome = peak_memory_mb(f"visiontk.tensorfiles.read_npz({str(path)!r})")
    assert "zip bomb" in outcome and grown < 64, (grown, outcome)


onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")


def onnx_model(path, weight: np.ndarray, group: int, dims=None, external: bool = False):
    from onnx import TensorProto, helper, numpy_helper

    first = numpy_helper.from_array(weight, "conv1.weight")
    if dims is not None:
        del first.dims[:]
        first.dims.extend(dims)
    if external:
        first.data_location = TensorProto.EXTERNAL
        first.ClearField("raw_data")
        entry = first.external_data.add()
        entry.key, entry.value = "location", "../../../../etc/passwd"
    per_group = weight.shape[0] // group if weight.shape[0] % group == 0 else 13
    second = numpy_helper.from_array(np.ones((14, per_group, 3, 3), np.float32), "conv2.weight")
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight"], ["h"], name="conv1"),
        helper.make_node("Conv", ["h", "conv2.weight"], ["y"], name="conv2", group=group),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, None)],
        [helper.make_tensor_value_info("y", 1, None)],
        initializer=[first, second],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_dims_that_lie_group_that_does_not_divide_and_external_data(tmp_path):
    from visiontk.branches import analyse

    weight = np.random.default_rng(0).normal(size=(96, 3, 11, 11)).astype(np.float32)
    lie = onnx_model(tmp_path / "lie.onnx", weight, 2, dims=[960, 3, 11, 11])
    one_line_error(read_conv_layers, lie, match="does not fit its dims")
    seven = onnx_model(tmp_path / "seven.onnx", weight, 7)
    with pytest.raises(VisiontkError) as caught:
        analyse(read_conv_layers(seven))
    assert "91" in str(caught.value) and "96" in str(caught.value)
    outside = onnx_model(tmp_path / "ext.onnx", weight, 2, external=True)
    one_line_error(read_conv_layers, outside, match="external")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz", ".onnx"])
def test_pipes_and_endless_devices_are_not_read(tmp_path, suffix):
    """A FIFO would block a reader forever and /dev/zero never ends."""
    from visiontk.vit import read_weights

    fifo = tmp_path / f"fifo{suffix}"
    os.mkfifo(fifo)
    zero = tmp_path / f"zero{suffix}"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        one_line_error(read_conv_layers, path, match="not a regular file")
        if suffix in (".pth", ".safetensors"):
            one_line_error(read_weights, path, match="not a regular file")


def test_pickles_larger_than_a_state_dict_needs(tmp_path):
    big = b"\x80\x02]" + b"]a" * (3 << 20) + b"."
    one_line_error(
        read_pth, write_pth(tmp_path / "big.pth", None, data_pkl=big), match="data.pkl is"
    )

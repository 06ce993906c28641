"""DINO ViT: parity with a PyTorch reference through every weights format, safe unpickling,
weights lookup, mask logic, TokenCut, and the attention command and stage."""

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dino_fixture import INPUTS, pixels, tiny_state

from visiontk.vit import ViT, WeightsError, find_weights, read_weights
from visiontk.vit.attention import (
    dino_attention,
    largest_component,
    mass_masks,
    preprocess,
    tokencut,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REAL_PTH = FIXTURES / "dino_tiny_p16.pth"  # written by torch.save (make_dino_fixture.py)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "dino_expected.npz"))


def write_safetensors(path: Path, state: dict) -> Path:
    header, blobs, offset = {}, [], 0
    for key, value in state.items():
        data = np.ascontiguousarray(value, np.float32).tobytes()
        header[key] = {
            "dtype": "F32",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


#: Hugging Face's names of a block's parts: ViTModel (DINO), and Dinov2Model.
VIT_NAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
DINOV2_NAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.output.dense",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.w12": "mlp.weights_in",
    "mlp.w3": "mlp.weights_out",
}


def hugging_face_layout(state: dict, names: dict = VIT_NAMES) -> dict:
    """The official state dict renamed as Hugging Face stores it (q, k, v split; ``names``:
    the block parts' names, VIT_NAMES for ViTModel, DINOV2_NAMES for Dinov2Model)."""
    dim = state["cls_token"].shape[-1]
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for key in ("mask_token", "register_tokens"):  # DINOv2's
        if key in state:
            out[f"embeddings.{key}"] = state[key]
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        _, i, rest = key.split(".", 2)
        layer = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            part = rest.rsplit(".", 1)[1]
            for j, name in enumerate(("query", "key", "value")):
                out[f"{layer}attention.attention.{name}.{part}"] = value[j * dim : (j + 1) * dim]
            continue
        for old, new in names.items():
            if rest == old or rest.startswith(old + "."):
                out[layer + new + rest[len(old) :]] = value
    return out


def weights_files(tmp: Path, patch: int) -> dict:
    state = tiny_state(patch)
    files = {
        "safetensors (official/timm names)": write_safetensors(
            tmp / f"o{patch}.safetensors", state
        ),
        "safetensors (Hugging Face names)": write_safetensors(
            tmp / f"hf{patch}.safetensors", hugging_face_layout(state)
        ),
    }
    if patch == 16:
        files["torch .pth"] = REAL_PTH
    return files


@pytest.mark.parametrize("patch, height, width", INPUTS)
def test_attention_matches_pytorch_reference_in_every_format(
    tmp_path, expected, patch, height, width
):
    for label, path in weights_files(tmp_path, patch).items():
        model = ViT.from_weights(path, device="cpu")
        assert (model.config.patch, model.config.heads, model.config.depth) == (patch, 2, 2)
        attn, keys = model.last_block(pixels(height, width))
        np.testing.assert_allclose(
            attn, expected[f"attn_p{patch}_{height}x{width}"], atol=1e-4, err_msg=label
        )
        np.testing.assert_allclose(
            keys, expected[f"keys_p{patch}_{height}x{width}"], atol=1e-4, rtol=1e-4, err_msg=label
        )
        maps = model.last_attention(pixels(height, width))
        assert maps.shape == (2, height // patch, width // patch) and maps.dtype == np.float32


def test_pixels_must_fit_the_patch_grid():
    model = ViT.from_weights(REAL_PTH, device="cpu")
    with pytest.raises(WeightsError, match="multiple of the patch size 16"):
        model.last_attention(pixels(50, 64))


# --- safe loading --------------------------------------------------------------------------


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, payload) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        z.writestr("archive/version", "3\n")
    return path


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.pth", {"w": _Boom(marker)})
    with pytest.raises(WeightsError) as e:
        read_weights(evil)
    assert "posix.system" in str(e.value) or "os.system" in str(e.value)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    sneaky = malicious_checkpoint(tmp_path / "eval.pth", {"w": eval})
    with pytest.raises(WeightsError, match="refused"):
        read_weights(sneaky)


def test_real_torch_checkpoint_loads_as_numpy():
    state = read_weights(REAL_PTH)
    ref = tiny_state(16)
    assert set(state) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(state[k], ref[k])


def test_broken_files_are_one_line_errors(tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(REAL_PTH.read_bytes()[:20000])
    st = write_safetensors(tmp_path / "full.safetensors", tiny_state(8))
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[:5000])
    bad_shape = tiny_state(8)
    bad_shape["blocks.0.attn.qkv.weight"] = bad_shape["blocks.0.attn.qkv.weight"][:, :7]
    wrong = write_safetensors(tmp_path / "wrong.safetensors", bad_shape)
    other = write_safetensors(tmp_path / "other.safetensors", {"fc.weight": np.zeros((3, 3))})
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    for path, words in [
        (cut, "cut.pth"),
        (cut_st, "truncated"),
        (text, "notes.pth"),
        (other, "not a DINO, DINOv2 or DINOv3 ViT"),
        (tmp_path / "none.pth", "no such file"),
    ]:
        with pytest.raises(WeightsError) as e:
            read_weights(path)
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="qkv"):
        ViT(read_weights(wrong))


def test_weights_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("VISIONTK_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as e:
        find_weights(None, "dino_vits8")
    assert "dino_deitsmall8_pretrain.pth" in str(e.value) and "https://" in str(e.value)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "dino_deitsmall16_pretrain.pth").write_bytes(REAL_PTH.read_bytes())
    assert find_weights(None, "dino_vits16") == hub / "dino_deitsmall16_pretrain.pth"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "dino_deitsmall16_pretrain.pth").write_bytes(REAL_PTH.read_bytes())
    monkeypatch.setenv("VISIONTK_WEIGHTS", str(mine))
    assert find_weights(None, "dino_vits16") == mine / "dino_deitsmall16_pretrain.pth"
    assert find_weights(REAL_PTH) == REAL_PTH
    with pytest.raises(WeightsError, match="no such weights file"):
        find_weights(tmp_path / "missing.pth")


# --- masks ---------------------------------------------------------------------------------


def test_mass_masks_keep_the_stated_share_of_attention():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 7, 9)) ** 4
    for t in (0.3, 0.6, 0.9):
        masks = mass_masks(maps, t)
        for m, kept in zip(maps, masks, strict=True):
            share = m[kept].sum() / m.sum()
            assert share > t - 1e-9
            # minimal: dropping the weakest kept patch falls below t
            weakest = m[kept].min()
            assert (m[kept].sum() - weakest) / m.sum() <= t + 1e-9
            assert m[kept].min() >= m[~kept].max()
    exact = np.array([[0.5, 0.3], [0.1, 0.1]])
    assert mass_masks(exact, 0.6).tolist() == [[True, True], [False, False]]


def test_largest_component():
    m = np.zeros((6, 6), bool)
    m[0, 0] = True
    m[2:5, 2:5] = True
    assert largest_component(m).sum() == 9 and not largest_component(m)[0, 0]
    assert not largest_component(np.zeros((3, 3), bool)).any()


def test_tokencut_recovers_a_planted_object():
    rng = np.random.default_rng(1)
    h, w, d = 12, 16, 32
    obj = np.zeros((h, w), bool)
    obj[3:8, 5:11] = True
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    keys = np.where(obj.reshape(-1, 1), a, b) + 0.6 * rng.standard_normal((h * w, d))
    stray = np.zeros((h, w), bool)
    stray[0, 15] = True  # an object-like patch away from the object: not connected to the seed
    keys[stray.reshape(-1)] = a + 0.6 * rng.standard_normal(d)
    mask, vec = tokencut(keys, (h, w))
    assert vec.shape == (h, w)
    iou = (mask & obj).sum() / (mask | obj).sum()
    assert iou > 0.9 and not mask[0, 15]


# --- end to end ----------------------------------------------------------------------------


def test_dino_attention_end_to_end(samples):
    model = ViT.from_weights(REAL_PTH, device="cpu")
    r = dino_attention(samples / "coffee.png", vit=model, image_size=160)
    assert r.image.shape == (160, 240, 3)
    assert r.maps.shape == (2, 10, 15) and r.masks.shape == (2, 10, 15)
    attn, _ = model.last_block(preprocess(r.image, 16, 0)[0])
    np.testing.assert_allclose(r.maps.sum(axis=(1, 2)), 1 - attn[:, 0], rtol=1e-4)
    assert r.tokencut.dtype == bool and 0 < r.tokencut.mean() < 1
    assert r.upsample(r.tokencut).shape == (160, 240)


def test_attention_refuses_images_smaller_than_sift_does(tmp_path):
    """A 1×1 image was upscaled to a patch grid and 'segmented'; like SIFT, under 16×16 is
    refused, in one line naming the file."""
    import cv2
    from click.testing import CliRunner
    from visiontk_cli.main import main

    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1), np.uint8))
    res = CliRunner().invoke(
        main,
        [
            "attention",
            str(tmp_path / "dot.png"),
            "--weights",
            str(REAL_PTH),
            "--out",
            str(tmp_path / "att"),
        ],
    )
    assert res.exit_code == 1 and "dot.png: image is 1×1 pixels" in res.output
    assert not any((tmp_path / "att").iterdir())


def test_attention_command_writes_pictures_and_summary(tmp_path, samples):
    from click.testing import CliRunner
    from visiontk_cli.main import main

    bad = tmp_path / "bad.png"
    bad.write_text("no")
    res = CliRunner().invoke(
        main,
        [
            "attention",
            str(samples / "astronaut.png"),
            str(bad),
            "--weights",
            str(REAL_PTH),
            "--out",
            str(tmp_path / "o"),
            "--image-size",
            "128",
            "--method",
            "tokencut",
        ],
    )
    assert res.exit_code == 1 and "bad.png" in res.output
    import cv2

    for suffix in ("_heads.png", "_overlay.png", "_mask.png"):
        assert cv2.imread(str(tmp_path / "o" / f"astronaut{suffix}")) is not None
    mask = cv2.imread(str(tmp_path / "o" / "astronaut_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
    summary = json.loads((tmp_path / "o" / "astronaut.json").read_text())
    assert summary["method"] == "tokencut" and summary["grid"] == [8, 8]
    assert abs(summary["foreground_fraction"] - (mask > 0).mean()) < 1e-9
    res = CliRunner().invoke(
        main,
        [
            "attention",
            str(samples / "astronaut.png"),
            "--out",
            str(tmp_path / "o2"),
            "--weights",
            str(tmp_path / "x.pth"),
        ],
    )
    assert res.exit_code == 1 and "no such weights file" in res.output


def test_dino_attention_stage_in_a_pipeline(tmp_path, samples):
    from visiontk.pipeline import Pipeline

    images = tmp_path / "images"
    images.mkdir()
    for n in ("coffee.png", "astronaut.png"):
        (images / n).write_bytes((samples / n).read_bytes())
    p = Pipeline.from_spec(
        [{"name": "dino-attention", "weights": str(REAL_PTH), "image_size": 96, "device": "cpu"}]
    )
    r = p.run(images, tmp_path / "out", quiet=True)
    assert r.ok and r.features_path is None
    written = sorted(x.name for x in (tmp_path / "out" / "attention").iterdir())
    assert written == sorted(
        f"{s}{x}"
        for s in ("astronaut.png", "coffee.png")
        for x in ("_heads.png", "_mask.png", "_overlay.png", ".json")
    )
    assert p.run(images, tmp_path / "out", quiet=True).images_cached == 2


def test_top_level_dino_attention(samples):
    import visiontk

    r = visiontk.dino_attention(
        samples / "astronaut.png", weights=REAL_PTH, device="cpu", image_size=64
    )
    assert r.maps.shape == (2, 4, 4) and r.mask("tokencut").shape == (4, 4)


def test_batches_equal_one_image_at_a_time(tmp_path, samples):
    import cv2

    from visiontk.errors import ImageError
    from visiontk.vit.attention import dino_attention_batches

    coffee = cv2.imread(str(samples / "coffee.png"))
    inputs = [
        samples / "coffee.png",
        tmp_path / "flipped.png",
        tmp_path / "dark.png",
        tmp_path / "bad.png",
        tmp_path / "darker.png",
        samples / "astronaut.png",
        tmp_path / "small.png",
    ]
    cv2.imwrite(str(inputs[1]), coffee[:, ::-1])
    cv2.imwrite(str(inputs[2]), coffee // 3)
    inputs[3].write_text("no")
    cv2.imwrite(str(inputs[4]), coffee // 5)
    cv2.imwrite(str(inputs[6]), coffee[::2, ::2])  # coffee's size again after resizing
    model = ViT.from_weights(REAL_PTH, device="cpu")
    calls = []
    model.last_block = (
        lambda run: lambda x, **k: calls.append(x.shape[:1] + x.shape[2:]) or run(x, **k)
    )(model.last_block)
    got = list(
        dino_attention_batches(inputs, vit=model, batch_size=2, image_size=96, features=True)
    )
    assert [path for path, _ in got] == inputs
    assert isinstance(got[3][1], ImageError) and "bad.png" in str(got[3][1])
    # full at 2; closed by the bad file; closed by a new size (astronaut is square); kept
    # in input order, so small does not join coffee's batch
    assert calls == [(2, 96, 144), (1, 96, 144), (1, 96, 144), (1, 96, 96), (1, 96, 144)]
    for path, result in got:
        if isinstance(result, Exception):
            continue
        alone = dino_attention(path, vit=model, image_size=96, features=True)
        np.testing.assert_allclose(result.maps, alone.maps, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.features, alone.features, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(result.tokencut, alone.tokencut)
        np.testing.assert_array_equal(result.image, alone.image)


def test_attention_command_on_a_folder_in_batches(tmp_path, samples):
    import cv2
    from click.testing import CliRunner
    from visiontk_cli.main import main

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    coffee = cv2.imread(str(samples / "coffee.png"))
    cv2.imwrite(str(folder / "a.png"), coffee)
    cv2.imwrite(str(folder / "sub" / "b.png"), coffee[:, ::-1])
    (folder / "c.png").write_text("no")
    res = CliRunner().invoke(
        main,
        [
            "attention",
            str(folder),
            "--weights",
            str(REAL_PTH),
            "--out",
            str(tmp_path / "o"),
            "--image-size",
            "64",
            "--batch-size",
            "2",
        ],
    )
    assert res.exit_code == 1 and "1 of 3 images failed" in res.output
    assert "c.png" in res.output and "Traceback" not in res.output
    a, b = (cv2.imread(str(tmp_path / "o" / f"{s}_heads.png")) for s in "ab")
    assert a is not None and b is not None and not np.array_equal(a, b)


def test_attention_on_file_names_that_are_not_utf8(tmp_path, samples):
    """'internal error (UnicodeEncodeError ...)', nothing written even for the good file."""
    import os

    from click.testing import CliRunner
    from visiontk_cli.main import main

    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    for raw in (b"bad\xff.png", b"good.png"):
        with open(os.path.join(folder, raw), "wb") as fh:
            fh.write((samples / "coffee.png").read_bytes())
    res = CliRunner().invoke(
        main,
        [
            "attention",
            str(tmp_path / "in"),
            "--weights",
            str(REAL_PTH),
            "--out",
            str(tmp_path / "att"),
            "--image-size",
            "64",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    written = sorted(os.listdir(tmp_path / "att"))
    # the odd name shown as text (\xff), escaped into one file name as the pipeline does
    assert {"bad%5Cxff.png_overlay.png", "good.png_overlay.png"} <= set(written)

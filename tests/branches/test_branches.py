"""Branch specialization: planted AlexNet-like layers through .pth, .npz and ONNX; scores;
statistics; SVD; the report and the command."""

import json
from pathlib import Path

import numpy as np
import pytest
from branch_fixture import planted_layers
from click.testing import CliRunner
from visiontk_cli.main import main

from visiontk.branches import ConvLayer, analyse, parse_branch_spec, read_conv_layers
from visiontk.branches.analysis import (
    chance_all_in_branch,
    colour_scores,
    frequency_and_orientation,
)
from visiontk.errors import OptionError
from visiontk.vit import WeightsError

PLANTED_PTH = Path(__file__).resolve().parents[1] / "fixtures" / "planted_alexnet.pth"


def write_npz(path, conv1, conv2):
    np.savez(
        path,
        **{
            "features.0.weight": conv1,
            "features.0.bias": np.zeros(96, np.float32),
            "features.3.weight": conv2,
        },
    )
    return path


def write_onnx(path, conv1, conv2):
    onnx = pytest.importorskip("onnx", reason="onnx is installed with [test]")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node(
            "Conv", ["x", "w1"], ["h"], name="conv1", kernel_shape=[11, 11], strides=[4, 4]
        ),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node(
            "Conv",
            ["r", "w2"],
            ["y"],
            name="conv2",
            kernel_shape=[5, 5],
            pads=[2, 2, 2, 2],
            group=2,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "alexnet-head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 227, 227])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(conv1, "w1"), numpy_helper.from_array(conv2, "w2")],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("fmt", ["pth", "npz", "onnx"])
def test_planted_split_is_found(tmp_path, fmt):
    conv1, conv2 = planted_layers()
    path = {
        "pth": lambda: PLANTED_PTH,
        "npz": lambda: write_npz(tmp_path / "w.npz", conv1, conv2),
        "onnx": lambda: write_onnx(tmp_path / "w.onnx", conv1, conv2),
    }[fmt]()
    layers = read_conv_layers(path)
    assert [lay.weight.shape for lay in layers[:2]] == [(96, 3, 11, 11), (64, 48, 5, 5)]
    if fmt == "onnx":
        assert layers[1].groups == 2
    r = analyse(layers)
    assert [b.size for b in r.branches] == [48, 48]
    assert r.p_value < 1e-6
    assert r.permutation_p_value < 0.01
    grey, colour = r.per_branch
    assert grey["mean_colour"] < 0.1 < 0.9 < colour["mean_colour"]
    assert grey["mean_frequency"] > colour["mean_frequency"]
    assert r.colour_units["per_branch"] == [0, 48]
    assert r.colour_units["p_all_in_one_branch"] < 1e-20


@pytest.mark.parametrize("fmt", ["npz", "onnx"])
def test_evenly_dealt_filters_show_no_split(tmp_path, fmt):
    conv1, conv2 = planted_layers(dealt_evenly=True)
    write = write_npz if fmt == "npz" else write_onnx
    r = analyse(read_conv_layers(write(tmp_path / f"w.{fmt}", conv1, conv2)))
    assert r.p_value > 0.01 and r.permutation_p_value > 0.01
    assert r.colour_units["p_all_in_one_branch"] is None


def test_scores_on_known_kernels():
    _y, x = np.mgrid[:11, :11] - 5
    grating = np.cos(2 * np.pi * 0.25 * x)  # vertical bars: frequency along x
    grey = np.repeat(grating[None], 3, axis=0)
    opponent = np.stack([grating, -grating, np.zeros_like(grating)])
    w = np.stack([grey, opponent]).astype(np.float32)
    np.testing.assert_allclose(colour_scores(w), [0.0, 1.0], atol=1e-9)
    freq, angle = frequency_and_orientation(w)
    assert np.all(np.abs(freq - 0.25) < 0.05)
    assert np.all(np.minimum(angle, 180 - angle) < 1)  # the peak lies on the x axis


def test_chance_figures_of_the_article():
    assert chance_all_in_branch(9, 32, 256) == pytest.approx(2.5e-9, rel=0.05)
    assert chance_all_in_branch(30, 96, 480) == pytest.approx(1.7e-23, rel=0.05)
    assert chance_all_in_branch(5, 4, 100) == 0.0


def test_user_branches_inception_style():
    rng = np.random.default_rng(2)
    conv1, _ = planted_layers()
    spec = "1x1=0:24,3x3=24:48,5x5=48:72,pool=72:96"
    r = analyse([ConvLayer("mixed", conv1)], branches=spec)
    assert [b["name"] for b in r.per_branch] == ["1x1", "3x3", "5x5", "pool"]
    assert r.p_value < 1e-6 and r.svd is None  # Kruskal–Wallis over four branches
    shuffled = conv1[rng.permutation(96)]
    assert analyse([ConvLayer("mixed", shuffled)], branches=spec).p_value > 1e-3
    for bad in ("a=0:10", "a=0:10,b=5:20", "a=10:5,b=20:30", "a=0:50,b=50:200", "a:0-10"):
        with pytest.raises(OptionError):
            parse_branch_spec(bad, 96)


def test_svd_axes_follow_colour_in_an_unbranched_pair():
    conv1, _ = planted_layers(dealt_evenly=True)
    rng = np.random.default_rng(4)
    is_colour = colour_scores(conv1) > 0.5
    # half of the next layer reads mostly colour units, half mostly grey ones
    reads = np.where(np.arange(64)[:, None] < 32, is_colour[None], ~is_colour[None])
    conv2 = (rng.standard_normal((64, 96, 3, 3)) * (0.1 + reads[:, :, None, None])).astype(
        np.float32
    )
    r = analyse([ConvLayer("conv1", conv1), ConvLayer("conv2", conv2)], branches="a=0:48,b=48:96")
    corr = r.svd["abs_correlation"]
    assert max(corr["axis1"]["colour"], corr["axis2"]["colour"]) > 0.9


def test_unbranched_next_layer_asks_for_a_spec():
    conv1, _ = planted_layers()
    with pytest.raises(OptionError, match="--branches"):
        analyse([ConvLayer("c1", conv1), ConvLayer("c2", np.zeros((8, 96, 3, 3), np.float32))])
    with pytest.raises(OptionError, match="no conv layer named"):
        analyse([ConvLayer("c1", conv1)], layer="nope")


def test_a_pipeline_asks_for_the_stage_option_not_a_flag(tmp_path):
    """Inside a pipeline there is no --branches flag: the message names the stage's option."""
    from visiontk.pipeline import Pipeline

    conv1, _ = planted_layers()
    models = tmp_path / "models"
    models.mkdir()
    np.savez(models / "one.npz", **{"features.0.weight": conv1})  # the last conv: no groups
    r = Pipeline.from_file("branches").run(models, tmp_path / "out", quiet=True)
    [failure] = r.failures
    assert "the branches stage's option" in failure["reason"]


def test_branches_command_writes_the_report(tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["branches", str(PLANTED_PTH), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "p = " in res.output
    data = json.loads((out / "branches.json").read_text())
    assert data["schema"] == "visiontk.branches/1" and data["units"] == 96
    assert data["p_value"] < 1e-6 and len(data["branches"]) == 2
    for b in data["branches"]:
        assert {"mean_colour", "mean_frequency", "p_value", "start", "stop"} <= set(b)
    for name in data["files"].values():
        assert (out / name).stat().st_size > 1000
    assert "<table" in (out / "report.html").read_text()


def test_branches_command_bad_input(tmp_path):
    import pickle
    import zipfile

    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("a/data.pkl", pickle.dumps({"w": print}, protocol=2))
    picture = tmp_path / "coffee.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n not weights")
    for path, words in [
        (tmp_path / "missing.pth", "no such file"),
        (evil, "refused"),
        (picture, "coffee.png: unsupported file type (.png)"),
    ]:
        res = CliRunner().invoke(main, ["branches", str(path), "--out", str(tmp_path / "o")])
        assert res.exit_code == 1 and words in res.output and "Traceback" not in res.output
    with pytest.raises(WeightsError, match="no 4-D convolution"):
        read_conv_layers(
            write_npz(
                tmp_path / "flat.npz", np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)
            )
        )


def test_branches_stage_over_weights_files(tmp_path):
    from visiontk.pipeline import Pipeline

    conv1, conv2 = planted_layers()
    models = tmp_path / "models"
    models.mkdir()
    write_npz(models / "planted.npz", conv1, conv2)
    write_npz(models / "even.npz", *planted_layers(dealt_evenly=True))
    (models / "notes.png").write_bytes(b"not weights")  # a folder yields the weights only
    r = Pipeline.from_file("branches").run(models, tmp_path / "out", quiet=True)
    assert r.ok and r.images == r.images_done == 2
    planted = json.loads(
        (tmp_path / "out" / "branches" / "planted.npz" / "branches.json").read_text()
    )
    even = json.loads((tmp_path / "out" / "branches" / "even.npz" / "branches.json").read_text())
    assert planted["p_value"] < 1e-6 < 0.01 < even["p_value"]


def test_deeper_layer_scored_through_its_weights():
    """conv2 units 0–31 read mostly colour units of conv1, 32–63 mostly grey ones; conv3 has
    groups=2, so conv2's two branches are 0–31 and 32–63 and should differ in colour."""
    conv1, _ = planted_layers()
    rng = np.random.default_rng(6)
    reads_colour = np.zeros((64, 96))
    reads_colour[:32, 48:] = 1
    reads_colour[32:, :48] = 1
    conv2 = rng.standard_normal((64, 96, 3, 3)) * (0.05 + reads_colour[:, :, None, None])
    conv3 = rng.standard_normal((32, 32, 3, 3))
    layers = [
        ConvLayer("conv1", conv1),
        ConvLayer("conv2", conv2.astype(np.float32)),
        ConvLayer("conv3", conv3.astype(np.float32)),
    ]
    r = analyse(layers, layer="conv2")
    first, second = r.per_branch
    assert first["mean_colour"] > 0.8 and second["mean_colour"] < 0.2
    assert r.p_value < 1e-6
    mixed = analyse(
        [
            layers[0],
            ConvLayer("conv2", rng.standard_normal((64, 96, 3, 3)).astype(np.float32)),
            layers[2],
        ],
        layer="conv2",
    )
    assert mixed.p_value > 1e-3
    with pytest.raises(OptionError, match="plain chain"):
        analyse(
            [
                layers[0],
                ConvLayer("x", np.zeros((8, 50, 3, 3), np.float32)),
                ConvLayer("y", np.zeros((8, 4, 3, 3), np.float32)),
            ],
            layer="x",
        )

"""DINOv3: parity with a PyTorch reference of the official forward pass
(tests/fixtures/make_dinov3_fixture.py, itself checked there against transformers'
DINOv3ViTModel) in the hub .pth, a Hugging Face folder (also sharded) and a bare Hugging Face
safetensors; what each layout needs; errors for weights that are no DINO ViT; the fused RoPE
kernel against its definition; the attention command on DINOv3 weights."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from dinov3_fixture import (
    INPUTS,
    PATCH,
    STORAGE,
    VARIANTS,
    hugging_face_config,
    hugging_face_layout,
    pixels,
    tiny_state,
)
from test_vit import write_safetensors

from visiontk.vit import ViT, WeightsError, find_weights, read_weights
from visiontk.vit.checkpoints import normalise_state_dict
from visiontk.vit.dinov3 import rope_apply, rope_tables

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REAL_PTH = FIXTURES / "dinov3_tiny.pth"  # torch.save of tiny_state("v3") (make_dinov3_fixture.py)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "dinov3_expected.npz"))


def hugging_face_folder(folder: Path, variant: str, shards: int = 1) -> Path:
    """config.json + model.safetensors, or + model.safetensors.index.json and its shards."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hugging_face_config(variant)))
    state = hugging_face_layout(tiny_state(variant))
    if shards == 1:
        write_safetensors(folder / "model.safetensors", state)
        return folder
    keys, weight_map = sorted(state), {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        write_safetensors(folder / name, part)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def layouts(tmp: Path, variant: str) -> dict:
    files = {
        "hub names, safetensors": write_safetensors(
            tmp / f"{variant}.safetensors", tiny_state(variant)
        ),
        "Hugging Face folder": hugging_face_folder(tmp / f"hf_{variant}", variant),
    }
    if variant == "v3":
        files["torch .pth (hub)"] = REAL_PTH
        files["Hugging Face folder, 3 shards"] = hugging_face_folder(tmp / "sharded", variant, 3)
    if variant == "v3s":  # a released width: the head count follows from it
        bare = tmp / "bare" / "model.safetensors"
        bare.parent.mkdir()
        files["bare Hugging Face safetensors"] = write_safetensors(
            bare, hugging_face_layout(tiny_state(variant))
        )
    return files


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_matches_the_official_reference_in_every_layout(tmp_path, expected, variant):
    dim, heads, _, swiglu = VARIANTS[variant]
    for label, path in layouts(tmp_path, variant).items():
        model = ViT.from_weights(path, device="cpu")
        c = model.config
        assert (c.patch, c.dim, c.heads, c.registers, c.swiglu, c.rope, c.eps) == (
            (PATCH, dim, heads, STORAGE, swiglu, True, 1e-5)
        ), label
        assert c.family == "dinov3"
        for h, w in INPUTS:
            tag, x = f"{variant}_{h}x{w}", pixels(h, w)
            attn, keys, feats = model.last_block(x, features=True)
            for got, key in ((attn, "attn"), (keys, "keys"), (feats, "features")):
                np.testing.assert_allclose(
                    got,
                    expected[f"{key}_{tag}"],
                    atol=1e-4,
                    rtol=1e-4,
                    err_msg=f"{label} {key} {tag}",
                )
            short_attn, short_keys = model.last_block(x)  # the last block's CLS row only
            np.testing.assert_allclose(short_attn, attn, atol=1e-5)
            np.testing.assert_allclose(short_keys, keys, atol=1e-5, rtol=1e-5)
            maps = model.last_attention(x)  # storage tokens are not patches
            assert maps.shape == (heads, h // PATCH, w // PATCH)
            np.testing.assert_allclose(
                maps.reshape(heads, -1), short_attn[:, 1 + STORAGE :], rtol=1e-6
            )


def test_every_part_of_dinov3_changes_the_maps(expected):
    """The fixture would not catch a reader that skipped a DINOv3 step if the step changed
    nothing: each one, left out, moves the attention by far more than the tolerance."""
    state = normalise_state_dict(tiny_state("v3"))
    x = pixels(48, 80)
    want = expected["attn_v3_48x80"]

    def off(change) -> float:
        model = ViT({k: v.copy() for k, v in state.items()})
        change(model)
        return float(np.abs(model.last_block(x)[0] - want).max())

    assert off(lambda m: None) < 1e-4

    def no_rope(m):
        m.rope = lambda h, w: None

    def unmasked_k_bias(m):
        for i in range(2):
            m.w[f"blocks.{i}.attn.qkv.bias"] = tiny_state("v3")[f"blocks.{i}.attn.qkv.bias"]

    def dinov2_eps(m):
        object.__setattr__(m.config, "eps", 1e-6)

    def swapped_axes(m):  # x angles first
        sin, cos = rope_tables(m.w["rope_embed.periods"], 3, 5)
        q = sin.shape[1] // 4
        m.rope = lambda h, w: tuple(
            np.concatenate([t[:, q : 2 * q], t[:, :q]] * 2, axis=1) for t in (sin, cos)
        )

    for change, least in ((no_rope, 1e-3), (unmasked_k_bias, 1e-3), (swapped_axes, 1e-3)):
        assert off(change) > least, change.__name__
    assert off(dinov2_eps) > 1e-7  # eps moves the maps only a little on unit-scale tokens


def test_batches_equal_single_images():
    model = ViT(normalise_state_dict(tiny_state("v3swiglu")))
    batch = np.stack([pixels(48, 80, seed=s) for s in range(3)])
    together = model.last_block(batch, features=True)
    for i in range(3):
        alone = model.last_block(batch[i], features=True)
        for a, b in zip(alone, together, strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first", [0, 5])
def test_fused_rope_kernel_equals_its_definition(monkeypatch, first):
    from visiontk.vit import ops

    rng = np.random.default_rng(3)
    heads, hd, grid = 3, 32, (4, 6)
    n = first + grid[0] * grid[1]
    qkv = rng.standard_normal((2, n, 3 * heads * hd)).astype(np.float32)
    bias = rng.standard_normal(3 * heads * hd).astype(np.float32)
    rope = rope_tables(np.linspace(1, 50, hd // 4).astype(np.float32), *grid)
    fused = ops.split_heads(qkv, bias, heads, 0.125, np, rope=rope, first=first)
    monkeypatch.setenv("VISIONTK_KERNELS", "xp")
    defined = ops.split_heads(qkv, bias, heads, 0.125, np, rope=rope, first=first)
    for a, b in zip(fused, defined, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the definition: rotate-half pairing, positions by row-major patch index
    x = rng.standard_normal((5, hd)).astype(np.float32)
    sin, cos = rope[0][:5], rope[1][:5]
    half = hd // 2
    want = np.concatenate(
        [
            x[:, :half] * cos[:, :half] - x[:, half:] * sin[:, :half],
            x[:, half:] * cos[:, half:] + x[:, :half] * sin[:, half:],
        ],
        axis=1,
    )
    np.testing.assert_allclose(rope_apply(x, sin, cos, np), want, rtol=1e-6)


def test_rope_tables_follow_the_official_coordinates():
    periods = np.array([1.0, 10.0], np.float32)
    sin, cos = rope_tables(periods, 2, 4)  # 2 rows, 4 columns of patches
    assert sin.shape == cos.shape == (8, 8)
    # patch (row 1, column 0): y = (1.5/2)·2 − 1 = 0.5, x = (0.5/4)·2 − 1 = −0.75
    y, x = 0.5, -0.75
    angles = 2 * np.pi * np.array([y / 1, y / 10, x / 1, x / 10])
    np.testing.assert_allclose(sin[4], np.sin(np.tile(angles, 2)), atol=1e-6)
    np.testing.assert_allclose(cos[4], np.cos(np.tile(angles, 2)), atol=1e-6)


def test_what_each_layout_needs_and_says(tmp_path):
    # a bare HF file of a width no DINOv3 has: the head count is unknown, the error says how
    bare = write_safetensors(tmp_path / "odd.safetensors", hugging_face_layout(tiny_state("v3")))
    with pytest.raises(WeightsError, match=r"config\.json") as e:
        read_weights(bare)
    assert "128" in str(e.value) and "\n" not in str(e.value)
    # ... and a config.json beside it is read
    (tmp_path / "config.json").write_text(json.dumps(hugging_face_config("v3")))
    assert ViT(read_weights(bare)).config.heads == 2
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"config\.json"):
        read_weights(bare)
    # no bias_mask: the k third is zeroed as every released model masks it
    state = tiny_state("v3")
    for i in range(2):
        del state[f"blocks.{i}.attn.qkv.bias_mask"]
    np.testing.assert_array_equal(
        normalise_state_dict(state)["blocks.0.attn.qkv.bias"],
        normalise_state_dict(tiny_state("v3"))["blocks.0.attn.qkv.bias"],
    )


def test_weights_that_are_no_dino_vit_are_one_line_errors(tmp_path):
    convnext = {
        "downsample_layers.0.0.weight": np.zeros((96, 3, 4, 4), np.float32),
        "stages.0.0.dwconv.weight": np.zeros((96, 1, 7, 7), np.float32),
        "norm.weight": np.ones(768, np.float32),
    }
    never_set = tiny_state("v3")
    never_set["blocks.1.attn.qkv.bias_mask"] = np.full(3 * 128, np.nan, np.float32)
    bad_periods = tiny_state("v3")
    bad_periods["rope_embed.periods"] = bad_periods["rope_embed.periods"][:5]
    cases = [
        (convnext, "ConvNeXt"),
        ({"fc.weight": np.zeros((3, 3), np.float32)}, "not a DINO, DINOv2 or DINOv3 ViT"),
        (never_set, "bias_mask was never set"),
        (bad_periods, "rope_embed.periods"),
    ]
    for i, (state, words) in enumerate(cases):
        path = write_safetensors(tmp_path / f"case{i}.safetensors", state)
        with pytest.raises(WeightsError) as e:
            ViT.from_weights(path, device="cpu")
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    folder = tmp_path / "convnext"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov3_convnext"}))
    write_safetensors(folder / "model.safetensors", convnext)
    with pytest.raises(WeightsError, match="ConvNeXt"):
        read_weights(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"model\.safetensors"):
        read_weights(tmp_path / "empty")


def test_images_must_be_multiples_of_the_patch():
    model = ViT(normalise_state_dict(tiny_state("v3")))
    with pytest.raises(WeightsError, match="multiple of the patch size 16"):
        model.last_block(pixels(50, 64))


def test_dinov3_lookup_by_model_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VISIONTK_WEIGHTS", raising=False)
    with pytest.raises(WeightsError) as e:
        find_weights(None, "dinov3_vits16")
    assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in str(e.value)
    assert "ai.meta.com" in str(e.value) and "facebook/dinov3-vits16-pretrain-lvd1689m" in str(
        e.value
    )
    mine = tmp_path / "mine"
    (mine / "dinov3-vitb16-pretrain-lvd1689m").mkdir(parents=True)
    satellite = mine / "dinov3_vits16_pretrain_sat493m-eadcf0ff.pth"
    satellite.write_bytes(REAL_PTH.read_bytes())
    monkeypatch.setenv("VISIONTK_WEIGHTS", str(mine))
    assert find_weights(None, "dinov3_vits16") == satellite
    assert find_weights(None, "dinov3_vitb16") == mine / "dinov3-vitb16-pretrain-lvd1689m"


def test_attention_command_on_dinov3_weights(tmp_path, samples):
    from click.testing import CliRunner
    from visiontk_cli.main import main

    folder = hugging_face_folder(tmp_path / "hf", "v3")
    for label, weights in (("hub", REAL_PTH), ("hf", folder)):
        out = tmp_path / f"out_{label}"
        result = CliRunner().invoke(
            main,
            [
                "attention",
                os.fspath(samples / "coffee.png"),
                "--weights",
                os.fspath(weights),
                "--out",
                os.fspath(out),
                "--image-size",
                "96",
                "--method",
                "tokencut",
            ],
        )
        assert result.exit_code == 0, result.output
        names = sorted(p.name for p in out.iterdir())
        assert names == ["coffee.json", "coffee_heads.png", "coffee_mask.png", "coffee_overlay.png"]
        summary = json.loads((out / "coffee.json").read_text())
        assert summary["heads"] == 2 and summary["patch"] == 16 and summary["grid"] == [6, 9]


def test_satellite_weights_get_their_own_pixel_normalisation(tmp_path, samples):
    from visiontk.vit.attention import dino_attention, preprocess
    from visiontk.vit.checkpoints import SATELLITE_NORMALISATION

    web = ViT.from_weights(REAL_PTH, device="cpu")
    satellite_file = tmp_path / "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    satellite_file.write_bytes(REAL_PTH.read_bytes())
    satellite = ViT.from_weights(satellite_file, device="cpu")
    assert web.normalisation is None
    np.testing.assert_allclose(satellite.normalisation, SATELLITE_NORMALISATION, rtol=1e-6)
    image = samples / "coffee.png"
    got = dino_attention(image, vit=satellite, image_size=96).maps
    assert np.abs(got - dino_attention(image, vit=web, image_size=96).maps).max() > 1e-4
    from visiontk.io import load_rgb

    pixels, _ = preprocess(load_rgb(image), PATCH, 96, normalisation=satellite.normalisation)
    np.testing.assert_allclose(got, satellite.last_attention(pixels), rtol=1e-6)
    # a Hugging Face folder says it in preprocessor_config.json
    folder = hugging_face_folder(tmp_path / "hf", "v3")
    preprocessor = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    np.testing.assert_allclose(ViT.from_weights(folder).normalisation, [[0.5] * 3, [0.25] * 3])
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_std": [0, 1, 1]}))
    with pytest.raises(WeightsError, match="image_mean"):
        ViT.from_weights(folder)

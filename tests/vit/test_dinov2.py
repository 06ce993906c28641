"""DINOv2 and DINOv2 with registers: parity with a PyTorch reference of the official forward
pass (tests/fixtures/make_dinov2_fixture.py) in the hub and Hugging Face layouts."""

from pathlib import Path

import numpy as np
import pytest
from dinov2_fixture import HEADS, INPUTS, PATCH, VARIANTS, pixels, tiny_state
from test_vit import DINOV2_NAMES, hugging_face_layout, write_safetensors

from visiontk.vit import ViT, WeightsError, find_weights
from visiontk.vit.attention import dino_attention

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REAL_PTH = FIXTURES / "dinov2_tiny_reg4.pth"  # written by torch.save (make_dinov2_fixture.py)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "dinov2_expected.npz"))


def weights_files(tmp: Path, variant: str) -> dict:
    state = tiny_state(variant)
    files = {
        "hub names, safetensors": write_safetensors(tmp / f"{variant}.safetensors", state),
        "Hugging Face names": write_safetensors(
            tmp / f"hf_{variant}.safetensors", hugging_face_layout(state, DINOV2_NAMES)
        ),
    }
    if variant == "v2reg4":
        files["torch .pth (hub)"] = REAL_PTH
    return files


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_matches_the_official_reference_in_both_layouts(tmp_path, expected, variant):
    registers, swiglu = VARIANTS[variant]
    for label, path in weights_files(tmp_path, variant).items():
        model = ViT.from_weights(path, device="cpu")
        c = model.config
        assert (c.patch, c.heads, c.registers, c.swiglu, c.layer_scale) == (
            PATCH,
            HEADS,
            registers,
            swiglu,
            True,
        ), label
        for h, w in INPUTS:
            attn, keys = model.last_block(pixels(h, w))
            tag = f"{variant}_{h}x{w}"
            np.testing.assert_allclose(
                attn, expected[f"attn_{tag}"], atol=1e-4, err_msg=f"{label} {tag}"
            )
            np.testing.assert_allclose(
                keys, expected[f"keys_{tag}"], atol=1e-4, rtol=1e-4, err_msg=f"{label} {tag}"
            )
            _, _, feats = model.last_block(pixels(h, w), features=True)
            np.testing.assert_allclose(
                feats,
                expected[f"features_{tag}"],
                atol=1e-4,
                rtol=1e-4,
                err_msg=f"{label} {tag} features",
            )
            maps = model.last_attention(pixels(h, w))
            assert maps.shape == (HEADS, h // PATCH, w // PATCH)  # registers are not patches
            np.testing.assert_allclose(maps.reshape(HEADS, -1), attn[:, 1 + registers :], rtol=1e-6)


def test_registers_change_the_maps_but_not_their_shape(expected):
    plain, reg = expected["attn_v2_98x84"], expected["attn_v2reg4_98x84"]
    assert reg.shape[1] == plain.shape[1] + 4
    # the registers take part in the softmax: the patch columns no longer sum to 1 - CLS
    assert np.all(reg[:, 5:].sum(axis=1) < 1 - reg[:, 0] - 1e-6)


def test_broken_dinov2_weights_are_one_line_errors(tmp_path):
    state = tiny_state("v2reg4")
    state["register_tokens"] = state["register_tokens"][:, :, :100]
    bad = write_safetensors(tmp_path / "bad.safetensors", state)
    with pytest.raises(WeightsError, match="register_tokens has shape"):
        ViT.from_weights(bad, device="cpu")
    state = tiny_state("v2")
    del state["blocks.1.ls2.gamma"]
    with pytest.raises(WeightsError, match=r"blocks\.1\.ls2\.gamma is missing"):
        ViT.from_weights(write_safetensors(tmp_path / "no_ls.safetensors", state), device="cpu")


def test_dinov2_models_are_looked_up_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTK_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))
    with pytest.raises(
        WeightsError,
        match=r"dinov2_vits14_reg4_pretrain.pth \(from "
        r"https://dl.fbaipublicfiles.com/dinov2/"
        r"dinov2_vits14/dinov2_vits14_reg4_pretrain.pth\)",
    ):
        find_weights(None, "dinov2_vits14_reg")
    (tmp_path / "dinov2_vitb14_pretrain.pth").write_bytes(b"")
    assert find_weights(None, "dinov2_vitb14") == tmp_path / "dinov2_vitb14_pretrain.pth"


def test_attention_maps_tokencut_and_features_with_registers(samples, tmp_path):
    from visiontk.vit.outputs import write_attention

    model = ViT.from_weights(REAL_PTH, device="cpu")
    result = dino_attention(samples / "coffee.png", vit=model, image_size=112, features=True)
    assert result.maps.shape == (HEADS, 112 // PATCH, 168 // PATCH)
    assert result.tokencut.shape == result.maps.shape[1:]
    assert result.features.shape == (*result.maps.shape[1:], 128)
    summary = write_attention(result, tmp_path, "coffee", "attention")
    saved = np.load(tmp_path / "coffee_features.npy")
    np.testing.assert_array_equal(saved, result.features)
    assert summary["features"]["shape"] == [8, 12, 128]
    import cv2

    pca = cv2.imread(str(tmp_path / "coffee_pca.png"))
    assert pca.shape == (112, 2 * 168, 3) and pca[:, 168:].std() > 20


def test_attention_in_blocks_of_rows_equals_one_block(monkeypatch):
    from visiontk.vit import model as vit_model

    net = ViT.from_weights(REAL_PTH, device="cpu")
    x = pixels(98, 84)
    whole = net.last_block(x, features=True)
    monkeypatch.setattr(vit_model, "SCORE_BYTES", 1)
    monkeypatch.setattr(vit_model, "MIN_ATTENTION_ROWS", 7)  # 47 tokens: 7 blocks of rows
    parts = ViT.from_weights(REAL_PTH, device="cpu").last_block(x, features=True)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", [REAL_PTH, FIXTURES / "dino_tiny_p16.pth"])
def test_a_batch_equals_its_images_one_by_one(path):
    net = ViT.from_weights(path, device="cpu")
    p = net.config.patch
    batch = np.stack([pixels(6 * p, 4 * p, seed=s) for s in range(3)])
    attn, keys, feats = net.last_block(batch, features=True)
    maps = net.last_attention(batch)
    assert maps.shape == (3, net.config.heads, 6, 4)
    for j in range(3):
        one = net.last_block(batch[j], features=True)
        for got, want in zip((attn[j], keys[j], feats[j]), one, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(maps[j], net.last_attention(batch[j]), rtol=1e-4, atol=1e-6)


def test_dinov2_in_the_attention_stage_with_features(tmp_path, samples):
    from visiontk.pipeline import Pipeline

    images = tmp_path / "images"
    images.mkdir()
    (images / "coffee.png").write_bytes((samples / "coffee.png").read_bytes())
    p = Pipeline.from_spec(
        [
            {
                "name": "dino-attention",
                "weights": str(REAL_PTH),
                "image_size": 112,
                "device": "cpu",
                "features": True,
            }
        ]
    )
    assert p.run(images, tmp_path / "out", quiet=True).ok
    written = sorted(x.name for x in (tmp_path / "out" / "attention").iterdir())
    assert written == [
        f"coffee.png{x}"
        for x in (".json", "_features.npy", "_heads.png", "_mask.png", "_overlay.png", "_pca.png")
    ]
    assert np.load(tmp_path / "out" / "attention" / "coffee.png_features.npy").shape == (8, 12, 128)

"""What `visiontk attention` writes, and what it must never do: replace an input, delete a file
it did not write, leave half a set, or stop a batch for one image it cannot write; and the
errors and edge cases the fresh-eyes attack on DINOv3 and MaskCut found."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dinov3_fixture import hugging_face_config, hugging_face_layout, tiny_state
from test_vit import write_safetensors
from visiontk_cli.main import main

from visiontk.vit import ViT, WeightsError, read_weights
from visiontk.vit.attention import dino_attention
from visiontk.vit.outputs import write_attention

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V3 = FIXTURES / "dinov3_tiny.pth"


def attention(*args):
    return CliRunner().invoke(main, ["attention", *map(str, args), "--weights", str(V3)])


def test_outputs_never_replace_inputs_nor_delete_what_they_did_not_write(tmp_path, samples):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "coffee.png", folder / "cup.png")
    shutil.copy(samples / "astronaut.png", folder / "cup_object1.png")  # the user's photos
    shutil.copy(samples / "astronaut.png", folder / "cup_object7.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # the folder is the input and the output: its photos are inputs, never replaced
    res = attention(folder, "--out", folder, "--image-size", "96", "--method", "maskcut")
    assert res.exit_code == 1, res.output
    assert "cup_object1.png: an output of cup would replace this input image" in res.output
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before
    assert (folder / "cup_object7.json").is_file()  # the other photos were done


def test_a_rerun_removes_only_the_files_its_earlier_run_listed(tmp_path, samples):
    out = tmp_path / "out"
    common = ("--out", out, "--image-size", "128")
    assert attention(samples / "coffee.png", *common, "--method", "maskcut", "--objects", "3",
                     "--features").exit_code == 0  # fmt: skip
    first = json.loads((out / "coffee.json").read_text())
    written = {e["mask"] for e in first["objects"]} | {"coffee_features.npy", "coffee_pca.png"}
    assert all((out / n).is_file() for n in written)
    shutil.copy(samples / "coffee.png", out / "coffee_object9.png")  # not ours: stays
    assert attention(samples / "coffee.png", *common).exit_code == 0
    left = {p.name for p in out.iterdir()}
    assert left == {"coffee.json", "coffee_heads.png", "coffee_mask.png", "coffee_overlay.png",
                    "coffee_object9.png"}  # fmt: skip


def test_a_set_is_written_whole_or_not_at_all(tmp_path, samples):
    result = dino_attention(samples / "coffee.png", vit=ViT.from_weights(V3), image_size=96)
    out = tmp_path / "out"
    (out / "coffee.json").mkdir(parents=True)  # the last file cannot be renamed into place
    with pytest.raises(OSError):
        write_attention(result, out, "coffee", "attention")
    assert [p.name for p in out.iterdir()] == ["coffee.json"]  # no pictures, no temporaries


def test_a_name_too_long_to_write_fails_alone(tmp_path, samples):
    folder = tmp_path / "in"
    folder.mkdir()
    long = folder / ("L" * 240 + ".png")
    shutil.copy(samples / "coffee.png", long)
    shutil.copy(samples / "coffee.png", folder / "zz.png")
    res = attention(long, folder / "zz.png", "--out", tmp_path / "out", "--image-size", "96")
    assert res.exit_code == 1 and "cannot write the outputs" in res.output, res.output
    assert (tmp_path / "out" / "zz.json").is_file() and "Traceback" not in res.output


def test_json_maps_masks_back_to_the_input(tmp_path, samples):
    out = tmp_path / "out"
    assert attention(samples / "coffee.png", "--out", out, "--image-size", "96",
                     "--method", "maskcut").exit_code == 0  # fmt: skip
    summary = json.loads((out / "coffee.json").read_text())
    assert summary["source_size"] == [400, 600] and summary["scale"] == pytest.approx(96 / 400)
    h, w = summary["image_size"]
    assert (h, w) == (96, 144) and w <= round(600 * summary["scale"])


def test_blank_images_give_no_objects_every_time(tmp_path):
    blank = tmp_path / "red.png"
    import cv2

    cv2.imwrite(str(blank), np.full((128, 128, 3), (0, 0, 255), np.uint8))
    vit = ViT.from_weights(V3)
    for _ in range(3):
        r = dino_attention(blank, vit=vit, image_size=128, objects=3)
        assert r.objects == [] and not r.tokencut.any()


def test_weights_that_overflow_fail_each_image_in_one_line(tmp_path, samples):
    state = tiny_state("v3")
    state["blocks.1.attn.qkv.weight"] = state["blocks.1.attn.qkv.weight"] * np.float32(1e30)
    path = write_safetensors(tmp_path / "huge.safetensors", state)
    args = ["attention", str(samples / "coffee.png"), "--weights", str(path)]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "--image-size", "96"])
    assert res.exit_code == 1 and "overflows" in res.output and "Traceback" not in res.output


def test_more_layout_mistakes_are_one_line_errors(tmp_path):
    cases = []
    for shape in ((1, 4, 64), (2, 4, 128), (512,)):
        state = tiny_state("v3")
        state["storage_tokens"] = np.zeros(shape, np.float32)
        cases.append((state, "storage_tokens has shape"))
    state = tiny_state("v3")
    state["blocks.0.attn.qkv.bias_mask"] = state["blocks.0.attn.qkv.bias_mask"] * 2
    cases.append((state, "other than 0 and 1"))
    for i, (state, words) in enumerate(cases):
        with pytest.raises(WeightsError, match=words):
            ViT(read_weights(write_safetensors(tmp_path / f"c{i}.safetensors", state)))
    folder = tmp_path / "hf"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", hugging_face_layout(tiny_state("v3")))
    for theta in ("x", -100, 0, True):
        config = {**hugging_face_config("v3"), "rope_theta": theta}
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(WeightsError, match="rope_theta"):
            read_weights(folder)
    config = {**hugging_face_config("v3"), "num_attention_heads": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="num_attention_heads"):
        read_weights(folder)
    with pytest.raises(WeightsError, match="pass the folder that holds it"):
        read_weights(folder / "config.json")


def test_a_rerun_never_removes_an_input_even_if_an_earlier_json_lists_it(tmp_path, samples):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(samples / "coffee.png", folder / "cup.png")
    assert attention(folder / "cup.png", "--out", folder, "--image-size", "96",
                     "--method", "maskcut").exit_code == 0  # fmt: skip
    summary = json.loads((folder / "cup.json").read_text())
    summary["objects"].append({"mask": "cup_object2.png"})  # a hand-edited JSON
    (folder / "cup.json").write_text(json.dumps(summary))
    shutil.copy(samples / "astronaut.png", folder / "cup_object2.png")
    res = attention(folder / "cup.png", folder / "cup_object2.png", "--out", folder,
                    "--image-size", "96")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (folder / "cup_object2.png").is_file() and not (folder / "cup_object1.png").exists()


def test_a_folder_that_is_its_own_output_does_not_feed_its_outputs_back(tmp_path, samples):
    folder = tmp_path / "q"
    folder.mkdir()
    shutil.copy(samples / "coffee.png", folder / "cup.png")
    args = (folder, "--out", folder, "--image-size", "96", "--method", "maskcut")
    assert attention(*args).exit_code == 0
    first = sorted(p.name for p in folder.iterdir())
    res = attention(*args)
    assert res.exit_code == 0 and res.output.count(" heads, ") == 1, res.output
    assert sorted(p.name for p in folder.iterdir()) == first


def test_an_earlier_json_that_is_no_regular_file_is_not_read(tmp_path, samples):
    import os

    result = dino_attention(samples / "coffee.png", vit=ViT.from_weights(V3), image_size=96)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "coffee.json")  # reading it would wait for a writer forever
    from visiontk.vit.outputs import written_before

    assert written_before(out, "coffee") == set()
    (out / "coffee.json").unlink()
    (out / "coffee.json").symlink_to("/dev/zero")
    write_attention(result, out, "coffee", "attention")  # returns: /dev/zero is not read
    assert json.loads((out / "coffee.json").read_text())["method"] == "attention"


def test_a_long_strip_gives_a_picture_of_bounded_size(tmp_path):
    import cv2

    strip = tmp_path / "strip.png"
    cv2.imwrite(str(strip), np.random.default_rng(0).integers(0, 255, (32, 8000, 3), np.uint8))
    res = attention(strip, "--out", tmp_path / "o", "--image-size", "32")
    assert res.exit_code == 0, res.output
    heads = cv2.imread(str(tmp_path / "o" / "strip_heads.png"))
    assert heads.shape[0] * heads.shape[1] < 4000 * 4000


def test_signals_during_the_renames_land_after_them():
    import os
    import signal

    from visiontk._files import _signals_held

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda n, f: seen.append("handled"))
    try:
        with _signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append("renamed")
        assert seen == ["renamed", "handled"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_overflow_names_each_image_and_zero_attention_gives_empty_masks(tmp_path, samples):
    import warnings

    from visiontk.vit.attention import mass_masks

    state = tiny_state("v3")
    state = {
        k: v * np.float32(1e30) if k.endswith("weight") and k.startswith("blocks.") else v
        for k, v in state.items()
    }
    path = write_safetensors(tmp_path / "huge.safetensors", state)
    images = [samples / "coffee.png", samples / "astronaut.png"]
    args = ["attention", *map(str, images), "--weights", str(path), "--batch-size", "2"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "--image-size", "96"])
    assert res.exit_code == 1
    for image in images:
        assert f"{image}: " in res.output and "overflows" in res.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not mass_masks(np.zeros((2, 3, 4), np.float32)).any()

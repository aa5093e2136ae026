"""The weights that ship with aticnet: they are the ones measured (stored outputs on a fixed street scene),
their int8 forms agree with them, and a built wheel carries them.

The stored outputs were written from this module when the weights were shipped; a deliberate replacement of a
shipped model rewrites them (and says why in the commit):

    python -m tests.deploy.test_shipped
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import aticnet
from aticnet.cli import main
from aticnet.data.scenes import draw_scene
from tests.helpers import ROOT

STORED = Path(__file__).parent / "shipped_outputs.safetensors"
NAMES = ("aticnet-camvid", "icnet-camvid")
SIZE = (360, 480)  # CamVid's frames


def scene(seed: int = 3) -> np.ndarray:
    """A fixed street scene, H x W x 3 uint8 (drawn, so the repository holds no data set's pictures)."""
    return draw_scene(np.random.default_rng(seed), *SIZE)[0]


def outputs_of(name: str) -> torch.Tensor:
    """The shipped model's low-resolution logits on :func:`scene`: 1 x 11 x 90 x 120."""
    segmenter = aticnet.load(name, backend="torch", fast=False)
    x = segmenter.normalize(torch.from_numpy(scene()).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        return segmenter.model.forward_lowres(x).float()


def test_every_shipped_name_is_listed_with_its_figures():
    listed = {w.name: w for w in aticnet.list_weights()}
    assert set(NAMES) <= set(listed)
    for name in NAMES:
        w = listed[name]
        assert w.num_classes == 11 and w.classes[0] == "Sky" and w.input_size == SIZE
        assert 0 < w.metrics["camvid_heldout_0006R0_miou"] < 1 and w.commands["train"].startswith("aticnet train")
        assert w.file.stat().st_size < 25 * 2**20  # fp16, under the repository's limit
        assert load_file(w.file)["classifier.weight"].dtype == torch.float16
        card = (w.file.parent / "README.md").read_text()  # says how to load it by its own name
        assert f'aticnet.from_pretrained("{name}")' in card and f"--weights {name} " in card


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_give_their_stored_outputs(name):
    stored = load_file(STORED)[name]
    got = outputs_of(name)
    torch.testing.assert_close(got, stored, rtol=1e-4, atol=1e-4 * max(1.0, stored.abs().max().item()))


@pytest.mark.slow
@pytest.mark.parametrize("name, calibrate", [("icnet-camvid", "dataset"), ("aticnet-camvid", "folder")])
def test_int8_as_a_user_quantizes_it_agrees_with_fp32(name, calibrate, tmp_path):
    # Calibration as a user gives it: street scenes from a data set split, or a folder of pictures. A calibration
    # that feeds the quantizer other numbers than inference does (unnormalised images) moves the int8 labels.
    root = tmp_path / "scenes"
    aticnet.data.generate_synthetic(root, num_train=0, num_val=8, size=SIZE, seed=5)
    source = (["--dataset", "synthetic", "--data-root", str(root), "--split", "val"] if calibrate == "dataset"
              else ["--images-dir", str(root / "images" / "val")])
    out = tmp_path / f"{name}.int8.xml"
    assert main(["quantize", "--weights", name, *source, "--images", "8", "--out", str(out)]) == 0
    image = scene(seed=11)
    fp32 = aticnet.load(name, backend="torch").predict(image)
    int8 = aticnet.load(out).predict(image)
    agree = (fp32 == int8).float().mean().item()
    assert agree >= 0.97, f"{name}: int8 agrees with fp32 on {100 * agree:.2f}% of the pixels"


@pytest.mark.slow
def test_a_built_wheel_carries_the_weights(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], check=True)
    (wheel,) = wheels.glob("aticnet-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    probe = ("import aticnet, numpy as np; assert aticnet.__file__.startswith(%r), aticnet.__file__; "
             "m = aticnet.load('aticnet-camvid', backend='torch'); "
             "print(m.predict(np.zeros((36, 48, 3), np.uint8)).shape)" % str(site))
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "torch.Size([36, 48])"


def write_stored() -> None:
    save_file({name: outputs_of(name).contiguous() for name in NAMES}, STORED, metadata={"torch": torch.__version__})
    print(f"wrote {STORED}")


if __name__ == "__main__":
    write_stored()

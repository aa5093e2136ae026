"""Hub-style folders: save_pretrained / from_pretrained, config.json, the model card, push_to_hub's layout.

Nothing here reaches the network: huggingface_hub runs offline (HF_HUB_OFFLINE), and push_to_hub's two
HfApi calls are replaced by a stand-in that lays the uploaded folder out as the Hub's cache would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

hub_lib = pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed (pip install 'aticnet[hub]')")

import aticnet
from aticnet.cli import main
from aticnet.deploy import hub
from aticnet.inference.segmenter import default_backend
from aticnet.models import build_model
from aticnet.models.weights import save_weights
from aticnet.training.run_dir import read_metrics
from aticnet.utils.errors import UserError
from tests.helpers import TINY_TRAIN

pytestmark = [
    pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),  # conftest
]




@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(hub_lib.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_root) -> Path:
    """A tiny ICNet trained 4 steps with evaluations at steps 2 and 4 (the card must show step 4's)."""
    out = tmp_path_factory.mktemp("hubrun") / "run"
    argv = ["train", *TINY_TRAIN, "--data-root", str(synthetic_root), "--out", str(out), "--max-steps", "4",
            "--eval-every", "2", "--save-every", "0"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def folder(run_dir, tmp_path_factory) -> Path:
    return hub.save_pretrained(run_dir, tmp_path_factory.mktemp("hub") / "icnet-tiny")


def probe() -> torch.Tensor:
    return torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))


def test_round_trip_gives_identical_weights_and_logits(run_dir, folder):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    original = aticnet.load(run_dir, fast=False)
    loaded = aticnet.from_pretrained(folder, fast=False)
    own, back = original.model.state_dict(), loaded.model.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)
    assert torch.equal(loaded.logits(probe()), original.logits(probe()))
    fast = aticnet.from_pretrained(str(folder), backend="torch")  # BatchNorms folded, as aticnet.load does
    assert torch.equal(fast.logits(probe()), aticnet.load(run_dir, backend="torch").logits(probe()))
    assert aticnet.from_pretrained(folder).backend == aticnet.load(run_dir).backend == default_backend(
        torch.device("cpu"))  # the same default engine
    assert loaded.classes == original.classes and loaded.colors == original.colors
    # the folder is an ordinary aticnet weights folder too
    assert torch.equal(aticnet.load(folder, fast=False).logits(probe()), original.logits(probe()))
    assert oct(os.stat(folder / "model.safetensors").st_mode & 0o777) != oct(0o600)


def test_config_json(run_dir, folder):
    config = json.loads((folder / "config.json").read_text())
    sidecar = json.loads((run_dir / "model.json").read_text())  # what training wrote beside the weights
    assert config["library_name"] == "aticnet" and config["model_type"] == "icnet"
    assert config["model_config"] == sidecar["model_config"]
    assert config["num_classes"] == 19 == len(config["classes"]) == len(config["colors"])
    assert config["classes"] == sidecar["classes"] and config["colors"] == sidecar["colors"]
    assert config["mean"] == [0.485, 0.456, 0.406] and config["std"] == [0.229, 0.224, 0.225]
    assert config["dataset"] == "synthetic" and config["step"] == 4


def test_model_card(run_dir, folder):
    card = hub_lib.ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "aticnet" and data.pipeline_tag == "image-segmentation"
    assert "semantic-segmentation" in data.tags and "icnet" in data.tags
    assert data.datasets == ["synthetic"] and "mean_iou" in data.metrics
    last = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in last] == [2, 4]
    last = last[-1]
    assert data.eval_results[0].metric_type == "mean_iou"
    assert data.eval_results[0].metric_value == round(100 * last["miou"], 2)
    text = card.text
    # the class table: id, name, colour
    config = json.loads((folder / "config.json").read_text())
    for i, (name, (r, g, b)) in enumerate(zip(config["classes"], config["colors"])):
        assert f"| {i} | {name} | `#{r:02x}{g:02x}{b:02x}` | {r}, {g}, {b} |" in text
    # the last eval's per-class IoU, step 4 (not step 2)
    assert "at step 4" in text
    for name, iou in last["per_class_iou"].items():
        assert f"| {name} | {'n/a' if iou is None else f'{100 * iou:.1f}'} |" in text
    # size and recipe
    params = sum(p.numel() for p in aticnet.load(run_dir).model.parameters())
    assert f"| parameters | {params:,} (" in text
    for line in ("| max_steps | 4 |", "| crop_size | 64 |", "| optimizer | adamw |", "| batch_size | 2 |"):
        assert line in text
    assert "## Intended use and limits" in text and "not meant for real photographs" in text
    assert "Not measured" in text  # no latency was given


def test_push_to_hub_layout_loads_by_folder_and_by_repo_id(run_dir, tmp_path, monkeypatch):
    """push_to_hub saves into a temporary folder and uploads it: catch that folder, lay it out as the Hub's
    cache would after a download, and load it both as a folder and, offline, by its repo id."""
    uploaded = tmp_path / "uploaded"
    cache = tmp_path / "hf-cache"
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload_folder", repo_id))
        shutil.copytree(folder_path, uploaded)
        snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
        shutil.copytree(folder_path, snapshot)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
        return "https://example.invalid/commit"

    monkeypatch.setattr(hub_lib.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub_lib.HfApi, "upload_folder", upload_folder)
    hub.pretrained(run_dir).push_to_hub("someone/icnet-tiny")
    assert calls == [("create_repo", "someone/icnet-tiny"), ("upload_folder", "someone/icnet-tiny")]
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    want = aticnet.load(run_dir, backend="torch").logits(probe())
    assert torch.equal(aticnet.from_pretrained(uploaded, backend="torch").logits(probe()), want)
    by_id = aticnet.from_pretrained("someone/icnet-tiny", cache_dir=cache, backend="torch")
    assert torch.equal(by_id.logits(probe()), want) and by_id.source == "someone/icnet-tiny"
    with pytest.raises(UserError, match="someone/other"):
        aticnet.from_pretrained("someone/other", cache_dir=cache)


def test_from_a_module_without_a_run(tmp_path):
    torch.manual_seed(0)
    model = build_model("aticnet", num_classes=3, width=0.125).eval()
    meta = {"classes": ["road", "car", "sky"], "colors": [[128, 64, 128], [0, 0, 142], [70, 130, 180]]}
    folder = hub.save_pretrained(model, tmp_path / "m", meta=meta, latency={"ms": 12.5, "size": [64, 128], "runs": 3})
    seg = aticnet.from_pretrained(folder, fast=False)
    assert seg.classes == meta["classes"] and seg.name == "aticnet"
    assert torch.equal(seg.logits(probe()), aticnet.hub.pretrained(model).segmenter(fast=False).logits(probe()))
    text = (folder / "README.md").read_text()
    assert "No validation scores" in text and "not recorded" in text and "12.5 ms per image at 64x128" in text
    assert "atrous rates" in text
    assert 'aticnet.from_pretrained("PATH_OR_REPO_ID")' in text  # no name of its own: the reader fills it in
    named = hub.save_pretrained(model, tmp_path / "named", meta={**meta, "shipped": {"name": "mine-streets"}})
    assert 'aticnet.from_pretrained("mine-streets")   # shipped with aticnet' in (named / "README.md").read_text()


def test_bad_sources(tmp_path, folder):
    with pytest.raises(UserError, match="not a model folder"):
        aticnet.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(UserError, match="cannot load it"):
        aticnet.from_pretrained("someone/absent", cache_dir=tmp_path / "empty-cache")
    # a config.json for another class count than the weights: a clear error, not a silent half-load
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["model_config"]["num_classes"] = 7
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="do not fit"):
        aticnet.from_pretrained(broken)
    weights = tmp_path / "w" / "model.safetensors"
    save_weights(build_model("icnet", num_classes=3, width=0.125), weights, {"classes": ["a", "b", "c"]})
    assert aticnet.from_pretrained(weights.parent).classes == ["a", "b", "c"]  # a weights folder, no config.json


def test_export_format_pretrained(run_dir, tmp_path, capsys):
    out, report = tmp_path / "exported", tmp_path / "report.json"
    argv = ["export", "--format", "pretrained", "--weights", str(run_dir), "--out", str(out), "--size", "32x64",
            "--latency-runs", "2", "--license", "mit", "--json", str(report)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"to {out}/: README.md, config.json, model.safetensors" in printed
    data = json.loads(report.read_text())
    assert data["format"] == "pretrained" and data["latency"]["size"] == [32, 64] and data["latency"]["ms"] > 0
    card = hub_lib.ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and "ms per image at 32x64" in card.text
    assert torch.equal(aticnet.from_pretrained(out, backend="torch").logits(probe()),
                       aticnet.load(run_dir, backend="torch").logits(probe()))
    assert main(["export", "--format", "pretrained", "--weights", str(tmp_path / "none"), "--out", str(out)]) == 2

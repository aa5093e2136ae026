"""``aticnet export`` (ONNX, TorchScript) on a tiny random-weight AtICNet, and the exportable pooling."""

from __future__ import annotations

import argparse
import itertools
import json

import pytest
import torch
import torch.nn.functional as F

import aticnet
from aticnet import build_model
from aticnet.cli import export as export_cli
from aticnet.deploy import export
from aticnet.models import pyramid
from aticnet.models.weights import save_weights
from aticnet.utils.errors import UserError

SIZE = (64, 128)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("aticnet", num_classes=5, width=0.125)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(model, path, {"classes": list("abcde"), "colors": [[40 * i, 0, 255 - 40 * i] for i in range(5)],
                               "dataset": "synthetic"})
    return path


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="aticnet")
    sub = parser.add_subparsers(dest="command", required=True)
    export_cli.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)


def test_exportable_pooling_equals_adaptive_avg_pool(monkeypatch):
    """While exporting, pooling is two matrix products; they equal F.adaptive_avg_pool2d on any size."""
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.manual_seed(0)
    for h, w in itertools.product([1, 5, 6, 13, 32], [3, 9, 17, 64]):
        x = torch.randn(2, 4, h, w)
        for b in (1, 2, 3, 6):
            torch.testing.assert_close(pyramid.adaptive_avg_pool(x, b), F.adaptive_avg_pool2d(x, b), atol=1e-6, rtol=1e-5)


def onnx_io(path):
    import onnx

    model = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return model, [(i.name, dims(i)) for i in model.graph.input], [(o.name, dims(o)) for o in model.graph.output]


def test_onnx_static_export_is_checked_and_carries_metadata(weights, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    run_cli(["export", "--weights", str(weights), "--out", str(out), "--size", "64x128", "--json", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert "max |export - torch|" in printed and "ok" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["exporter"] == "dynamo" and report["opset"] >= 18
    assert [c["shape"] for c in report["checks"]] == [[1, 3, 64, 128]] and report["checks"][0]["max_abs_diff"] < 1e-3
    model, inputs, outputs = onnx_io(out)
    assert inputs == [("image", [1, 3, 64, 128])] and outputs == [("logits", [1, 5, 64, 128])]
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["classes"] == list("abcde") and props["num_classes"] == 5 and len(props["mean"]) == 3
    assert props["model_config"]["name"] == "aticnet"
    seg = aticnet.load(out)  # a static graph: other sizes are resized in and out
    assert seg.predict(torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)).shape == (50, 70)


def test_onnx_dynamic_export_runs_at_other_sizes(weights, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from aticnet.models.weights import load_model

    out = tmp_path / "d.onnx"
    report = export.export(weights, "onnx", out, size=SIZE, dynamic=True, log=lambda *a: None)
    shapes = [c["shape"] for c in report["checks"]]
    assert shapes == [[1, 3, 64, 128], [2, 3, 49, 81]]  # the second size: batch 2, odd H and W
    assert all(c["max_abs_diff"] < 1e-3 for c in report["checks"])
    _, inputs, outputs = onnx_io(out)
    assert all(isinstance(d, str) for i in (0, 2, 3) for d in [inputs[0][1][i]])  # N, H, W free
    model, _ = load_model(weights)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 80, 96)
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    with torch.no_grad():
        assert (got - model(x)).abs().max() < 1e-3


def test_legacy_exporter_for_old_opsets_and_failing_check(weights, tmp_path):
    pytest.importorskip("onnxruntime")
    report = export.export(weights, "onnx", tmp_path / "l.onnx", size=SIZE, dynamic=True, opset=17, log=lambda *a: None)
    assert report["exporter"] == "legacy" and report["opset"] == 17
    assert all(c["max_abs_diff"] < 1e-3 for c in report["checks"])
    with pytest.raises(UserError, match=r"l2\.onnx.*above the tolerance.*float64"):
        export.export(weights, "onnx", tmp_path / "l2.onnx", size=SIZE, opset=17, tolerance=1e-12, log=lambda *a: None)
    with pytest.raises(UserError, match="--exporter legacy"):
        export.export(weights, "onnx", tmp_path / "l3.onnx", size=SIZE, opset=17, exporter="dynamo", log=lambda *a: None)


def test_torchscript_export_reloads_and_matches(weights, tmp_path):
    out = tmp_path / "m.ts"
    report = export.export(weights, "torchscript", out, size=SIZE, dynamic=True, log=lambda *a: None)
    assert all(c["max_abs_diff"] < 1e-5 for c in report["checks"])
    seg_ts, seg = aticnet.load(out), aticnet.load(weights)
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    assert torch.equal(seg_ts.predict(image), seg.predict(image))
    assert seg_ts.classes == list("abcde")


def test_bad_weights_and_sizes(tmp_path):
    with pytest.raises(UserError, match="missing.safetensors"):
        run_cli(["export", "--weights", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit):
        run_cli(["export", "--weights", "w", "--out", "x.onnx", "--size", "big"])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(UserError, match="bad.onnx"):
        aticnet.load(bad)

"""Config files: ``base:`` chains, overrides, and what the derived configs change."""

from __future__ import annotations

import pytest

from aticnet.training.config import load_config
from aticnet.utils.errors import UserError
from tests.helpers import ROOT


def test_base_is_resolved_and_overridden(tmp_path):
    (tmp_path / "parent.yaml").write_text("model: icnet\nlr: 0.1\nmax_steps: 7\nmodel_options:\n"
                                          "  dropout: 0.1\n  bn_momentum: 0.05\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../parent.yaml\nlr: 0.2\nmodel_options:\n  dropout: 0.3\n")
    config = load_config(tmp_path / "sub" / "child.yaml", max_steps=9)
    assert (config.model, config.lr, config.max_steps) == ("icnet", 0.2, 9)  # from the base, the file, the flag
    assert config.model_options == {"dropout": 0.3, "bn_momentum": 0.05}  # merged key by key


def test_base_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UserError, match="comes back to itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(UserError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "c.yaml")


def test_derived_configs_change_only_what_they_say():
    camvid, bf16 = load_config(ROOT / "configs" / "camvid.yaml"), load_config(ROOT / "configs" / "camvid_bf16.yaml")
    differ = {k for k, v in camvid.to_dict().items() if bf16.to_dict()[k] != v}
    assert differ == {"precision", "max_steps"} and (bf16.precision, bf16.max_steps) == ("bf16", 5000)
    first, last = load_config(ROOT / "configs" / "cityscapes.yaml"), load_config(ROOT / "configs" / "cityscapes_60k.yaml")
    differ = {k for k, v in first.to_dict().items() if last.to_dict()[k] != v}
    assert differ == {"batch_size", "max_steps", "eval_every", "save_every", "log_every", "init", "out"}


@pytest.mark.parametrize(("flags", "warned"), [
    ({"avx512_bf16": False, "amx_bf16": False}, True),   # AVX2 or avx512_vnni only: bf16 is emulated
    ({"avx512_bf16": True, "amx_bf16": False}, False),
    ({"avx512_bf16": False, "amx_bf16": True}, False),
    ({}, False),                                         # flags unknown (not x86 Linux): no guess
])
def test_bf16_on_a_cpu_without_native_bf16_warns(synthetic_root, tmp_path, monkeypatch, caplog, flags, warned):
    import aticnet.utils.cpu
    from aticnet.training.config import TrainConfig
    from aticnet.training.trainer import start_run

    monkeypatch.setattr(aticnet.utils.cpu, "cpu_info", lambda: {"model": "Test CPU", "cores": 2, **flags})
    config = TrainConfig(dataset="synthetic", data_root=str(synthetic_root), precision="bf16", device="cpu",
                         workers=0, out=str(tmp_path / "run"))
    with caplog.at_level("WARNING", logger="aticnet"):
        start_run(config)
    assert ("precision bf16 on a CPU without avx512_bf16 or AMX (Test CPU)" in caplog.text) == warned

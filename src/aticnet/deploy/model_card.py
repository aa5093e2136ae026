"""The model card (README.md of a Hub folder), built from a model and, when known, its run.

The YAML front matter is ``huggingface_hub.ModelCardData`` (library_name, tags, datasets,
metrics, pipeline_tag and, with an eval row, a ``model-index`` entry); the body lists the
architecture and size, the classes and colours, the training data and recipe (``config.yaml``),
the validation scores with per-class IoU (the last ``"kind": "eval"`` row of ``metrics.jsonl``),
the latency when measured, and the intended use and limits.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from ..training.run_dir import RunRecord

ARCHITECTURES = {
    "icnet": "ICNet (Zhao et al., ECCV 2018): image cascade network, ResNet-50 trunk, sum pyramid pooling",
    "aticnet": "AtICNet (Chen, Wang, Tong, EURASIP JWCN 2019): ICNet with a 2-block stage 5 and an atrous "
               "spatial pyramid (3x3 atrous conv per level before pooling)",
    "pspnet": "PSPNet-50 (Zhao et al., CVPR 2017): dilated ResNet-50, concatenating pyramid pooling",
    "icnet_s5x2": "ICNet with a 2-block stage 5 only (an ablation of AtICNet)",
    "icnet_atrous": "ICNet with the atrous pyramid only (an ablation of AtICNet)",
}
DATASETS = {
    "cityscapes": "Cityscapes (fine annotations, 19 evaluated classes)",
    "camvid": "CamVid (11 classes, SegNet layout)",
    "synthetic": "aticnet's synthetic street scenes (procedurally drawn, Cityscapes palette)",
    "folder": "a custom data set in aticnet's folder layout",
}
RECIPE_FIELDS = ("max_steps", "batch_size", "crop_size", "scale_range", "optimizer", "lr", "momentum", "weight_decay",
                 "poly_power", "warmup_steps", "aux_weights", "class_weights", "precision", "init", "seed")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _hex(color: Any) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color[:3]))


def card_metadata(model: nn.Module, meta: dict[str, Any], run: RunRecord | None, license: str | None) -> ModelCardData:
    """The YAML front matter."""
    cfg = model.config
    dataset = meta.get("dataset") or ((run.train_config or {}).get("dataset") if run else None)
    evals = []
    if run and run.last_eval and run.last_eval.get("miou") is not None:
        split = (run.train_config or {}).get("val_split", "val")
        common = {"task_type": "image-segmentation", "task_name": "Semantic segmentation",
                  "dataset_type": dataset or "unknown", "dataset_name": DATASETS.get(dataset, dataset or "unknown"),
                  "dataset_split": split}
        evals.append(EvalResult(metric_type="mean_iou", metric_name="mIoU (%)",
                                metric_value=round(100 * run.last_eval["miou"], 2), **common))
        if run.last_eval.get("pixel_accuracy") is not None:
            evals.append(EvalResult(metric_type="accuracy", metric_name="pixel accuracy (%)",
                                    metric_value=round(100 * run.last_eval["pixel_accuracy"], 2), **common))
    return ModelCardData(
        library_name="aticnet", pipeline_tag="image-segmentation", license=license,
        tags=sorted({"aticnet", "semantic-segmentation", "image-segmentation", "pytorch", "street-scenes",
                     "model_hub_mixin", cfg.name}),
        datasets=[dataset] if dataset else None, metrics=["mean_iou", "accuracy"],
        model_name=f"{cfg.name}-{dataset}" if dataset else cfg.name, eval_results=evals or None,
    )


def build_model_card(model: nn.Module, meta: dict[str, Any], *, run: RunRecord | None = None,
                     latency: dict[str, Any] | None = None, license: str | None = None,
                     repo_id: str | None = None, sections: dict[str, list[str]] | None = None) -> ModelCard:
    """The whole card: metadata plus the sections listed in the module docstring.

    ``sections`` maps a section title to its markdown lines: it replaces the generated section of that title
    (e.g. "Evaluation" for weights scored on a protocol of their own), or is added before the references."""
    data = card_metadata(model, meta, run, license)
    parts = [_intro(model, meta, run, repo_id), _architecture(model), _classes(meta), _training(meta, run),
             _evaluation(run), _speed(latency), _limits(meta, run)]
    sections = dict(sections or {})
    for i, part in enumerate(parts):
        title = part[0].removeprefix("## ") if part and part[0].startswith("## ") else None
        if title in sections:
            parts[i] = [part[0], "", *sections.pop(title), ""]
    parts += [[f"## {title}", "", *lines, ""] for title, lines in sections.items()]
    body = "\n".join(line for part in [*parts, _references()] for line in part)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _intro(model: nn.Module, meta: dict[str, Any], run: RunRecord | None, repo_id: str | None) -> list[str]:
    cfg = model.config
    dataset = meta.get("dataset") or ((run.train_config or {}).get("dataset") if run else None)
    shipped = meta.get("shipped", {}).get("name")  # a shipped model loads by its name
    where = repo_id or shipped or "PATH_OR_REPO_ID"
    return [
        f"# {cfg.name} (width {cfg.width:g}){f' on {dataset}' if dataset else ''}",
        "",
        (f"Real-time semantic segmentation of street scenes with the `aticnet` package: "
        f"{ARCHITECTURES.get(cfg.name, cfg.name)}. {cfg.num_classes} classes, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters."),
        "",
        "## How to use",
        "",
        "```python",
        "import aticnet",
        f'm = aticnet.from_pretrained("{where}")   # {"shipped with aticnet" if where == shipped else "a folder or a Hub repo id"}',
        'labels = m.predict("street.png")          # H x W class ids (uint8 tensor) at the image\'s size',
        'picture = m.overlay("street.png", labels)   # H x W x 3 uint8, class colours over the image',
        "```",
        "",
        (f"`aticnet predict --weights {where} images/ --out out --format overlay` and `aticnet app --weights {where}` "
        "(a local web page) read the same folder."),
        "",
    ]


def _architecture(model: nn.Module) -> list[str]:
    from ..models.analysis import count_flops, count_parameters

    cfg = model.config
    params = count_parameters(model)
    try:
        gflops = f"{count_flops(model, (1024, 2048)) / 1e9:.1f}"
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # a nicety: never stop the card
        gflops = "n/a"
    rows = [("architecture", cfg.name), ("width (channel multiplier)", f"{cfg.width:g}"),
            ("residual blocks, stages 2-4 / 5", f"{', '.join(map(str, cfg.stage_blocks))} / {cfg.stage5_blocks}"),
            ("pyramid", cfg.pyramid), ("pyramid bins", ", ".join(map(str, cfg.bins)))]
    if cfg.pyramid == "atrous":
        rows.append(("atrous rates (paired with bins)", ", ".join(map(str, cfg.rates))))
    rows += [("parameters", f"{params['total']:,} ({params['total'] / 1e6:.2f} M)"),
             ("GFLOPs at 1024x2048 (2 x MACs)", gflops),
             ("input normalisation (mean / std on [0, 1])", f"{list(cfg.mean)} / {list(cfg.std)}")]
    return ["## Architecture", "", "| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], "",
            "The full `ModelConfig` is `model_config` in `config.json`.", ""]


def _classes(meta: dict[str, Any]) -> list[str]:
    lines = ["## Classes", "", "| id | class | colour | RGB |", "| ---: | --- | --- | --- |"]
    for i, (name, color) in enumerate(zip(meta["classes"], meta["colors"])):
        lines.append(f"| {i} | {name} | `{_hex(color)}` | {', '.join(str(int(c)) for c in color[:3])} |")
    return [*lines, "", "Predictions are these ids; `config.json` holds the names (`classes`) and colours (`colors`).", ""]


def _training(meta: dict[str, Any], run: RunRecord | None) -> list[str]:
    config = (run.train_config if run else None) or {}
    dataset = meta.get("dataset") or config.get("dataset")
    lines = ["## Training data and recipe", ""]
    if dataset:
        split = config.get("train_split", "train")
        lines += [f"Trained on {DATASETS.get(dataset, dataset)}, split `{split}`.", ""]
    if not config:
        return [*lines, "The training recipe was not recorded with these weights (no run directory).", ""]
    lines += ["| setting | value |", "| --- | --- |"]
    for key in RECIPE_FIELDS:
        if key in config and (config[key] not in (None, "", "none") or key in ("max_steps", "batch_size")):
            value = config.get(key)
            lines.append(f"| {key} | {', '.join(map(str, value)) if isinstance(value, (list, tuple)) else value} |")
    if config.get("model_options"):
        lines.append(f"| model_options | {config['model_options']} |")
    step = (run.last_train or {}).get("step") if run else None
    if step is not None:
        lines.append(f"| steps run | {step} |")
    return [*lines, "", "From the run's `config.yaml` (`aticnet train --config config.yaml` repeats it).", ""]


def _evaluation(run: RunRecord | None) -> list[str]:
    row = run.last_eval if run else None
    if not row:
        return ["## Evaluation", "", "No validation scores were recorded for these weights.", ""]
    config = run.train_config or {}
    subset = f" (first {config['eval_max_images']} images)" if config.get("eval_max_images") else ""
    lines = ["## Evaluation", "",
             (f"On `{config.get('val_split', 'val')}`{subset} at step {row.get('step')}, full resolution, "
             f"single scale{', with flip' if config.get('eval_flip') else ''} (the run's last evaluation):"), "",
             "| metric | % |", "| --- | ---: |", f"| mIoU | {_pct(row.get('miou'))} |"]
    if "pixel_accuracy" in row:
        lines.append(f"| pixel accuracy | {_pct(row['pixel_accuracy'])} |")
    if "mean_accuracy" in row:
        lines.append(f"| mean class accuracy | {_pct(row['mean_accuracy'])} |")
    per_class = row.get("per_class_iou") or {}
    if per_class:
        lines += ["", "Per-class IoU (%; n/a: the class is absent from both ground truth and prediction):", "",
                  "| class | IoU |", "| --- | ---: |", *[f"| {k} | {_pct(v)} |" for k, v in per_class.items()]]
    return [*lines, ""]


def _speed(latency: dict[str, Any] | None) -> list[str]:
    if not latency:
        return ["## Speed", "", "Not measured with these weights; `aticnet benchmark` measures a model on your machine.", ""]
    h, w = latency.get("size", ["?", "?"])
    return ["## Speed", "",
            (f"{latency['ms']:.1f} ms per image at {h}x{w} (median of {latency.get('runs', '?')} runs, batch 1, "
            f"{latency.get('dtype', 'float32')}, {latency.get('device', 'cpu')}, {latency.get('threads', '?')} threads, "
            f"torch {latency.get('torch', '?')}), normalisation, final upsample and argmax included."), ""]


def _limits(meta: dict[str, Any], run: RunRecord | None) -> list[str]:
    dataset = meta.get("dataset") or ((run.train_config or {}).get("dataset") if run else None)
    lines = ["## Intended use and limits", "",
             ("- For research and prototyping of real-time street-scene segmentation: labelling each pixel of a "
             "forward-facing road image with the classes above."),
             ("- Not for safety-critical decisions (driving, assistance): no guarantee of accuracy, calibration or "
             "robustness is made, and none was tested."),
             ("- Expect lower accuracy on cameras, cities, weather, night scenes and resolutions unlike the training "
             "data; the model only knows the listed classes and labels everything else as one of them."),
             ("- Scores above are on the validation split named there, one run; compare models on data they never "
             "trained on.")]
    if dataset == "synthetic":
        lines.append("- Trained on procedurally drawn scenes only: a demonstration model, not meant for real photographs.")
    if dataset == "cityscapes":
        lines.append("- Cityscapes' terms of use (non-commercial) may apply to models trained on it.")
    return [*lines, ""]


def _references() -> list[str]:
    return ["## References", "",
            ("- Chen, Wang, Tong. AtICNet: semantic segmentation with atrous spatial pyramid pooling in image cascade "
            "network. EURASIP J. Wireless Comm. and Networking, 2019."),
            "- Zhao, Qi, Shen, Shi, Jia. ICNet for real-time semantic segmentation on high-resolution images. ECCV 2018.",
            "- Zhao, Shi, Qi, Wang, Jia. Pyramid scene parsing network. CVPR 2017.", ""]

"""Plant one realistic bug at a time in the source and check that the test suite turns red.

    python tools/plant_bugs.py              # every bug below, each against the tests that should catch it
    python tools/plant_bugs.py --full       # each against the whole suite (slow: minutes per surviving bug)
    python tools/plant_bugs.py --only loss  # the bugs whose name contains "loss"
    python tools/plant_bugs.py --only "cache|jitter"  # several words: the bugs whose name contains any

Each bug is one edit of one line (the text must occur exactly once). The file is restored after each
run, also on Ctrl-C. Prints one line per bug (caught / SURVIVED) and exits 1 when any survived.
Run it with nothing else on the machine's cores; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aticnet"

# name, file, text, replacement, tests expected to catch it
BUGS = [
    # models
    ("atrous level does not pool", "models/pyramid.py",
     "return pool_and_upsample(self.project(self.atrous(x)), self.bins, self.align_corners)",
     "return self.project(self.atrous(x))", "models/test_blocks.py models/test_golden.py"),
    ("sum pyramid keeps only the last level", "models/pyramid.py",
     "out = out + pool_and_upsample(x, b, self.align_corners)", "out = x + pool_and_upsample(x, b, self.align_corners)",
     "models/test_blocks.py models/test_golden.py"),
    ("atrous levels chained instead of parallel", "models/pyramid.py", "out = out + level(x)", "out = out + level(out)",
     "models/test_blocks.py models/test_golden.py"),
    ("rates paired with bins in reverse", "models/pyramid.py", "for b, r in zip(bins, rates))",
     "for b, r in zip(bins, reversed(rates)))", "models/test_blocks.py models/test_golden.py models/test_models.py"),
    ("adaptive pooling to the wrong grid", "models/pyramid.py", "return F.adaptive_avg_pool2d(x, bins)",
     "return F.adaptive_avg_pool2d(x, bins + 1)", "models/test_blocks.py models/test_golden.py"),
    ("PSPNet pyramid drops its input", "models/pyramid.py", "return torch.cat([x, *levels], dim=1)",
     "return torch.cat([x * 0, *levels], dim=1)", "models/test_blocks.py models/test_golden.py"),
    ("conv padding ignores dilation", "models/layers.py", "padding = dilation * (kernel_size - 1) // 2",
     "padding = (kernel_size - 1) // 2 * (1 + (dilation > 1))", "models/test_blocks.py models/test_golden.py"),
    ("bottleneck without its shortcut", "models/layers.py",
     "return self.relu(self.expand(self.conv(self.reduce(x))) + self.shortcut(x))",
     "return self.relu(self.expand(self.conv(self.reduce(x))))", "models/test_blocks.py models/test_golden.py"),
    ("stride in the 3x3 instead of the 1x1", "models/layers.py",
     "stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)",
     "stride_1x1, stride_3x3 = (1, stride) if stride_in_1x1 else (stride, 1)", "models/test_blocks.py models/test_golden.py"),
    ("halving rounds down", "models/layers.py", "size=((h + 1) // 2, (w + 1) // 2)", "size=(h // 2, w // 2)",
     "models/test_blocks.py"),
    ("classifier init 10x too wide", "models/layers.py", "nn.init.normal_(m.weight, std=0.01)",
     "nn.init.normal_(m.weight, std=0.1)", "models/test_blocks.py models/test_golden.py"),
    ("BN momentum not applied", "models/layers.py", "            m.momentum = bn_momentum\n", "",
     "models/test_blocks.py"),
    ("CFF low path without dilation", "models/cascade.py",
     "self.low = ConvBN(low_channels, out_channels, 3, dilation=2, relu=False)",
     "self.low = ConvBN(low_channels, out_channels, 3, dilation=1, relu=False)", "models/test_blocks.py models/test_golden.py"),
    ("CFF without its ReLU", "models/cascade.py", "return self.relu(self.low(low) + self.high(high)), aux",
     "return self.low(low) + self.high(high), aux", "models/test_blocks.py models/test_golden.py"),
    ("CFF aux head on the fused map's input before upsampling", "models/cascade.py",
     "aux = self.aux_classifier(low) if self.training else None",
     "aux = self.aux_classifier(low * 2) if self.training else None", "models/test_blocks.py models/test_golden.py"),
    ("trunk not dilated", "models/backbone.py", "dilations=(1, 1, 2, 4),", "dilations=(1, 1, 1, 2),",
     "models/test_blocks.py models/test_golden.py models/test_models.py"),
    ("AtICNet keeps three stage-5 blocks", "models/icnet.py",
     'return _cascade_config("aticnet", stage5_blocks=2, pyramid="atrous")',
     'return _cascade_config("aticnet", stage5_blocks=3, pyramid="atrous")', "models/test_blocks.py models/test_models.py"),
    ("high branch on the half image", "models/icnet.py", "high = self.high(image)  # N x C3 x H/8",
     "high = self.high(half(image, ac))", "models/test_blocks.py models/test_golden.py"),
    ("no 1/32 branch", "models/icnet.py", "x = half(x16, ac)  # H/32", "x = x16", "models/test_blocks.py models/test_golden.py"),
    ("final upsampling without align_corners", "models/icnet.py",
     'return resize(outputs["out"], image.shape[-2:], self.config.align_corners)  # N x K x H x W',
     'return resize(outputs["out"], image.shape[-2:], not self.config.align_corners)', "models/test_blocks.py models/test_golden.py"),
    ("PSPNet aux head gets dropout 0", "models/pspnet.py",
     "self.aux_head = FCNHead(self.trunk.channels[-2], c(AUX_CHANNELS), k, config.dropout)",
     "self.aux_head = FCNHead(self.trunk.channels[-2], c(AUX_CHANNELS), k, 0.0)", "models/test_golden.py"),
    # loss
    ("loss ignores the aux weights", "training/losses.py", "total = total + weight * loss", "total = total + loss",
     "training/test_losses.py"),
    ("labels shrunk with nearest-exact", "training/losses.py", 'size=tuple(size), mode="nearest")',
     'size=tuple(size), mode="nearest-exact")', "training/test_losses.py"),
    ("class weights dropped", "training/losses.py",
     'total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum")',
     'total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")', "training/test_losses.py"),
    ("OHEM keeps the easy pixels", "training/losses.py", "keep = valid & ((p_true < ohem.threshold) | (p_true <= kth))",
     "keep = valid & ((p_true > ohem.threshold) | (p_true <= kth))", "training/test_losses.py"),
    ("OHEM keeps fewer than min_kept", "training/losses.py", "kthvalue(min(ohem.min_kept, p_true.numel()))",
     "kthvalue(1)", "training/test_losses.py"),
    ("OHEM counts ignored pixels as hard", "training/losses.py",
     "p_true = torch.where(valid, logits.softmax(1).gather(1, safe[:, None])[:, 0], 2.0)",
     "p_true = torch.where(valid, logits.softmax(1).gather(1, safe[:, None])[:, 0], 0.0)", "training/test_losses.py"),
    ("OHEM mean over all pixels", "training/losses.py", "return (per_pixel * kept).sum() / (pixel_weight * kept).sum().clamp(",
     "return (per_pixel * kept).sum() / (pixel_weight).sum().clamp(", "training/test_losses.py"),
    ("upsampled logits ignore align_corners", "training/losses.py",
     'mode="bilinear", align_corners=self.align_corners)', 'mode="bilinear", align_corners=False)',
     "training/test_losses.py"),
    ("TF preset swapped", "training/losses.py", '"tensorflow": (0.16, 0.4),', '"tensorflow": (0.4, 0.16),', "training/test_losses.py"),
    # transforms
    ("random scale switched off", "data/transforms.py",
     "factor = low + (high - low) * float(torch.rand(()))", "factor = 1.0 + 0 * float(torch.rand(()))",
     "data/test_transforms.py"),
    ("random scale only up to the middle", "data/transforms.py",
     "factor = low + (high - low) * float(torch.rand(()))", "factor = low + (high - low) / 2 * float(torch.rand(()))",
     "data/test_transforms.py"),
    ("image flipped, label not", "data/transforms.py",
     "out_image, out_label = out_image.flip(-1), out_label.flip(-1)",
     "out_image, out_label = out_image.flip(-1), out_label", "data/test_transforms.py"),
    ("label crop one pixel off", "data/transforms.py",
     "out_label[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = label[iy0:iy1, ix0:ix1]",
     "out_label[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0 - 1] = label[iy0:iy1, ix0 + 1 : ix1]",
     "data/test_transforms.py"),
    ("labels rescaled bilinearly", "data/transforms.py",
     "resized = F.resize_image(mask.unsqueeze(0), params[\"size\"], interpolation=InterpolationMode.NEAREST_EXACT)",
     "resized = F.resize_image(mask.unsqueeze(0), params[\"size\"], interpolation=InterpolationMode.BILINEAR)",
     "data/test_transforms.py data/test_datasets.py"),
    ("label padding with class 0", "data/transforms.py", "out_label = torch.full((ch, cw), IGNORE, dtype=torch.int64, device=label.device)",
     "out_label = torch.full((ch, cw), 0, dtype=torch.int64, device=label.device)", "data/test_transforms.py data/test_datasets.py"),
    ("jitter applied to nothing", "data/transforms.py",
     "            image = self.jitter.transform(tv_tensors.Image(image), draws.jitter)\n", "            pass\n",
     "data/test_transforms.py data/test_datasets.py"),
    # metrics and evaluation
    ("missed_as counts a class's own pixels", "evaluation/metrics.py", "        missed.diagonal().zero_()\n", "", "evaluation/test_metrics.py"),
    ("missed_as shares of all pixels, not the class's", "evaluation/metrics.py",
     '{"class": names_out[w], "share": n / g}', '{"class": names_out[w], "share": n / total}',
     "evaluation/test_metrics.py"),
    ("distributed evaluation sums rank 0 only", "utils/distributed.py", "    dist.all_reduce(buffer, op=_OPS[op])",
     "    dist.broadcast(buffer, src=0)", "training/test_engine.py"),
    ("evaluation not reduced", "evaluation/evaluate.py", "    matrix.reduce()\n", "", "training/test_engine.py"),
    ("eval shards overlap", "data/loader.py", "indices = list(range(len(dataset)))[:max_images][rank::world_size]",
     "indices = list(range(len(dataset)))[:max_images][rank::1]", "training/test_engine.py"),
    ("IoU without subtracting TP", "evaluation/metrics.py", "union = gt + predicted - tp", "union = gt + predicted",
     "evaluation/test_metrics.py"),
    ("predicted void dropped", "evaluation/metrics.py", "pred = torch.where((pred >= 0) & (pred < k), pred, k)",
     "target, pred = target[pred < k], pred[pred < k]", "evaluation/test_metrics.py evaluation/test_cityscapes.py"),
    # schedule and optimiser
    ("poly power ignored", "training/recipe.py", "poly = PolynomialLR(optimizer, total_iters=decay_steps, power=config.poly_power)",
     "poly = PolynomialLR(optimizer, total_iters=decay_steps, power=1.0)", "training/test_recipe.py"),
    ("poly decays over the warm-up too", "training/recipe.py", "decay_steps = max(1, config.max_steps - config.warmup_steps)",
     "decay_steps = max(1, config.max_steps)", "training/test_recipe.py"),
    ("warm-up from the full rate", "training/recipe.py", "warmup = LinearLR(optimizer, start_factor=1e-3,",
     "warmup = LinearLR(optimizer, start_factor=1e-1,", "training/test_recipe.py"),
    ("BatchNorm weights decay", "training/recipe.py", "decay = [p for _, p in params if p.ndim > 1]",
     "decay = [p for _, p in params if p.ndim >= 1]", "training/test_recipe.py"),
    ("ENet weighting constant", "training/recipe.py", "return (1.0 / torch.log(1.02 + freq)).float()",
     "return (1.0 / torch.log(1.2 + freq)).float()", "training/test_recipe.py"),
    ("class frequencies count ignored pixels", "training/recipe.py",
     "counts += torch.bincount(label[label != 255].long().flatten(), minlength=num_classes)[:num_classes]",
     "counts += torch.bincount(label.long().flatten().clamp(max=num_classes - 1), minlength=num_classes)",
     "training/test_recipe.py"),
    # training state and resume
    ("resume forgets the RNG", "training/state.py", "        torch.set_rng_state(saved[rank][\"cpu\"])\n", "",
     "training/test_engine.py"),
    ("resume forgets the best mIoU", "training/state.py",
     'self.step, self.best_miou = int(state["step"]), float(state["best_miou"])',
     'self.step, self.best_miou = int(state["step"]), -1.0', "training/test_engine.py"),
    ("resume forgets the schedule", "training/state.py", "        self.scheduler.load_state_dict(state[\"scheduler\"])\n",
     "", "training/test_engine.py training/test_train.py"),
    ("resume forgets the moving average", "training/state.py", "            self.ema.load_state_dict(state[\"ema\"])\n", "",
     "training/test_engine.py"),
    ("moving average updated before the step", "training/step.py",
     "        state.scaler.step(state.optimizer)\n", "        state.ema and state.ema.update(state.model)\n"
     "        state.scaler.step(state.optimizer)\n", "training/test_recipe.py"),
    ("validation ignores eval_scale", "training/trainer.py", "scales=(config.eval_scale,), ", "", "training/test_train.py"),
    ("best weights kept on a worse score", "training/trainer.py", 'if scores["miou"] is not None and scores["miou"] > state.best_miou:',
     'if scores["miou"] is not None and scores["miou"] != state.best_miou:', "training/test_engine.py"),
    ("a log row sums its losses", "training/step.py",
     '"loss": loss_total / steps_total if steps_total else math.nan,', '"loss": loss_total if steps_total else math.nan,',
     "training/test_engine.py"),
    ("data order restarts on resume", "training/trainer.py", "stream = training_batches(run, mcfg, state.step)",
     "stream = training_batches(run, mcfg, 0)", "training/test_engine.py training/test_train.py"),
    ("device batches restart on resume", "training/trainer.py",
     "world_size=run.dist.world_size, start_step=start_step)\n        batches: Any",
     "world_size=run.dist.world_size, start_step=0)\n        batches: Any", "training/test_cached_training.py"),
    # data, label mappings and drives
    ("CamVid void not ignored", "data/camvid.py", "VOID = 11", "VOID = 12", "data/test_datasets.py"),
    # the CamVid protocol (benchmarks/camvid.py, camvid_report.py)
    ("another recipe's claim shares the default's folder", "../../benchmarks/camvid.py",
     "name = protocol if recipe == RECIPE else", "name = protocol if True else", "scripts/test_camvid_protocol.py"),
    ("a smoke run sits in the real run's folder", "../../benchmarks/camvid.py",
     'return Path(args.out) / (name + ("_quick" if args.quick else ""))', "return Path(args.out) / name",
     "scripts/test_camvid_protocol.py"),
    ("a run of another config is reused", "../../benchmarks/camvid.py", "        if changed:  # e.g.",
     "        if False:  # e.g.", "scripts/test_camvid_protocol.py"),
    ("--seeds stops at the protocol's", "../../benchmarks/camvid.py",
     "for s in range(max(seeds.values(), default=0))", "for s in range(max(CLAIM.values()))",
     "scripts/test_camvid_protocol.py"),
    ("a kept summary is trained again", "../../benchmarks/camvid.py",
     "if not weights_needed and kept_result(run_dir).is_file()", "if weights_needed and kept_result(run_dir).is_file()",
     "scripts/test_camvid_protocol.py"),
    ("the loader's workers make another run", "../../benchmarks/camvid.py",
     'BOOKKEEPING = {"out", "resume", "keep_checkpoints", "workers"}', 'BOOKKEEPING = {"out", "resume", "keep_checkpoints"}',
     "scripts/test_camvid_protocol.py"),
    ("the side-by-side drawn without its runs", "../../benchmarks/camvid_report.py", "    if missing:\n",
     "    if False:\n", "scripts/test_camvid_protocol.py"),
    ("Cityscapes ids kept as they are", "data/cityscapes_labels.py", "            lut[lb.id] = lb.train_id",
     "            lut[lb.id] = min(lb.id, 254)", "data/test_datasets.py evaluation/test_cityscapes.py"),
    ("held-out drive stays in training", "data/base.py",
     "samples = [s for s in samples if drive_of(s[0]) not in set(exclude_drives)]",
     "samples = [s for s in samples if drive_of(s[0]) not in set(exclude_drives[1:])]", "training/test_recipe.py"),
    ("drive is the frame number", "data/base.py", 'return image.name.split("_", 1)[0]',
     'return image.name.rsplit("_", 1)[-1]', "training/test_recipe.py"),
    # analysis
    ("receptive field ignores dilation", "models/analysis.py", "rf += dilation * (kernel - 1) * jump",
     "rf += (kernel - 1) * jump", "models/test_models.py"),
    ("receptive field ignores strides", "models/analysis.py", "            jump *= stride\n", "", "models/test_models.py"),
    ("atrous formula off by one", "models/analysis.py", "return (rate - 1) * (kernel - 1) + kernel",
     "return rate * (kernel - 1) + kernel", "models/test_models.py"),
    ("curves say val where a drive was held out", "training/run_dir.py", 'if config.get("holdout_drive"):',
     'if config.get("val_split"):', "visualization/test_figures.py"),
    # deployment
    ("labels step: align_corners source positions as without", "inference/labels.py",
     "scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0", "scale = in_size / out_size if out_size > 1 else 0.0",
     "deploy/test_deploy.py"),
    ("labels step: a cell settled without its diagonal corner", "inference/labels.py",
     "settled = (low == below_row) & (low == low[:, :, right]) & (low == below_row[:, :, right])",
     "settled = (low == below_row) & (low == low[:, :, right])", "deploy/test_deploy.py"),
    ("labels step: interpolation weights swapped between axes", "inference/labels.py", "h0, w0 = 1 - h1, 1 - w1",
     "w0, h0 = 1 - h1, 1 - w1", "deploy/test_deploy.py"),
    ("infer-scale of a call ignored", "inference/segmenter.py", "scale = self.infer_scale if infer_scale is None else infer_scale",
     "scale = self.infer_scale", "deploy/test_deploy.py app/test_app.py"),
    ("a new OpenVINO Core for every model", "inference/backends.py", "@functools.cache\ndef openvino_core",
     "def openvino_core", "deploy/test_deploy.py"),
    ("onnxruntime spins on after each run", "inference/backends.py",
     'options.add_session_config_entry("session.force_spinning_stop", "1")', "pass", "inference/test_predict.py"),
    ("quantize calibrates on one image", "deploy/quantize.py",
     "images = [data[i][0] for i in _spread(len(data), count)]", "images = [data[i][0] for i in _spread(len(data), 1)]",
     "deploy/test_deploy.py"),
    ("quantize calibrates on images it never normalised", "deploy/quantize.py",
     "EvalTransform(mean=mean, std=std), drives=drives or None)",
     "EvalTransform(mean=(0, 0, 0), std=(1, 1, 1)), drives=drives or None)", "deploy/test_deploy.py deploy/test_shipped.py"),
    ("quantize calibrates a folder's pictures unnormalised", "deploy/quantize.py",
     "images = [(read_image(p).float() / 255 - m) / s for p in picked]",
     "images = [read_image(p).float() / 255 for p in picked]", "deploy/test_shipped.py"),
    # the GPU's input path, the live pipeline, batch prediction
    ("device augmentation never mirrors", "data/device_augment.py", "draws.top, draws.left, draws.flipped, crop,",
     "draws.top, draws.left, False, crop,", "data/test_transforms.py"),
    ("bytes normalised without the std", "data/transforms.py",
     "return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)",
     "return images.to(torch.float32).mul_(1.0 / 255).sub_(mean)", "data/test_transforms.py"),
    ("evaluation normalises bytes with mean and std swapped", "evaluation/evaluate.py",
     "return normalize_uint8(images, m, s)", "return normalize_uint8(images, s, m)", "data/test_transforms.py"),
    ("a stop on one process is not agreed on", "training/step.py", "torch.tensor([float(stop), float(next_empty)])",
     "torch.tensor([0.0, float(next_empty)])", "training/test_processes.py"),
    ("colour jitter dropped on the device", "data/device_augment.py", "    if draws.jitter is not None:",
     "    if False:", "data/test_transforms.py"),
    ("a draws row loses the jitter's order", "data/transforms.py",
     'order = [int(i) for i in self.jitter["fn_idx"]]', "order = [0, 1, 2, 3]", "data/test_transforms.py"),
    # weights run at the scale they were trained for
    ("load ignores the trained scale", "inference/segmenter.py", 'return float(meta.get("infer_scale") or 1.0)',
     "return 1.0", "inference/test_trained_scale.py"),
    ("evaluate ignores the trained scale", "evaluation/evaluate.py",
     "scales = (trained_scale(meta, infer_scale),) if scales is None else tuple(scales)",
     "scales = (1.0,) if scales is None else tuple(scales)", "inference/test_trained_scale.py"),
    ("a run's weights forget their scale", "training/trainer.py", '"infer_scale": config.eval_scale}',
     '"infer_scale": 1.0}', "inference/test_trained_scale.py"),
    # the window of an enlarged frame
    ("an enlarged window reads one row early", "data/resample.py",
     "lower = position.floor().long().clamp(max=in_size - 1)",
     "lower = (position.floor().long() - 1).clamp(min=0, max=in_size - 1)", "data/test_resample.py"),
    ("an enlarged window's weights swapped", "data/resample.py",
     "block.index_select(1, bottom).to(torch.float32), row_weight[:, None])",
     "block.index_select(1, bottom).to(torch.float32), 1 - row_weight[:, None])", "data/test_resample.py"),
    ("enlarged labels lose the half pixel", "data/resample.py",
     "+ 0.5) * scale\n    return position.floor()", ") * scale\n    return position.floor()",
     "data/test_resample.py data/test_datasets.py"),
    ("an enlarged crop mirrored the other way", "data/transforms.py",
     "return place_window(window, label_window, (iy0 - y0, ix0 - x0), draws.flipped, self.crop_size,",
     "return place_window(window, label_window, (iy0 - y0, ix0 - x0), not draws.flipped, self.crop_size,",
     "data/test_datasets.py data/test_transforms.py"),
    # decoded-frame caches
    ("cached frames read one byte off", "data/cache.py",
     "np.array(self.pixels()[offset : offset + 4 * area])", "np.array(self.pixels()[offset + 1 : offset + 1 + 4 * area])",
     "data/test_cache.py"),
    ("the cache key ignores modification times", "data/cache.py", 'stamp = f"{st.st_size} {st.st_mtime_ns}"',
     'stamp = f"{st.st_size}"', "data/test_cache.py"),
    ("a cache that does not fit is built", "data/cache.py", "    if need > available:", "    if need > 2**62:",
     "data/test_cache.py"),
    ("the dataset decodes beside its cache", "data/base.py", "        if self.decoded is not None:",
     "        if False:", "data/test_cache.py"),
    ("device batches drawn from the index, not the seed", "data/cache.py",
     "                    torch.default_generator.manual_seed(seed)", "                    torch.default_generator.manual_seed(index)",
     "data/test_cache.py"),
    ("the cache's decoders draw from the global RNG", "data/cache.py",
     "collate_fn=_as_is,\n                        generator=torch.Generator())", "collate_fn=_as_is)",
     "training/test_cached_training.py"),
    # the step that never waits for the device
    ("a non-finite loss updates the weights", "training/step.py",
     "state.optimizer.found_inf = (~finite).to(torch.float32)", "state.optimizer.found_inf = (finite & False).to(torch.float32)",
     "training/test_step.py training/test_reliability.py"),
    ("the moving average moves on a skipped step", "training/state.py",
     "torch._foreach_mul_(steps, finite.to(torch.float32) * (1 - self.decay))", "torch._foreach_mul_(steps, 1 - self.decay)",
     "training/test_step.py"),
    ("a non-finite loss never stops the run", "training/trainer.py",
     "            if settles(state.step, config) or verdict.stop or last:", "            if False:",
     "training/test_reliability.py"),
    ("images counted once per process", "training/trainer.py", "window.add(loss, finite, len(images), state.step)",
     "window.add(loss, finite, len(images) * run.dist.world_size, state.step)", "training/test_step.py"),
    ("overlay weighs the image by alpha", "inference/overlay.py", "mixed *= ALPHA_STEPS - weight", "mixed *= weight",
     "inference/test_overlay.py"),
    ("overlay paints the ignored pixels", "inference/overlay.py",
     "        np.copyto(out, image, where=(ids >= len(palette))[..., None])\n", "        pass\n",
     "inference/test_overlay.py"),
    ("colorize wraps ids past 255 onto classes", "inference/overlay.py",
     "np.where((labels >= 0) & (labels <= 255), labels, 255)", "(labels % 256)", "inference/test_overlay.py"),
    ("a live queue keeps the stale frame", "inference/pipeline.py", "                self.items.popleft()\n",
     "                self.items.pop()\n", "inference/test_pipeline.py"),
    ("batch prediction redoes finished outputs", "serving/batch.py",
     'todo = [row for row in rows if not Path(row["output"]).is_file()]', "todo = list(rows)",
     "serving/test_batch.py"),
    # serving: a server others can reach
    ("serve listens on every interface by default", "cli/serve.py", 'p.add_argument("--host", default="127.0.0.1",',
     'p.add_argument("--host", default="0.0.0.0",', "serving/test_example.py"),
    ("the repository routes pass through", "serving/front.py", 'if path.startswith("/v2/repository"):',
     'if path.startswith("/v2/repositories"):', "serving/test_front.py"),
    ("a declared body over the limit is read", "serving/front.py", "            if size > limit:\n",
     "            if size > 2 * limit:\n", "serving/test_front.py"),
    ("a streamed body is not counted", "serving/front.py", 'received += len(message.get("body", b""))',
     'received = len(message.get("body", b""))', "serving/test_front.py"),
    ("readiness ignores the deployments", "serving/front.py", "        return await self._running(self.names)\n",
     "        return True\n", "serving/test_front.py"),
    ("images per request not limited", "serving/requests.py", "    if count > max_images:\n",
     "    if count > max_images + 1:\n", "serving/test_requests.py"),
    ("pixels of a request's largest image only", "serving/requests.py",
     "    _check_pixels(sum(h * w for h, w in sizes), max_megapixels,",
     "    _check_pixels(max(h * w for h, w in sizes), max_megapixels,", "serving/test_requests.py"),
    ("UINT8 values wrap around", "serving/requests.py",
     'if values.dtype.kind not in "iu" or (values.size and (values.min() < 0 or values.max() > 255)):',
     'if values.dtype.kind not in "iu":', "serving/test_requests.py"),
    ("a BYTES length prefix past the end is read", "serving/requests.py", "        if offset + length > len(raw):",
     "        if length > 1 << 31:", "serving/test_requests.py"),
    ("JSON answers of any size", "serving/requests.py",
     "if not wants_binary(request) and plan.pixels > JSON_MAX_MEGAPIXELS * 1e6:",
     "if not wants_binary(request) and plan.pixels > 100 * JSON_MAX_MEGAPIXELS * 1e6:", "serving/test_requests.py"),
    ("unknown outputs accepted", "serving/requests.py", "        if out.name not in OUTPUT_NAMES:",
     "        if out.name not in OUTPUT_NAMES + (out.name,):", "serving/test_requests.py"),
    ("the pixel budget lets everyone in", "serving/replica.py",
     "await self.changed.wait_for(lambda: self.used + pixels <= self.capacity)",
     "await self.changed.wait_for(lambda: True)", "serving/test_front.py"),
    ("forward passes ignore the pixel bound", "serving/replica.py",
     "per_pass = max(1, min(max_batch, max_pixels // (height * width)))", "per_pass = max_batch",
     "serving/test_front.py"),
    ("a replica's death answered with its internals", "serving/server.py",
     '                raise ReplicaUnavailable(f"model {spec.name!r}: its replica stopped while serving this request "',
     '                raise ReplicaUnavailable(f"model {spec.name!r}: {e!r} "', "serving/test_front.py"),
    ("a batch hands out the first request's labels", "serving/replica.py",
     "answers.append((labels[start:start + len(images)], len(flat), len(requests)))",
     "answers.append((labels[:len(images)], len(flat), len(requests)))", "serving/test_server.py"),
    ("the no-authentication warning is never logged", "serving/server.py", "    if not is_loopback(host):",
     "    if False:", "serving/test_front.py"),
    ("a full queue answered as a replica's death", "serving/server.py", "            except BackPressureError:",
     "            except ZeroDivisionError:", "serving/test_front.py"),
    ("a replica's client error answered 500", "serving/server.py", "                if isinstance(e.cause, InvalidInput):",
     "                if isinstance(e.cause, KeyError):", "serving/test_front.py serving/test_guard.py"),
    # bounded model configs, bounded stream statistics
    ("model configs allow any class count", "models/config.py",
     '(("num_classes", self.num_classes, 1, MAX_CLASSES),', '(("num_classes", self.num_classes, 1, 10**9),',
     "models/test_config_bounds.py"),
    ("weights loaded without the meta-device check", "models/weights.py",
     "        check_fit(model_from_config(config), tensors, source)\n", "        pass\n",
     "models/test_config_bounds.py"),
    ("stream percentiles off by two bins", "inference/pipeline.py",
     "middle = self.LOW * (1 + self.STEP) ** (index + 0.5)", "middle = self.LOW * (1 + self.STEP) ** (index + 2.5)",
     "inference/test_stream_stats.py"),
    # the manual: `aticnet weights` and the tables the docs site generates (tools/mkdocs_hooks.py)
    ("aticnet weights shows mIoU changes as fractions", "cli/weights.py",
     '("miou_change", "val mIoU change", 100, "{:+.2f}")', '("miou_change", "val mIoU change", 1, "{:+.2f}")',
     "cli/test_weights.py"),
    ("aticnet weights shows mIoU as a fraction", "cli/weights.py",
     'return f"{100 * value:.2f}" if key.endswith("miou")', 'return f"{value:.2f}" if key.endswith("miou")',
     "cli/test_weights.py"),
    ("the CLI reference drops each command's last flag", "../../tools/mkdocs_hooks.py",
     "    for action in parser._actions:", "    for action in parser._actions[:-1]:", "docs/test_cli_reference.py"),
    ("the CLI reference drops the top-level options", "../../tools/mkdocs_hooks.py",
     'found: dict[str, argparse.ArgumentParser] = {"": top}', "found: dict[str, argparse.ArgumentParser] = {}",
     "docs/test_cli_reference.py"),
    ("TrainConfig's table shows the first default for every field", "../../tools/mkdocs_hooks.py",
     "{code(default_text(f))}", "{code(default_text(dataclasses.fields(TrainConfig)[0]))}",
     "docs/test_cli_reference.py"),
]


def run_tests(tests: list[str], timeout: float) -> tuple[bool, float]:
    """(passed, seconds) of pytest on ``tests`` (stops at the first failure)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start
    return done.returncode == 0, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="run the whole suite for each bug")
    parser.add_argument("--only", default="", help="only the bugs whose name contains this ('a|b': either)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    survived = []
    bugs = [b for b in BUGS if any(word in b[0] for word in args.only.split("|"))]
    for name, rel, text, replacement, tests in bugs:
        path = SRC / rel
        original = path.read_text()
        if original.count(text) != 1:
            print(f"STALE  {name}: the text to replace occurs {original.count(text)} times in {rel}", flush=True)
            survived.append(name)
            continue
        path.write_text(original.replace(text, replacement))
        try:
            passed, seconds = run_tests(["tests"] if args.full else [f"tests/{t}" for t in tests.split()], args.timeout)
        finally:
            path.write_text(original)
        print(f"{'SURVIVED' if passed else 'caught  '} {name} ({rel}, {seconds:.0f} s)", flush=True)
        if passed:
            survived.append(name)
    print(f"{len(bugs) - len(survived)} of {len(bugs)} planted bugs caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training and evaluation of detectors on COCO-format data.

    result = train(spec, "data/synth", "runs/fcos_tiny", epochs=12)
    metrics = evaluate_run("runs/fcos_tiny", "data/synth")

A run folder holds ``spec.yaml`` (the detector), ``last.pt`` (written after every epoch),
``best.pt`` (weights only, of the epoch with the best validation AP) and ``history.jsonl`` (one line per epoch).
Training is seeded: the model's initialisation comes from `seed`, and each epoch's shuffling
and flips from (`seed`, epoch), so a run resumed from ``last.pt`` after a kill continues exactly
as the uninterrupted run would have. Mixed precision is used on CUDA.

Under ``torchrun`` the same function trains data-parallel (DDP; detection/distributed.py):
``--batch-size`` is then the global batch, split over the processes, so the steps and the data
of every epoch do not depend on the number of processes, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from archspec.io import canonical_json, fingerprint, save
from archspec.detection.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from archspec.detection.distributed import convert_sync_batchnorm, start_distributed
from archspec.files import RunFolder, atomic_write_text
from archspec.detection.losses import detection_loss
from archspec.detection.model import Detector, build_detector
from archspec.detection.postprocess import select_detections


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (after a linear warm-up; cosine decay to 1% of it)."""
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    """Linear warm-up steps, at most `max_warmup_fraction` of the run's steps."""
    max_warmup_fraction: float = 0.25
    """Cap on the warm-up as a share of all steps, so that short runs reach the peak rate
    (``--epochs 2`` of 16 steps warms up for 8 steps, not 100, and then decays)."""
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1
    """Evaluate (and maybe update best.pt) every this many epochs, and after the last."""
    max_steps_per_epoch: int | None = None
    """Cut epochs short (tests and smoke runs)."""
    sync_bn: bool = False
    """BatchNorm statistics over all processes' batches (SyncBatchNorm; CUDA only)."""
    stop_after_epoch: int | None = None
    """End the run after this epoch (of the `epochs` schedule, which is unchanged); ``--resume``
    continues it. For splitting a run into jobs, and for tests of resuming."""


@dataclass
class TrainResult:
    run: Path
    epochs: int
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    seconds: float = 0.0
    rank: int = 0
    """This process's rank under torchrun (only rank 0's history has the evaluations)."""


RUN_FILES = ("spec.yaml", "history.jsonl", "last.pt", "best.pt", "tensorboard")
"""Files a training run writes in its folder."""


def train(spec, data_dir: str | Path, out: str | Path, options: TrainOptions = TrainOptions(), *,
          resume: bool = False, progress: bool = True, init: str | Path | None = None) -> TrainResult:
    """Train `spec` on ``data_dir``'s train split, evaluating on its val split. `out` is a run
    folder (`archspec.files.RunFolder`): made by a training run or empty. Under torchrun, rank 0
    holds it (marker and lock) and alone writes in it; the other ranks only read. `init` is a
    checkpoint of the same spec to start from (e.g. a path extracted from a supernet); a resumed
    run takes its weights from its own last.pt instead."""
    out = Path(out)
    ddp = start_distributed(options.device)
    try:
        if not ddp.is_main:
            return _train(spec, data_dir, out, options, resume, False, ddp, init)
        with RunFolder(out, "train") as folder:
            folder.record(*RUN_FILES)
            return _train(spec, data_dir, out, options, resume, progress, ddp, init)
    finally:
        ddp.close()


def _train(spec, data_dir, out: Path, options: TrainOptions, resume: bool, progress: bool, ddp,
           init: str | Path | None = None) -> TrainResult:
    from archspec.detection.coco import collate, open_split

    device = ddp.place(_device(options.device))
    train_set = open_split(data_dir, "train", spec, train=True, seed=options.seed)  # bad data fails before building
    val_set = open_split(data_dir, "val", spec, train=False, seed=options.seed)
    _check_classes(spec, train_set)
    torch.manual_seed(options.seed)
    model = build_detector(spec).to(device)
    if options.sync_bn:
        model = convert_sync_batchnorm(model, device)
    steps_per_epoch = _steps(len(train_set), options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    total_steps = max(1, steps_per_epoch * options.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lr_schedule(warmup_steps(options, total_steps), total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    history, best, start = [], None, 0
    if init is not None and not (resume and (out / "last.pt").exists()):
        from archspec.detection.checkpoint import load_weights

        load_weights(model, init)
    if resume:
        start, history, best = _resume(out, spec, model, optimizer, scheduler, scaler, device, ddp.is_main)
        if start and ddp.is_main:
            _say(f"resumed {out / 'last.pt'}: {start} of {options.epochs} epochs done, continuing at epoch "
                 f"{start + 1}" if start < options.epochs else
                 f"resumed {out / 'last.pt'}: all {options.epochs} epochs are done already")
    else:
        _prepare_run(out, ddp.is_main)
        if ddp.is_main:
            save(spec, out / "spec.yaml")
    start = ddp.agree(start, "the epoch to resume from")
    forward = ddp.wrap(model, device)
    stop = min(options.epochs, options.stop_after_epoch or options.epochs)
    board = _TensorBoard.open(out / "tensorboard") if ddp.is_main else None
    began = time.perf_counter()
    for epoch in range(start, stop):
        train_set.set_epoch(epoch)
        loader = ddp.loader(train_set, options.batch_size, seed=options.seed + epoch, collate_fn=collate)
        losses = ddp.mean(_train_epoch(model, loader, optimizer, scheduler, scaler, device, options, epoch, progress,
                                       forward))
        record = {"epoch": epoch + 1, **losses, "lr": scheduler.get_last_lr()[0]}
        if not ddp.is_main:  # rank 0 evaluates and writes; the others wait for it
            ddp.barrier()
            continue
        if (epoch + 1) % options.eval_every == 0 or epoch + 1 == options.epochs:
            metrics = evaluate(model, val_set, device=device, batch_size=options.batch_size)
            record.update({key: metrics[key] for key in ("AP", "AP50", "AP75")})
            if best is None or (metrics["AP"], metrics["AP50"]) > (best["AP"], best["AP50"]):
                best = dict(record)
                save_checkpoint(_weights_state(spec, model, epoch + 1, history + [record], best), out / "best.pt")
        history.append(record)
        save_checkpoint(_state(spec, model, optimizer, scheduler, scaler, epoch + 1, history, best), out / "last.pt")
        _write_history(out, history)
        if board is not None:
            board.log(record)
        if progress:
            _print_record(record)
        ddp.barrier()
    if board is not None:
        board.close()
    return TrainResult(out, max(start, stop), history, best, time.perf_counter() - began, ddp.rank)


def _write_history(out: Path, history: list) -> None:
    """history.jsonl, rewritten atomically (an append cut by a kill would leave half a line)."""
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _prepare_run(out: Path, write: bool = True) -> None:
    """Refuse a used run folder (on every process); create it (`write`: rank 0 only)."""
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            raise CheckpointError(f"{out}: holds a run already ({name}); pass --resume to continue it or choose "
                                  "another --out")
    if write:
        out.mkdir(parents=True, exist_ok=True)
        _write_history(out, [])


def _resume(out: Path, spec, model, optimizer, scheduler, scaler, device, write: bool = True):
    path = out / "last.pt"
    if not path.exists():
        if (out / "best.pt").exists():
            raise CheckpointError(f"{path}: missing (best.pt exists); refusing to start over in a used run folder")
        _prepare_run(out, write)
        if write:
            save(spec, out / "spec.yaml")
        return 0, [], None
    state = load_checkpoint(path, map_location=device, resumable=True)
    if state.get("fingerprint") != fingerprint(spec):
        raise CheckpointError(f"{path}: was trained from another spec (fingerprint {state.get('fingerprint')}, "
                              f"this one is {fingerprint(spec)})")
    load_state(model, state["model"], path, "model")
    load_state(optimizer, state["optimizer"], path, "optimizer")
    load_state(scheduler, state["scheduler"], path, "scheduler")
    if state.get("scaler"):
        load_state(scaler, state["scaler"], path, "scaler")
    history = list(state["history"])
    # keep history.jsonl consistent with the checkpoint (an epoch may have been logged after it)
    if write:
        _write_history(out, history)
    return int(state["epoch"]), history, state.get("best")


def _state(spec, model, optimizer, scheduler, scaler, epoch: int, history: list, best) -> dict:
    return {"spec": canonical_json_with_name(spec), "fingerprint": fingerprint(spec), "epoch": epoch,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "history": history, "best": best}


def _weights_state(spec, model, epoch: int, history: list, best) -> dict:
    """What deployment needs (best.pt): no optimizer state, a third of the size."""
    return {"spec": canonical_json_with_name(spec), "fingerprint": fingerprint(spec), "epoch": epoch,
            "model": model.state_dict(), "history": history, "best": best}


def canonical_json_with_name(spec) -> str:
    """The spec as JSON, name included (the fingerprint leaves names out)."""
    data = json.loads(canonical_json(spec))
    data["name"] = spec.name
    return json.dumps(data, sort_keys=True)


def _train_epoch(model: Detector, loader, optimizer, scheduler, scaler, device, options: TrainOptions,
                 epoch: int, progress: bool, forward: torch.nn.Module | None = None) -> dict:
    """One epoch of steps; `forward` is the module to call (`model` in DDP under torchrun)."""
    model.train()
    totals: dict[str, float] = {}
    steps = _steps(len(loader.dataset), options)
    bar = _progress(progress, steps, f"epoch {epoch + 1}/{options.epochs}")
    for step, (images, targets) in enumerate(loader):
        if step >= steps:
            break
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            dense = (forward or model)(images)
        parts = detection_loss(model, _float(dense), targets)
        loss = parts.total
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch + 1} step {step + 1}: the loss is {float(loss)}; lower the "
                                     "learning rate")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for key, value in parts.as_dict().items():
            totals[key] = totals.get(key, 0.0) + value
        if bar:
            bar.update(1, f"loss {parts.as_dict()['loss']:.3f}")
    if bar:
        bar.close()
    count = max(1, min(steps, len(loader)))
    return {key: value / count for key, value in totals.items()}


def _float(dense):
    return type(dense)(*(None if t is None else t.float() for t in dense))


def evaluate(model: Detector, dataset, *, device="cpu", batch_size: int = 8) -> dict:
    """COCO box metrics of `model` on `dataset` (a `detection.coco.CocoDetection`)."""
    from archspec.detection.coco import coco_evaluate, make_loader

    device = _device(device) if isinstance(device, str) else device
    batches = make_loader(dataset, batch_size, shuffle=False, seed=0)
    return coco_evaluate(dataset.coco, coco_results(model, dataset, batches, device))


def coco_results(model, dataset, batches, device, *, before_batch=None) -> list[dict]:
    """COCO result rows of `model` (in eval mode, no gradients) over `batches`, (images, targets)
    pairs of `dataset`, after the spec's post-processing. `before_batch()` runs before each batch's
    forward pass (a supernet selects the batch's path there)."""
    from archspec.detection.coco import to_coco_results

    model.eval()
    post = model.spec.postprocess
    results = []
    with torch.no_grad():
        for images, targets in batches:
            if before_batch is not None:
                before_batch()
            boxes, scores = model.candidates(model(images.to(device)))
            boxes, scores, labels = select_detections(boxes.cpu(), scores.cpu(), score_threshold=post.score_threshold,
                                                      iou_threshold=post.iou_threshold,
                                                      max_detections=post.max_detections)
            for i, target in enumerate(targets):
                keep = labels[i] >= 0
                results += to_coco_results(dataset, target, boxes[i][keep], scores[i][keep], labels[i][keep])
    return results


def evaluate_run(run: str | Path, data_dir: str | Path, *, checkpoint: str = "best.pt", device: str = "cpu",
                 batch_size: int = 8) -> dict:
    """Evaluate a run folder's checkpoint on ``data_dir``'s val split."""
    from archspec.detection.checkpoint import spec_of
    from archspec.detection.coco import open_split

    path = Path(run) / checkpoint
    if checkpoint == "best.pt" and not path.exists() and (Path(run) / "last.pt").exists():
        path = Path(run) / "last.pt"
    state = load_checkpoint(path)
    spec = spec_of(state, str(path))
    model = build_detector(spec)
    load_state(model, state["model"], path, "model")
    model = model.to(_device(device))
    dataset = open_split(data_dir, "val", spec, train=False)
    metrics = evaluate(model, dataset, device=device, batch_size=batch_size)
    return {**metrics, "checkpoint": str(path), "epoch": state["epoch"]}


def _check_classes(spec, dataset) -> None:
    found = len(dataset.label_to_category_id)
    if found > spec.num_classes:
        raise ValueError(f"the data has {found} categories but the detector's num_classes is {spec.num_classes}")


def _steps(samples: int, options: TrainOptions) -> int:
    steps = max(1, math.ceil(samples / options.batch_size))
    return min(steps, options.max_steps_per_epoch) if options.max_steps_per_epoch else steps


def warmup_steps(options: TrainOptions, total_steps: int) -> int:
    """The warm-up actually used: `warmup_steps`, capped to `max_warmup_fraction` of the run."""
    return max(1, min(options.warmup_steps, math.ceil(options.max_warmup_fraction * total_steps)))


def lr_schedule(warmup: int, total: int):
    """step -> learning-rate factor (of the peak): a linear warm-up over `warmup` steps, then a
    cosine decay to 1% at step `total`. One schedule for `archspec train`, the supernet's training
    and the proxy training."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to this torch build")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device {name!r}: expected cpu or cuda")
    return torch.device(name)


class _TensorBoard:
    """Epoch records as TensorBoard scalars (``RUN/tensorboard``), when the optional
    ``tensorboard`` package is installed; history.jsonl stays the record of the run."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, folder: Path) -> "_TensorBoard | None":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package
            return None
        return cls(SummaryWriter(log_dir=str(folder)))

    def log(self, record: dict) -> None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group = "val" if key.startswith("AP") else "train"  # AP* are validation metrics
                self.writer.add_scalar(f"{group}/{key}", value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _say(text: str) -> None:
    """One line on stderr, never wrapped (it names paths, which logs and greps need whole)."""
    import sys

    print(text, file=sys.stderr, flush=True)


class _Bar:
    def __init__(self, total: int, title: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Column

        # 80 columns: a short bar, the loss text cut at its end rather than wrapped mid-word.
        self.progress = Progress(TextColumn(title), BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                                 TimeRemainingColumn(), transient=True, console=Console(stderr=True))
        self.task = self.progress.add_task("", total=total)
        self.progress.start()

    def update(self, steps: int, text: str) -> None:
        self.progress.update(self.task, advance=steps, description=text)

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int, title: str) -> _Bar | None:
    """A progress bar on a terminal only: in a pipe or a log the per-epoch lines say enough."""
    import sys

    return _Bar(total, title) if enabled and sys.stderr.isatty() else None


def _print_record(record: dict) -> None:
    from rich.console import Console

    parts = [f"epoch {record['epoch']}", f"loss {record['loss']:.4f}"]
    if "AP" in record:
        parts += [f"AP {record['AP']:.3f}", f"AP50 {record['AP50']:.3f}"]
    Console(stderr=True, highlight=False).print("  ".join(parts))

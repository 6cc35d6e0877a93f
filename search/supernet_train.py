"""Training a supernet as a detector with single-path uniform sampling (SPOS; DetNAS section 3.2).

    result = train_supernet(config, base, "data/synth", "runs/detnas_supernet", TrainOptions(epochs=4))

Each iteration draws one path uniformly from the search space (`space.random`, seeded by
(seed, epoch, step), so the path of an iteration never depends on what ran before it) and
trains it with the loss, optimizer, schedule and mixed precision of `archspec train`
(detection/train.py's pieces, called, not copied). A run folder holds:

* ``supernet.json``: the supernet's fingerprint, the search config it was built from (base
  inline) and the data folder; a run folder is refused for a config with another fingerprint;
* ``last.pt``: written atomically after every epoch and every `checkpoint_every` iterations, read
  with ``weights_only=True``; it records the epoch, the step inside it and the running loss
  sums, so ``--resume`` continues exactly as the uninterrupted run would;
* ``history.jsonl``: one line per epoch (mean losses, learning rate).

The paper's ImageNet pre-training of the supernet is out of scope: ``--init`` loads pre-trained
backbone weights (a detector checkpoint or state dict) into every slot they fit.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import archspec
from archspec.files import RunFolder, atomic_write_text
from archspec.detection.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from archspec.detection.coco import collate, make_loader, open_split
from archspec.detection.losses import detection_loss
from archspec.detection.train import (TrainOptions, _check_classes, _device, _float, _prepare_run, _progress,
                                      _steps, canonical_json_with_name, lr_schedule, warmup_steps)
from archspec.search.supernet import (SUPERNET_KIND, Supernet, SupernetError, build_supernet, check_checkpoint,
                                      load_initial_backbone)

RUN_FILE = "supernet.json"


@dataclass
class SupernetTrainResult:
    run: Path
    epochs: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    """Images trained on in this call (not counting a resumed run's earlier part)."""

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def sample_path(space, seed: int, epoch: int, step: int):
    """The path trained at (epoch, step): uniform over the space (DetNAS: each layer's choice;
    CR-NAS: an allowed allocation, then each block's dilation)."""
    return space.random(random.Random(f"spos:{seed}:{epoch}:{step}"))


def train_supernet(config, base, data_dir: str | Path, out: str | Path, options: TrainOptions = TrainOptions(), *,
                   resume: bool = False, init: str | Path | None = None, checkpoint_every: int | None = None,
                   progress: bool = True) -> SupernetTrainResult:
    """Train the supernet of `config` on ``data_dir``'s train split into the run folder `out`
    (`archspec.files.RunFolder`: made by a supernet training or empty, held by one process)."""
    with RunFolder(out, "supernet train") as folder:
        folder.record(RUN_FILE, "history.jsonl", "last.pt")
        return _train_supernet(config, base, data_dir, out, options, resume=resume, init=init,
                               checkpoint_every=checkpoint_every, progress=progress)


def _train_supernet(config, base, data_dir, out, options: TrainOptions, *, resume: bool, init, checkpoint_every,
                    progress: bool) -> SupernetTrainResult:
    out, data_dir = Path(out), Path(data_dir)
    device = _device(options.device)
    torch.manual_seed(options.seed)
    model = build_supernet(config, base)
    train_set = open_split(data_dir, "train", model.spec, train=True, seed=options.seed)
    _check_classes(model.spec, train_set)
    steps_per_epoch = _steps(len(train_set), options)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(warmup_steps(options, max(1, steps_per_epoch * options.epochs)),
                             max(1, steps_per_epoch * options.epochs)))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    position = {"epoch": 0, "step": 0, "totals": {}, "history": []}
    if resume and (out / "last.pt").exists():
        position = _resume(out, model, optimizer, scheduler, scaler, device)
    else:
        if resume and (out / RUN_FILE).exists():
            _check_run_file(out, model)
        _prepare_run(out)
        if init is not None:
            load_initial_backbone(model, init)
        _write_run_file(out, model, config, base, data_dir)
    began, images = time.perf_counter(), 0
    history = position["history"]
    for epoch in range(position["epoch"], options.epochs):
        first = position["step"] if epoch == position["epoch"] else 0
        totals = dict(position["totals"]) if epoch == position["epoch"] else {}
        train_set.set_epoch(epoch)
        batches = make_loader(train_set, options.batch_size, shuffle=True, seed=options.seed + epoch).batch_sampler
        bar = _progress(progress, steps_per_epoch - first, f"supernet epoch {epoch + 1}/{options.epochs}")
        model.train()
        for step, indices in enumerate(batches):
            if step >= steps_per_epoch:
                break
            if step < first:
                continue  # done before the checkpoint this run resumed from; no image is loaded
            images_batch, targets = collate([train_set[i] for i in indices])
            parts = _train_step(model, sample_path(model.space, options.seed, epoch, step), images_batch, targets,
                                optimizer, scheduler, scaler, device, options, f"epoch {epoch + 1} step {step + 1}")
            images += len(indices)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value
            if bar:
                bar.update(1, f"loss {parts['loss']:.3f}")
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps_per_epoch:
                _save(out, model, optimizer, scheduler, scaler, epoch, step + 1, totals, history)
        if bar:
            bar.close()
        count = max(1, min(steps_per_epoch, len(batches)))
        record = {"epoch": epoch + 1, **{k: v / count for k, v in totals.items()}, "lr": scheduler.get_last_lr()[0]}
        history.append(record)
        _save(out, model, optimizer, scheduler, scaler, epoch + 1, 0, {}, history)
        atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"epoch {record['epoch']}  loss {record.get('loss', 0.0):.4f}")
    return SupernetTrainResult(out, options.epochs, history, time.perf_counter() - began, images)


def _train_step(model: Supernet, genotype, images, targets, optimizer, scheduler, scaler, device,
                options: TrainOptions, where: str) -> dict:
    """One SPOS iteration: select the path, then the step `archspec train` takes."""
    model.select(genotype)
    images = images.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        dense = model(images)
    parts = detection_loss(model, _float(dense), targets)
    if not torch.isfinite(parts.total):
        raise FloatingPointError(f"{where}: the loss is {float(parts.total)}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(parts.total).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return parts.as_dict()


def _save(out: Path, model: Supernet, optimizer, scheduler, scaler, epoch: int, step: int, totals: dict,
          history: list) -> None:
    state = {"kind": SUPERNET_KIND, "supernet": model.fingerprint, "spec": canonical_json_with_name(model.spec),
             "fingerprint": archspec.fingerprint(model.spec), "epoch": epoch, "step": step, "totals": dict(totals),
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "history": list(history),
             "best": None}  # a supernet has no validation-best epoch; the field is part of every checkpoint
    save_checkpoint(state, out / "last.pt")


def _resume(out: Path, model: Supernet, optimizer, scheduler, scaler, device) -> dict:
    _check_run_file(out, model)
    path = out / "last.pt"
    state = load_checkpoint(path, map_location=device)
    check_checkpoint(state, model, str(path))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    history = list(state["history"])
    # keep history.jsonl consistent with the checkpoint (an epoch may have been logged after it)
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    return {"epoch": int(state["epoch"]), "step": int(state.get("step", 0)), "totals": dict(state.get("totals", {})),
            "history": history}


def _write_run_file(out: Path, model: Supernet, config, base, data_dir: Path) -> None:
    data = {"supernet": model.fingerprint, "data": str(data_dir.resolve()),
            "config": {**config.model_dump(mode="json", exclude={"evaluator"}), "base": archspec.to_data(base)}}
    atomic_write_text(out / RUN_FILE, json.dumps(data, indent=1, sort_keys=True))


def _check_run_file(out: Path, model: Supernet) -> dict:
    return read_run_file(out, model.fingerprint)


def read_run_file(run: str | Path, fingerprint: str | None = None) -> dict:
    """A run folder's ``supernet.json``; `SupernetError` when it is missing, unreadable or (with
    `fingerprint`) made from another config's base, space or detector."""
    path = Path(run) / RUN_FILE
    if not path.is_file():
        raise SupernetError(f"{run}: not a supernet run folder (no {RUN_FILE}; make one with "
                            "`archspec supernet train CFG --data DIR --out RUN`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stored = data["supernet"]
    except (ValueError, KeyError, TypeError):
        raise SupernetError(f"{path}: unreadable (not written by `archspec supernet train`?)") from None
    if fingerprint is not None and stored != fingerprint:
        raise SupernetError(f"{run}: this supernet run was trained from another config (supernet {stored}, "
                            f"{data.get('config', {}).get('name', '?')!r}); this config's base, space and detector "
                            f"give {fingerprint}")
    return data


def open_supernet(run: str | Path, config, base, *, device: str = "cpu", checkpoint: str = "last.pt") -> Supernet:
    """The trained supernet in a run folder, checked against `config` (refused with a clear
    message for a run of another config and for a checkpoint of another supernet)."""
    model = build_supernet(config, base)
    read_run_file(run, model.fingerprint)
    path = Path(run) / checkpoint
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        raise SupernetError(str(exc)) from None
    check_checkpoint(state, model, str(path))
    model.load_state_dict(state["model"])
    return model.to(_device(device))


def config_of_run(run: str | Path):
    """(search config, base spec) a supernet run was trained from, read from its ``supernet.json``."""
    from pydantic import TypeAdapter, ValidationError

    from archspec.errors import SpecError
    from archspec.search_config import SearchConfig

    data = read_run_file(run)
    source = str(Path(run) / RUN_FILE)
    try:
        stored = dict(data["config"])
        config = TypeAdapter(SearchConfig).validate_python(stored)
        base = archspec.validate(stored["base"], source=f"{source}:config.base")
    except (KeyError, TypeError, ValidationError, SpecError) as exc:
        raise SupernetError(f"{source}: the stored config is unreadable ({str(exc).splitlines()[0][:200]})") from None
    return config, base


def parse_genotype(text: str, supernet: Supernet):
    """A genotype from ``"0,1,2"`` / ``"[0, 1, 2]"``, or from a spec file (``best.yaml``: a
    detector or backbone spec of the space); `SupernetError` when it is not a path of the space."""
    from archspec.errors import SpecError

    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        spec = archspec.load(path)
        backbone = spec.backbone if spec.type == "detector" else spec
        try:
            genotype = supernet.space.encode(backbone)
        except SpecError as exc:
            raise SupernetError(f"{path}: not a path of the supernet's {supernet.config.space.type} space: "
                                f"{exc}") from None
        if archspec.fingerprint(supernet.path_spec(genotype)) != archspec.fingerprint(backbone):
            raise SupernetError(f"{path}: its backbone is not a path of the supernet's "
                                f"{supernet.config.space.type} space (no genotype decodes to it)")
        return genotype
    cleaned = text.strip().strip("[]()")
    try:
        genotype = tuple(int(part) for part in cleaned.replace(",", " ").split())
    except ValueError:
        raise SupernetError(f"genotype {text!r}: expected integers separated by commas, or a spec file") from None
    supernet.path_spec(genotype)  # raises with the rule it breaks
    return genotype


def extract(run: str | Path, genotype_text: str, out: str | Path, *, name: str | None = None) -> tuple[Path, Path]:
    """Write the stand-alone detector of a path (``spec.yaml``) and its weights (``weights.pt``,
    a detector checkpoint that `archspec train --init` and `archspec export --weights` take).
    Existing files are never overwritten."""
    config, base = config_of_run(run)
    supernet = open_supernet(run, config, base)
    genotype = parse_genotype(genotype_text, supernet)
    spec, state = supernet.subnet(genotype, name=name)
    out = Path(out)
    targets = (out / "spec.yaml", out / "weights.pt")
    for target in targets:
        if target.exists():
            raise SupernetError(f"{target}: exists already; choose another -o folder")
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"spec": canonical_json_with_name(spec), "fingerprint": archspec.fingerprint(spec), "epoch": 0,
                     "model": state, "history": [], "best": None, "supernet": supernet.fingerprint,
                     "genotype": list(genotype)}, targets[1])
    _write_spec(spec, targets[0])
    return targets


def _write_spec(spec, path: Path) -> None:
    """Atomically: a sibling temporary file renamed over `path`."""
    from archspec.io import dumps

    atomic_write_text(path, dumps(spec, format="yaml"))

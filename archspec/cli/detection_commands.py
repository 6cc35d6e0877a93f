"""`archspec data synth | train | eval | detect`: detectors from data to deployment."""

from __future__ import annotations

import json
from pathlib import Path

import click

from archspec.cli.options import guard, max_memory_option, resume_hint_on_interrupt, set_option
from archspec.io import load

DEVICE_CHOICES = click.Choice(["cpu", "cuda"])


@click.group()
def data() -> None:
    """Datasets in COCO format."""


@data.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@click.option("--preset", type=click.Choice(["easy", "hard"]), default="easy", show_default=True,
              help="easy: separate, wholly visible shapes (3 classes by default). hard: 8 classes with look-alike "
                   "pairs, 8 px to 80% of the image, occlusion (boxes of the visible pixels), distractors, "
                   "textured backgrounds, noise and colour jitter (docs/benchmarks.md).")
@click.option("--train", "num_train", type=click.IntRange(0, 100000), default=None,
              help="Training images [easy: 256, hard: 512].")
@click.option("--val", "num_val", type=click.IntRange(0, 100000), default=None,
              help="Validation images [easy: 64, hard: 128].")
@click.option("--size", type=click.IntRange(32, 2048), default=None, help="Image side in pixels [128].")
@click.option("--classes", type=click.IntRange(1, 8), default=None,
              help="Shape kinds (classes) [easy: 3 of at most 6, hard: 8].")
@click.option("--max-objects", type=click.IntRange(1, 50), default=None, help="[easy: 4, hard: 8]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--knob", "knobs", multiple=True, metavar="NAME=VALUE",
              help="A hard-preset setting (repeatable), e.g. --knob texture=0.3 --knob contrast=[0.2,0.8]; "
                   "the names are HardPreset's fields (docs/benchmarks.md).")
def synth(out: Path, preset: str, num_train: int | None, num_val: int | None, size: int | None,
          classes: int | None, max_objects: int | None, seed: int, knobs: tuple[str, ...]) -> None:
    """Write a synthetic COCO-format dataset of coloured shapes (train and val splits)."""
    from archspec.files import RunFolder

    given = {"num_train": num_train, "num_val": num_val, "image_size": size, "num_classes": classes,
             "max_objects": max_objects}
    given = {key: value for key, value in given.items() if value is not None}
    if preset == "easy":
        if knobs:
            raise click.UsageError("--knob sets the hard preset's settings; add --preset hard")
        write = _easy_writer(given, seed)
    else:
        write = _hard_writer(given, seed, knobs)
    with RunFolder(out, "data synth") as folder:  # never into a folder of the user's own files
        folder.record("annotations", "train", "val")
        summary = write(out)
    for split in ("train", "val"):
        info = summary[split]
        click.echo(f"{split}: {info['images']} images, {info['annotations']} boxes -> {info['annotation_file']}")
    click.echo(f"classes: {', '.join(summary['classes'])}")


def _easy_writer(given: dict, seed: int):
    from archspec.detection.synthetic import SHAPES, synthesize

    settings = {"num_train": 256, "num_val": 64, "image_size": 128, "num_classes": 3, "max_objects": 4, **given}
    if settings["num_classes"] > len(SHAPES):
        raise click.UsageError(f"--classes {settings['num_classes']}: the easy preset has {len(SHAPES)} shape kinds")
    return lambda out: synthesize(out, seed=seed, **settings)


def _hard_writer(given: dict, seed: int, knobs: tuple[str, ...]):
    import yaml
    from pydantic import ValidationError

    from archspec.detection.synthetic import HardPreset, synthesize_hard
    from archspec.parsing import load_yaml

    settings = {**given, "seed": seed}
    for knob in knobs:
        name, sep, raw = knob.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in HardPreset.model_fields:
            raise click.UsageError(f"--knob {knob!r}: expected NAME=VALUE with NAME one of "
                                   f"{', '.join(HardPreset.model_fields)}")
        try:
            settings[name] = load_yaml(raw)
        except yaml.YAMLError:
            raise click.UsageError(f"--knob {knob!r}: the value is not a YAML scalar or list") from None
    try:
        preset = HardPreset(**settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'preset'}: {error['msg']}"
                             for error in exc.errors())
        raise click.UsageError(f"hard preset: {problems}") from None
    return lambda out: synthesize_hard(out, preset)


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="COCO-format folder: annotations/instances_{train,val}.json or instances_{train,val}2017.json, "
                   "and the image folders.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--epochs", type=click.IntRange(1, 10000), default=12, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Peak AdamW learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=DEVICE_CHOICES, default="cpu", show_default=True,
              help="cuda trains with mixed precision.")
@click.option("--eval-every", type=click.IntRange(1, 10000), default=1, show_default=True)
@click.option("--max-steps-per-epoch", type=click.IntRange(1), help="Cut epochs short (smoke runs).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt (with any number of "
                                             "processes).")
@click.option("--init", "init", type=click.Path(dir_okay=False, path_type=Path),
              help="Start from this checkpoint of the same spec (e.g. `archspec supernet extract`'s weights.pt).")
@click.option("--stop-after-epoch", type=click.IntRange(1), default=None,
              help="End after this epoch, keeping the --epochs schedule; --resume continues.")
@click.option("--sync-bn", is_flag=True, help="Under torchrun: BatchNorm statistics over all processes (CUDA).")
@max_memory_option
@set_option
def train(spec_file: Path, data_dir: Path, out: Path, epochs: int, batch_size: int, lr: float, seed: int,
          device: str, eval_every: int, max_steps_per_epoch: int | None, resume: bool, init: Path | None,
          stop_after_epoch: int | None, sync_bn: bool, max_memory: str | None, overrides: tuple[str, ...]) -> None:
    """Train a detector spec; checkpoints (last.pt every epoch, best.pt by validation AP) go
    to --out. Kill it at any time and rerun with --resume to continue.

    Data-parallel on several processes or nodes: launch it with torchrun (gloo on CPU, NCCL
    with --device cuda), e.g. `torchrun --standalone --nproc-per-node 4 -m archspec.cli train ...`;
    --batch-size is then the global batch, split over the processes."""
    from archspec.detection.train import TrainOptions
    from archspec.detection.train import train as run_training

    spec = _detector(spec_file, overrides)
    guard(spec, batch=batch_size, purpose="training", max_memory=max_memory)
    options = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed, device=device,
                           eval_every=eval_every, max_steps_per_epoch=max_steps_per_epoch, sync_bn=sync_bn,
                           stop_after_epoch=stop_after_epoch)
    with resume_hint_on_interrupt("train"):
        # holds the run folder (marker, lock)
        result = run_training(spec, data_dir, out, options, resume=resume, init=init)
    if result.rank != 0:  # under torchrun, rank 0 reports
        return
    best = result.best or {}
    click.echo(f"trained {spec.name} for {result.epochs} epochs in {result.seconds:.0f} s; best epoch "
               f"{best.get('epoch')}: AP {best.get('AP', 0):.3f} AP50 {best.get('AP50', 0):.3f} -> {out}")


@click.command(name="eval")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="COCO-format folder; its val split is evaluated.")
@click.option("--checkpoint", default="best.pt", show_default=True, help="Checkpoint file in RUN.")
@click.option("--device", type=DEVICE_CHOICES, default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate(run: Path, data_dir: Path, checkpoint: str, device: str, as_json: bool) -> None:
    """COCO box AP of a run's checkpoint on the val split (pycocotools COCOeval)."""
    from archspec.detection.train import evaluate_run

    metrics = evaluate_run(run, data_dir, checkpoint=checkpoint, device=device)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(f"{metrics['checkpoint']} (epoch {metrics['epoch']}) on {data_dir}:")
    if metrics["message"]:
        click.echo(metrics["message"])
    click.echo(metrics["table"] or "\n".join(f"{name}: 0.000" for name in ("AP", "AP50", "AP75")))


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the drawn images and detections.json.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider (an error if unavailable).")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Drawing threshold: draw boxes scoring at least this. detections.json keeps every detection "
                   "down to the spec's evaluation threshold (postprocess.score_threshold), as COCO AP needs.")
def detect(model: Path, images: tuple[Path, ...], out: Path, provider: str, min_score: float) -> None:
    """Run an exported detector (.onnx from `archspec export`) on images in ONNX Runtime."""
    from archspec.detection.deploy import OnnxDetector, write_outputs
    from archspec.files import RunFolder

    detector = OnnxDetector(model, provider=provider)
    counts = {"images": 0, "detections": 0, "drawn": 0}

    def counted(found):
        for item in found:
            counts["images"] += 1
            counts["detections"] += len(item.labels)
            counts["drawn"] += sum(score >= min_score for score in item.scores)
            yield item

    with RunFolder(out, "detect") as folder:  # one image at a time, each output recorded before written
        path = write_outputs(counted(detector.iter_detections(images)), out, min_score, folder=folder)
    click.echo(f"{counts['images']} images: {counts['drawn']} detections scoring >= {min_score:g} drawn "
               f"in {out}; all {counts['detections']} (for COCO AP) in {path}")


def _detector(path: Path, overrides: tuple[str, ...] = ()):
    spec = load(path, overrides=overrides)
    if spec.type != "detector":
        raise click.UsageError(f"{path} is a {spec.type!r} spec; training needs a detector spec "
                               "(see examples/detectors/)")
    return spec

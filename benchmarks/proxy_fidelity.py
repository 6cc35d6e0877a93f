"""Which criterion should I search with? Rank correlation of search criteria against the AP of
stand-alone trained detectors on the hard synthetic benchmark (issue 19, part 5).

    .venv/bin/python benchmarks/proxy_fidelity.py --out runs/proxy_fidelity [--candidates 12] [--seeds 3]
    .venv/bin/python benchmarks/proxy_fidelity.py --out runs/pf_detnas --space detnas   # with supernet criteria
    .venv/bin/python benchmarks/proxy_fidelity.py --out /tmp/pf --mini          # plumbing check, seconds

What it does, every step kept in the run folder `--out` so that a rerun resumes (a finished
training is never trained again, a measured latency never measured again):

1. Data: the hard preset (`archspec data synth --preset hard`, detection/synthetic.py) at the
   benchmark's image size.
2. Candidates: `--candidates` distinct backbones of one search space (`--space`), kept when their
   FLOPs lie within [`--min-flops-fraction`, 1] of the budget; the budget is the FLOPs of the
   zoo's ResNet-18 at the input size, which is thus the baseline at the budget without any
   scaling. `maedet` (the default): MAE-DET's k1kxk1 space (Sun et al., MAE-DET, ICML 2022,
   section 3), seeded random walks of the space's own mutations from a small base. `detnas`:
   DetNAS's space (Chen et al., DetNAS, NeurIPS 2019, section 3), seeded uniform paths of a
   ShuffleNetV2 backbone of DetNAS's 1.3G layout.
3. Every backbone becomes a detector through one template (the tiny FCOS of
   examples/detectors/fcos_tiny.yaml: 64-wide FPN on C3..C5, two-conv GroupNorm towers, the
   preset's classes, the input size) and is trained stand-alone with one fixed schedule,
   `--seeds` times (ResNet-18 `--baseline-seeds` times); its score is the mean COCO AP over the
   seeds.
4. Criteria, each read as "higher predicts a better detector": the MAE-DET score (`maedet`), the
   same plus CR-NAS's receptive-field term (`maedet_rf`), FLOPs, params, predicted latency (kernels
   measured into RUN/latency.sqlite, ONNX Runtime on the CPU), `proxy_train` (SpineNet's proxy
   task, Du et al., CVPR 2020, section 4: the score of the search's `proxy_train` evaluator,
   search/proxy_train.py, cached in RUN/proxy_train as a search caches it), and for the detnas
   space the supernet criteria: the AP of each candidate's path in a SPOS supernet of the space
   (trained in RUN/supernet by the project's supernet trainer, or `--supernet RUN`), with its
   BatchNorm statistics recalibrated (`supernet_recal`, DetNAS's way) and with the shared ones
   (`supernet_shared`), as the `supernet` evaluator scores them.
5. Kendall tau-b and Spearman rho of every criterion against stand-alone mean AP (candidates and
   baseline together; the supernet criteria rank the candidates only, ResNet-18 being no path of
   the space), and the question a user asks: among the candidates whose *measured* end-to-end
   latency is within ResNet-18's, does the best one by each criterion beat ResNet-18 after the
   same training, beyond the seed noise (mean AP difference > 2 standard errors of the
   difference; a candidate trained once takes ResNet-18's seed spread as its own, `pooled`)?

Outputs in `--out`: table.md (also printed), results.csv (one row per backbone), correlations.csv,
scatter_<criterion>.png. `--stop-after N` ends the run after N trainings (exit code 3), a
deterministic interruption for resume tests.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archspec  # noqa: E402
from archspec.files import RunFolder, atomic_write_text, read_text  # noqa: E402

STOPPED = 3
"""Exit code of a run ended by --stop-after (resume it by running the same command again)."""
REFUSED = 2
"""Exit code of bad input (a one-line message says which)."""

SPACES = ("maedet", "detnas")
"""Search spaces the candidates come from (`--space`); detnas has a supernet (search/supernet.py)."""
SUPERNET_SPACES = ("detnas",)
"""Spaces with the supernet criteria (search/supernet.py shares weights by slot: MAE-DET's widths change)."""
BASELINE = "resnet18"
"""The baseline backbone's name (the zoo's ResNet-18)."""

CRITERIA = ("maedet", "maedet_rf", "flops", "params", "latency_pred", "proxy_train", "supernet_recal",
            "supernet_shared")
"""Criteria in table order; each is read as "higher predicts a better detector"."""

OUTPUT_FILES = ("data", "runs", "latency.sqlite", "latency.sqlite.lock", "candidates.json", "criteria.json", "table.md",
                "results.csv", "correlations.csv", "proxy_train", "supernet") + tuple(
    f"scatter_{name}.png" for name in CRITERIA)


@dataclass(frozen=True)
class Schedule:
    """One training recipe (the stand-alone one, or the proxy's)."""

    epochs: int
    """Passes over the training images."""
    input_size: int
    """Detector input side (images are resized to it)."""
    train_images: int
    """Stand-alone: the first N images of the preset's train split; proxy: the proxy_train
    evaluator's seeded subset of N of them."""
    val_images: int
    """Stand-alone: the first N images of its val split; proxy: the evaluator's seeded subset."""
    batch_size: int = 16
    learning_rate: float = 2e-3
    max_steps_per_epoch: int | None = None
    """Cut epochs short (the --mini plumbing run only; the proxy_train evaluator cuts nothing, so
    for the proxy it must not be below the steps of an epoch)."""


@dataclass(frozen=True)
class SupernetTraining:
    """The supernet's SPOS training (`archspec supernet train`) on the stand-alone training images
    at the stand-alone input size, and how its paths are scored (the `supernet` evaluator, on the
    stand-alone validation images)."""

    epochs: int = 24
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    """Seeds the initialisation and the path sampled at each iteration."""
    calibration_images: int = 256
    """Training images (a seeded subset) run through each path to recompute its BN statistics."""
    max_steps_per_epoch: int | None = None
    """Cut epochs short (the --mini plumbing run only)."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides the benchmark's numbers (stored in the run folder; a rerun with
    different settings is refused rather than mixing two benchmarks)."""

    candidates: int = 12
    seeds: int = 3
    """Stand-alone trainings per candidate."""
    baseline_seeds: int | None = None
    """Stand-alone trainings of ResNet-18 (None: `seeds`)."""
    image_size: int = 128
    """Side of the generated images (the hard preset's image_size)."""
    standalone: Schedule = Schedule(epochs=24, input_size=128, train_images=512, val_images=128)
    proxy: Schedule = Schedule(epochs=3, input_size=96, train_images=256, val_images=64)
    min_flops_fraction: float = 0.6
    """Candidates keep FLOPs within [this, 1] x the budget (ResNet-18's FLOPs)."""
    sample_seed: int = 0
    data_seed: int = 0
    latency_repeat: int = 40
    """Timed runs of each end-to-end latency measurement."""
    kernel_budget_ms: float = 150.0
    """Timing budget of each kernel measurement for the predicted latency."""
    preset_knobs: dict = field(default_factory=dict)
    """HardPreset settings beyond num_train, num_val, image_size, seed."""
    supernet: str | None = None
    """A supernet run folder of the space (`archspec supernet train`) to score the candidates' paths
    with; None: the benchmark trains one in RUN/supernet (detnas space)."""
    space: str = "maedet"
    """Where the candidates come from (`SPACES`)."""
    supernet_training: SupernetTraining = SupernetTraining()
    """The supernet's training and scoring (detnas space)."""

    @property
    def base_seeds(self) -> int:
        """ResNet-18's stand-alone trainings."""
        return self.seeds if self.baseline_seeds is None else self.baseline_seeds


RESIZING = ("candidates", "seeds", "baseline_seeds")
"""Settings that only say how much of one deterministic sequence to use (the candidate sampling is
sequential, trainings are seeded): a run may grow or shrink them and keep every training it has."""


def stored_settings(config: BenchConfig) -> str:
    """The run folder's config.json: every setting but the `RESIZING` ones. `space` and
    `supernet_training` came after the first runs; they are left out where they change nothing
    (the maedet space, which has no supernet), so a run folder of the earlier benchmark, whose
    config.json has neither, resumes."""
    fixed = {key: value for key, value in asdict(config).items() if key not in RESIZING}
    if config.space == "maedet":
        del fixed["space"], fixed["supernet_training"]
    return json.dumps(fixed, indent=1, sort_keys=True)


def mini_config(space: str = "maedet") -> BenchConfig:
    """Two candidates, one seed, a few steps on 64-pixel images: the CI plumbing run."""
    tiny = Schedule(epochs=1, input_size=64, train_images=4, val_images=2, batch_size=2, max_steps_per_epoch=1)
    return BenchConfig(candidates=2, seeds=1, image_size=64, standalone=tiny,
                       proxy=Schedule(epochs=1, input_size=64, train_images=2, val_images=2, batch_size=2,
                                      max_steps_per_epoch=1),
                       latency_repeat=3, kernel_budget_ms=2.0,
                       preset_knobs={"min_side_px": 6.0, "max_objects": 3}, space=space,
                       supernet_training=SupernetTraining(epochs=1, batch_size=2, calibration_images=2,
                                                          max_steps_per_epoch=2))


def refuse(message: str):
    """Bad input: one line on stderr, exit code 2."""
    print(message, file=sys.stderr)
    raise SystemExit(REFUSED)


# -- backbones ---------------------------------------------------------------------------------
SPACE_BASE = {
    "type": "staged", "name": "maedet_small_base",
    "stem": [{"type": "conv", "out_channels": 32, "kernel": 3, "stride": 2}],
    "stages": [
        {"block": {"type": "k1kxk1", "kernel": 3, "bottleneck_channels": 48}, "depth": 1, "out_channels": 96,
         "stride": 2},
        {"block": {"type": "k1kxk1", "kernel": 3, "bottleneck_channels": 112}, "depth": 2, "out_channels": 256,
         "stride": 2},
        {"block": {"type": "k1kxk1", "kernel": 3, "bottleneck_channels": 224}, "depth": 3, "out_channels": 640,
         "stride": 2},
        {"block": {"type": "k1kxk1", "kernel": 3, "bottleneck_channels": 384}, "depth": 2, "out_channels": 1024,
         "stride": 2},
    ],
    "outputs": ["C2", "C3", "C4", "C5"],
}
"""The base of the candidates' random walks: a small MAE-DET-style k1kxk1 backbone (the shape of
MAE-DET-S, narrower and shallower) at 0.64 x ResNet-18's FLOPs; about 60% of its walks land
within [0.6, 1] x those FLOPs."""


def flops(spec, size: int) -> float:
    from archspec.compiler.fastcosts import fast_costs

    return fast_costs(spec, (size, size)).flops


DETNAS_BASE = {
    "type": "staged", "name": "detnas_1p3g_base",
    "stem": [{"type": "conv", "out_channels": 48, "kernel": 3, "stride": 2, "bias": True}],
    "stages": [{"block": {"type": "shufflenet_v2", "kernel": 3}, "depth": depth, "out_channels": width, "stride": 2}
               for depth, width in ((8, 96), (8, 240), (16, 480), (8, 960))],
    "outputs": ["C2", "C3", "C4", "C5"],
}
"""The detnas space's base: DetNAS's 1.3G backbone layout (Chen et al., DetNAS, NeurIPS 2019,
section 4: 8/8/16/8 choice layers, widths 48 / 96 / 240 / 480 / 960), whose 4^40 paths have
about 0.6 to 0.7 x ResNet-18's FLOPs at any input size."""

SPACE_BASES = {"maedet": SPACE_BASE, "detnas": DETNAS_BASE}


def space_config(name: str):
    """The search config's space of `name` (`SPACES`)."""
    from archspec.search_config import DetnasSpace, MaedetSpace

    if name == "maedet":
        return MaedetSpace(type="maedet", kernels=[3, 5], max_layers=60)
    return DetnasSpace(type="detnas")


def search_space(name: str):
    """The space `name` around its base (`archspec.search.space.make_space`)."""
    from archspec.search.space import make_space

    return make_space(space_config(name), archspec.validate(SPACE_BASES[name]))


def sample_candidates(config: BenchConfig, budget: float) -> list[dict]:
    """`config.candidates` distinct genotypes of the space within the FLOPs window. maedet: each a
    seeded random walk of 1..8 mutations from the base (walks of different lengths reach both
    near and far corners of the space); detnas: seeded uniform paths (every layer's choice drawn
    independently, as SPOS samples them)."""
    from archspec.search.space import Rejected

    space = search_space(config.space)
    if config.space == "maedet":
        rng = random.Random(f"proxy-fidelity:{config.sample_seed}")

        def draw():
            return space.mutate(space.base, rng, rng.randint(1, 8))
    else:
        rng = random.Random(f"proxy-fidelity:{config.space}:{config.sample_seed}")

        def draw():
            return space.random(rng)
    found: dict[tuple, dict] = {}
    for _ in range(config.candidates * 400):
        if len(found) >= config.candidates:
            break
        try:
            genotype = draw()
            space.check(genotype)
            spec = space.decode(genotype)
        except Rejected:
            continue
        cost = flops(spec, config.image_size)
        if genotype in found or not config.min_flops_fraction * budget <= cost <= budget:
            continue
        data = archspec.to_data(spec)
        data["name"] = f"cand{len(found):02d}"
        found[genotype] = {"name": data["name"], "genotype": list(genotype), "backbone": data}
    if len(found) < config.candidates:
        raise SystemExit(f"only {len(found)} candidates within the FLOPs window; lower --min-flops-fraction")
    return list(found.values())


def baseline() -> dict:
    spec = archspec.load(ROOT / "examples" / "backbones" / "resnet18.yaml")
    return {"name": BASELINE, "genotype": None, "backbone": archspec.to_data(spec)}


def detector(entry: dict, schedule: Schedule, classes: list[str]):
    """The tiny-FCOS template around a backbone entry (one definition for every backbone)."""
    template = archspec.load(ROOT / "examples" / "detectors" / "fcos_tiny.yaml")
    data = archspec.to_data(template)
    data.update({"name": f"fcos_{entry['name']}", "backbone": entry["backbone"], "num_classes": len(classes),
                 "class_names": classes, "input_size": schedule.input_size})
    return archspec.validate(data)


def search_data(config: BenchConfig, classes: list[str], evaluator: dict) -> dict:
    """A search config (as data) of the benchmark's space with `evaluator`: the space around its
    base and, as ``detector:``, the stand-alone template (`detector` without its backbone), so that
    the proxy_train and supernet evaluators score the candidates inside the very detector they
    train as stand-alone."""
    standalone = archspec.to_data(detector(baseline(), config.standalone, classes))
    template = {key: value for key, value in standalone.items()
                if key not in ("type", "name", "description", "backbone")}
    return {"type": "search", "name": f"proxy_fidelity_{config.space}", "base": SPACE_BASES[config.space],
            "space": space_config(config.space).model_dump(mode="json"), "strategy": {"type": "random"},
            "detector": template, "evaluator": evaluator, "budgets": {"input_size": config.standalone.input_size}}


def proxy_evaluator_data(config: BenchConfig, full_data: Path) -> dict:
    """The `proxy_train` evaluator of the proxy schedule, on the full generated set (the evaluator
    draws its seeded subsets itself); seed and threads at the evaluator's defaults, so the score is
    the one a search with these settings computes, whatever --jobs and --threads."""
    proxy = config.proxy
    if proxy.max_steps_per_epoch is not None and proxy.max_steps_per_epoch < math.ceil(
            proxy.train_images / proxy.batch_size):
        raise ValueError("the proxy schedule's max_steps_per_epoch would cut the proxy_train evaluator's epochs")
    return {"type": "proxy_train", "data": str(full_data.resolve()), "epochs": proxy.epochs,
            "input_size": proxy.input_size, "train_images": proxy.train_images,
            "validation_images": proxy.val_images, "batch_size": proxy.batch_size, "lr": proxy.learning_rate}


def supernet_evaluator_data(config: BenchConfig, out: Path) -> dict:
    """The `supernet` evaluator of the benchmark's supernet on the stand-alone images: every
    validation image the stand-alone AP is measured on, BN calibration on a seeded subset of the
    stand-alone training images."""
    return {"type": "supernet", "run": str(supernet_run(config, out).resolve()),
            "data": str((out / "data" / "standalone").resolve()),
            "calibration_images": config.supernet_training.calibration_images,
            "validation_images": config.standalone.val_images, "batch_norm": "recalibrate"}


def supernet_run(config: BenchConfig, out: Path) -> Path:
    """The supernet's run folder: --supernet, or RUN/supernet trained by the benchmark."""
    return Path(config.supernet) if config.supernet is not None else out / "supernet"


# -- training (resumable) ----------------------------------------------------------------------
class Stopper:
    """Counts trainings finished in this invocation; ends the run after `limit` (--stop-after)."""

    def __init__(self, limit: int | None):
        self.limit, self.done = limit, 0

    def finished_one(self) -> None:
        self.done += 1
        if self.limit is not None and self.done >= self.limit:
            print(f"stopped after {self.done} trainings (--stop-after); rerun the same command to resume",
                  file=sys.stderr)
            raise SystemExit(STOPPED)


def trained_ap(spec, data: Path, run: Path, schedule: Schedule, seed: int, stopper: Stopper) -> float:
    """Validation AP of `spec` trained with `schedule` in `run`: read from run/result.json when the
    training finished before, resumed from its last.pt when it was cut short."""
    from archspec.detection.train import TrainOptions, train

    result = run / "result.json"
    if result.exists():
        return float(json.loads(read_text(result, kind="result"))["AP"])
    options = TrainOptions(epochs=schedule.epochs, batch_size=schedule.batch_size,
                           learning_rate=schedule.learning_rate, seed=seed, eval_every=schedule.epochs,
                           max_steps_per_epoch=schedule.max_steps_per_epoch)
    started = time.perf_counter()
    outcome = train(spec, data, run, options, resume=(run / "last.pt").exists(), progress=False)
    final = outcome.history[-1]
    record = {"AP": final["AP"], "AP50": final["AP50"], "seconds": round(time.perf_counter() - started, 1),
              "seed": seed, "schedule": asdict(schedule)}
    atomic_write_text(result, json.dumps(record, indent=1))
    print(f"  trained {run.name}: AP {final['AP']:.3f} AP50 {final['AP50']:.3f} in {record['seconds']:.0f} s",
          file=sys.stderr, flush=True)
    stopper.finished_one()
    return float(final["AP"])


def proxy_ap(task: "Task", stopper: Stopper) -> float:
    """The `proxy_train` criterion of a backbone: `ProxyTrainEvaluator.score`, the very call a
    search with ``evaluator: {type: proxy_train}`` makes (SpineNet's proxy task, Du et al., CVPR
    2020, section 4: a brief training from scratch at reduced input size on a subset, scored by AP
    on a fixed validation subset), with its cache in RUN/proxy_train: a finished score is read
    back, never retrained."""
    from archspec.search.proxy_train import ProxyTrainEvaluator
    from archspec.search.space import make_space
    from archspec.search_config import search_config_from_data

    config, base = search_config_from_data(task.search)
    config = config.model_copy(update={"evaluator": config.evaluator.in_run(Path(task.run).parent)})
    evaluator = ProxyTrainEvaluator(config, base, make_space(config.space, base))
    spec = archspec.validate(task.spec)
    fingerprint = archspec.fingerprint(spec)
    cached = evaluator.cache.get(fingerprint) is not None
    started = time.perf_counter()
    ap = float(evaluator.score(spec, fingerprint)["AP"])
    if not cached:
        print(f"  proxy-trained {task.key.split(':')[0]}: AP {ap:.3f} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        stopper.finished_one()
    return ap


def proxy_cached(task: "Task") -> bool:
    """Whether the proxy score of a task is in the evaluator's cache (read without opening the data)."""
    from archspec.search.proxy_train import ScoreCache, settings_digest
    from archspec.search_config import search_config_from_data

    config, _ = search_config_from_data(task.search)
    digest = settings_digest(config.evaluator, config.detector, config.evaluator.data)
    return ScoreCache(Path(task.run), digest).get(archspec.fingerprint(archspec.validate(task.spec))) is not None


def train_supernet_task(task: "Task", stopper: Stopper) -> None:
    """The space's supernet trained by the project's trainer (`archspec supernet train`: SPOS,
    one seeded uniform path per iteration, checkpoints every epoch) on the stand-alone training
    images; a cut training resumes from its last.pt."""
    from archspec.detection.train import TrainOptions
    from archspec.search.supernet_train import train_supernet
    from archspec.search_config import search_config_from_data

    if supernet_trained(task):
        return None
    config, base = search_config_from_data(task.search)
    settings, run = task.schedule, Path(task.run)
    options = TrainOptions(epochs=settings.epochs, batch_size=settings.batch_size,
                           learning_rate=settings.learning_rate, seed=settings.seed,
                           max_steps_per_epoch=settings.max_steps_per_epoch)
    result = train_supernet(config, base, task.data, run, options, resume=(run / "last.pt").exists(), progress=False)
    if result.images:
        print(f"  trained the supernet: {result.images} images in {result.seconds:.0f} s", file=sys.stderr,
              flush=True)
        stopper.finished_one()
    return None


def supernet_trained(task: "Task") -> bool:
    """Whether the supernet's run folder holds every epoch (history.jsonl has a line per epoch)."""
    history = Path(task.run) / "history.jsonl"
    return history.is_file() and len(read_text(history, kind="supernet history").splitlines()) >= task.schedule.epochs


def subset_data(source: Path, target: Path, schedule: Schedule) -> Path:
    """The first images of each split (annotations rewritten, images shared by hard links or copies)."""
    import os
    import shutil

    if (target / "annotations" / "instances_val.json").exists():
        return target
    for split, count in (("train", schedule.train_images), ("val", schedule.val_images)):
        data = json.loads(read_text(source / "annotations" / f"instances_{split}.json", kind="annotations",
                                    max_bytes=1 << 30))
        keep = {image["id"] for image in data["images"][:count]}
        data["images"] = [image for image in data["images"] if image["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        (target / split).mkdir(parents=True, exist_ok=True)
        for image in data["images"]:
            src, dst = source / split / image["file_name"], target / split / image["file_name"]
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
        (target / "annotations").mkdir(parents=True, exist_ok=True)
        atomic_write_text(target / "annotations" / f"instances_{split}.json", json.dumps(data))
    return target


# -- criteria ----------------------------------------------------------------------------------
def analytic_criteria(backbone: dict, size: int) -> dict:
    from archspec.compiler.fastcosts import fast_costs
    from archspec.search.score import SCORERS

    spec = archspec.validate(backbone)
    counts = fast_costs(spec, (size, size))
    return {"maedet": SCORERS["maedet"](spec).value, "maedet_rf": SCORERS["maedet-rf"](spec).value,
            "flops": float(counts.flops), "params": float(counts.params)}


def latencies(backbones: list[dict], size: int, table: Path, config: BenchConfig) -> dict[str, dict]:
    """Predicted (kernel table) and measured (end to end) latency in ms of every backbone, ONNX
    Runtime on the CPU at batch 1 and `size` pixels: the settings of a search's latency budget."""
    from archspec.compiler.latency import LatencyPredictor, LatencyTable
    from archspec.compiler.latency.predictor import measure_end_to_end

    predictor = LatencyPredictor(LatencyTable(table))
    out = {}
    for backbone in backbones:
        spec = archspec.validate(backbone["backbone"])
        for key in predictor.missing(spec, (size, size)):
            predictor.measure_kernel(key, budget_ms=config.kernel_budget_ms)
        measured = measure_end_to_end(spec, (size, size), predictor.context, repeat=config.latency_repeat,
                                      warmup=max(2, config.latency_repeat // 6))
        out[backbone["name"]] = {"latency_pred": predictor.predict(spec, (size, size)),
                                 "latency_measured": float(measured.median_ms)}
    return out


def supernet_scores(backbones: list[dict], config: BenchConfig, classes: list[str],
                    out: Path) -> dict[str, dict] | None:
    """AP of every candidate's path in the supernet with its BN statistics recalibrated and with
    the shared ones (`SupernetEvaluator.score_path`); None (with the reason printed) for a space
    without a supernet."""
    if config.space not in SUPERNET_SPACES:
        print(f"supernet criteria skipped: the {config.space} space has no supernet (weight sharing by slot "
              f"covers {', '.join(SUPERNET_SPACES)}; --space detnas has them)", file=sys.stderr)
        return None
    from archspec.search.space import make_space
    from archspec.search.supernet import SupernetError
    from archspec.search.supernet_eval import SupernetEvaluator
    from archspec.search_config import search_config_from_data

    search, base = search_config_from_data(search_data(config, classes, supernet_evaluator_data(config, out)))
    try:
        evaluator = SupernetEvaluator(search, base, make_space(search.space, base))
    except SupernetError as exc:
        refuse(f"--supernet: {exc}")
    scores = {}
    for entry in backbones:
        if entry["genotype"] is None:  # ResNet-18: no path of the space
            continue
        genotype = tuple(entry["genotype"])
        scores[entry["name"]] = {"supernet_recal": evaluator.score_path(genotype, "recalibrate").ap,
                                 "supernet_shared": evaluator.score_path(genotype, "supernet").ap}
    return scores


def check_supernet_run(config: BenchConfig, classes: list[str]) -> None:
    """Refuse --supernet before any training when it is no trained supernet of this benchmark's
    space, base and detector template."""
    if config.supernet is None:
        return
    from archspec.search.supernet import SupernetError, supernet_fingerprint
    from archspec.search.supernet_train import read_run_file
    from archspec.search_config import search_config_from_data

    search, base = search_config_from_data(search_data(config, classes, {"type": "analytic"}))
    try:
        read_run_file(config.supernet, supernet_fingerprint(search, base))
    except SupernetError as exc:
        refuse(f"--supernet: {exc}")
    if not (Path(config.supernet) / "last.pt").is_file():
        refuse(f"--supernet: {config.supernet} has no last.pt (a supernet training that never finished an epoch)")


# -- statistics --------------------------------------------------------------------------------
def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson correlation of the average ranks."""
    return pearson(ranks(x), ranks(y))


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected for)."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else float("nan")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# -- the run -----------------------------------------------------------------------------------
def prepare(out: Path, config: BenchConfig) -> tuple[Path, list[str], float, list[dict]]:
    """Data, FLOPs budget and candidates (written once; a rerun checks its settings match)."""
    from archspec.detection.synthetic import HardPreset, synthesize_hard

    if config.supernet is not None and config.space not in SUPERNET_SPACES:
        refuse(f"--supernet: the {config.space} space has no supernet (use --space detnas)")
    settings = out / "config.json"
    wanted = stored_settings(config)
    if settings.exists() and read_text(settings, kind="benchmark settings") != wanted:
        refuse(f"{out}: holds a benchmark with other settings ({settings}); choose another --out")
    atomic_write_text(settings, wanted)
    preset = HardPreset(num_train=max(config.standalone.train_images, config.proxy.train_images),
                        num_val=max(config.standalone.val_images, config.proxy.val_images),
                        image_size=config.image_size, seed=config.data_seed, **config.preset_knobs)
    data = out / "data" / "full"
    if not (data / "annotations" / "instances_val.json").exists():
        synthesize_hard(data, preset)
    classes = [c["name"] for c in json.loads(read_text(data / "annotations" / "instances_val.json",
                                                       kind="annotations", max_bytes=1 << 30))["categories"]]
    check_supernet_run(config, classes)
    base = baseline()
    budget = flops(archspec.validate(base["backbone"]), config.image_size)
    listing = out / "candidates.json"
    candidates = json.loads(read_text(listing, kind="candidates", max_bytes=1 << 26)) if listing.exists() else []
    if len(candidates) < config.candidates:  # the sampling is sequential: its first N do not depend on N
        candidates = sample_candidates(config, budget)
        atomic_write_text(listing, json.dumps(candidates, indent=1))
    return data, classes, budget, [base] + candidates[:config.candidates]


def run(out: Path, config: BenchConfig, stop_after: int | None = None, jobs: int = 1, threads: int = 2) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with RunFolder(out, "benchmark proxy_fidelity") as folder:
        folder.record("config.json", *OUTPUT_FILES)
        return _run(out, config, Stopper(stop_after), jobs, threads)


@dataclass(frozen=True)
class Task:
    """One training: a stand-alone detector, a proxy score or the supernet."""

    key: str
    """``name:seed`` (stand-alone), ``name:proxy`` or ``supernet``."""
    kind: Literal["standalone", "proxy", "supernet"]
    """What is trained (`TASK_KINDS`)."""
    spec: dict
    """The detector (stand-alone), the backbone (proxy); empty for the supernet."""
    data: str
    run: str
    """Its run folder (the proxy: the evaluator's score cache)."""
    schedule: Schedule | SupernetTraining
    seed: int
    search: dict | None = None
    """The search config (as data) of the proxy_train evaluator or of the supernet."""


def standalone_ap(task: Task, stopper: Stopper) -> float:
    return trained_ap(archspec.validate(task.spec), Path(task.data), Path(task.run), task.schedule, task.seed,
                      stopper)


def standalone_trained(task: Task) -> bool:
    return (Path(task.run) / "result.json").exists()


@dataclass(frozen=True)
class TaskKind:
    """How a kind of task is run and how its finished result is recognised."""

    score: Callable[[Task, Stopper], float | None]
    """The task's AP (None for the supernet, which is scored path by path afterwards)."""
    finished: Callable[[Task], bool]
    """Whether the task's result is on disk already (read back, not trained)."""


TASK_KINDS = {"standalone": TaskKind(standalone_ap, standalone_trained),
              "proxy": TaskKind(proxy_ap, proxy_cached),
              "supernet": TaskKind(train_supernet_task, supernet_trained)}


def finished(task: Task) -> bool:
    return TASK_KINDS[task.kind].finished(task)


def score_task(task: Task, stopper: Stopper) -> float | None:
    return TASK_KINDS[task.kind].score(task, stopper)


def run_task(task: Task, threads: int = 1) -> float | None:
    """A training in a worker process (`--jobs`): its AP."""
    import torch

    torch.set_num_threads(threads)
    return score_task(task, Stopper(None))


def tasks_of(backbones: list[dict], config: BenchConfig, classes: list[str], out: Path) -> list[Task]:
    """Every training, in the order that makes a run cut short by the clock most useful: every
    backbone's seed 0, then ResNet-18's other seeds (the noise estimate of a one-seed verdict),
    the proxies, the supernet, then the candidates' other seeds, seed-major (whole seeds)."""
    standalone = out / "data" / "standalone"
    base, candidates = backbones[0], backbones[1:]

    def trained(entry: dict, seed: int) -> Task:
        spec = archspec.to_data(detector(entry, config.standalone, classes))
        return Task(f"{entry['name']}:{seed}", "standalone", spec, str(standalone),
                    str(out / "runs" / f"{entry['name']}_seed{seed}"), config.standalone, seed)

    proxy_search = search_data(config, classes, proxy_evaluator_data(config, out / "data" / "full"))
    tasks = [trained(entry, 0) for entry in backbones]
    tasks += [trained(base, seed) for seed in range(1, config.base_seeds)]
    tasks += [Task(f"{entry['name']}:proxy", "proxy", entry["backbone"], proxy_search["evaluator"]["data"],
                   str(out / "proxy_train"), config.proxy, 0, proxy_search) for entry in backbones]
    if config.space in SUPERNET_SPACES and config.supernet is None:
        tasks.append(Task("supernet", "supernet", {}, str(standalone), str(out / "supernet"),
                          config.supernet_training, config.supernet_training.seed,
                          search_data(config, classes, supernet_evaluator_data(config, out))))
    for seed in range(1, config.seeds):
        tasks += [trained(entry, seed) for entry in candidates]
    return tasks


def train_all(tasks: list[Task], stopper: Stopper, jobs: int, threads: int) -> dict[str, float | None]:
    """AP of every task; finished ones are read back. With `jobs` > 1 the trainings run in that
    many processes of `threads` torch threads each; each training is seeded, so the results do not
    depend on `jobs` (the number of threads may change the last digits: keep it fixed)."""
    if jobs <= 1:
        return {t.key: score_task(t, stopper) for t in tasks}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = {t.key: score_task(t, stopper) for t in tasks if finished(t)}
    pending = [t for t in tasks if t.key not in results]  # read back above; never counted by --stop-after
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_task, t, threads): t.key for t in pending}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            try:
                stopper.finished_one()
            except SystemExit:
                for other in futures:
                    other.cancel()
                raise
    return results


def _run(out: Path, config: BenchConfig, stopper: Stopper, jobs: int, threads: int) -> dict:
    started = time.perf_counter()
    full, classes, budget, backbones = prepare(out, config)
    print(f"{len(backbones) - 1} candidates of the {config.space} space within [{config.min_flops_fraction:g}, 1] x "
          f"ResNet-18's {budget / 1e9:.3f} GFLOPs (2 x MACs) at {config.image_size} px", file=sys.stderr)
    criteria = cached_criteria(out, config, backbones)
    subset_data(full, out / "data" / "standalone", config.standalone)
    (out / "runs").mkdir(exist_ok=True)
    aps = train_all(tasks_of(backbones, config, classes, out), stopper, jobs, threads)
    supernet = supernet_scores(backbones, config, classes, out) or {}
    rows = []
    for entry in backbones:
        name = entry["name"]
        seeds = [aps[f"{name}:{seed}"] for seed in range(config.base_seeds if name == BASELINE else config.seeds)]
        mean, std = mean_std(seeds)
        rows.append({"name": name, "genotype": entry["genotype"], **criteria[name], "proxy_train": aps[f"{name}:proxy"],
                     "supernet_recal": None, "supernet_shared": None, **supernet.get(name, {}), "aps": seeds,
                     "ap_mean": mean, "ap_std": std})
    report = summarise(rows, config)
    write_outputs(out, rows, report)
    print(report["markdown"])
    print(f"(took {time.perf_counter() - started:.0f} s this run)", file=sys.stderr)
    return report


def cached_criteria(out: Path, config: BenchConfig, backbones: list[dict]) -> dict:
    """Criteria of every backbone, measured once and kept in criteria.json (a rerun, or one with
    more candidates, reuses the figures it has: the same table after a resume)."""
    path = out / "criteria.json"
    known = json.loads(read_text(path, kind="cached figures", max_bytes=1 << 26)) if path.exists() else {}
    missing = [entry for entry in backbones if entry["name"] not in known]
    if missing:
        size = config.standalone.input_size
        timing = latencies(missing, size, out / "latency.sqlite", config)
        for entry in missing:
            known[entry["name"]] = {**analytic_criteria(entry["backbone"], size), **timing[entry["name"]]}
        atomic_write_text(path, json.dumps(known, indent=1))
    return known


def summarise(rows: list[dict], config: BenchConfig) -> dict:
    """Correlations per criterion, and the beats-ResNet-18 verdicts."""
    ap = [row["ap_mean"] for row in rows]
    base = next(row for row in rows if row["name"] == BASELINE)
    fitting = [row for row in rows if row["name"] != BASELINE
               and row["latency_measured"] <= base["latency_measured"]]
    correlations, verdicts = [], []
    for criterion in CRITERIA:
        pairs = [(row[criterion], row["ap_mean"]) for row in rows if row.get(criterion) is not None]
        if len(pairs) < 2:
            correlations.append({"criterion": criterion, "kendall_tau": None, "spearman": None, "n": len(pairs)})
            continue
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        correlations.append({"criterion": criterion, "kendall_tau": kendall_tau_b(xs, ys),
                             "spearman": spearman(xs, ys), "n": len(pairs)})
        verdicts.append(verdict(criterion, fitting, base))
    stds = [row["ap_std"] for row in rows if len(row["aps"]) > 1]
    figures = {"baseline_ap": base["ap_mean"], "baseline_std": base["ap_std"], "baseline_seeds": len(base["aps"]),
               "mean_seed_std": sum(stds) / len(stds) if stds else None, "ap_min": min(ap), "ap_max": max(ap),
               "candidates_fitting_latency": len(fitting)}
    return {"correlations": correlations, "verdicts": verdicts, "figures": figures,
            "markdown": markdown(rows, correlations, verdicts, figures, config)}


def verdict(criterion: str, fitting: list[dict], base: dict) -> dict:
    """Whether the candidate a criterion ranks first (among those within ResNet-18's measured
    latency) beats ResNet-18 by more than 2 standard errors of the AP difference (`noise`)."""
    scored = [row for row in fitting if row.get(criterion) is not None]
    if not scored:
        return {"criterion": criterion, "pick": None, "difference": None, "noise": None, "pooled": False,
                "beats": None}
    pick = max(scored, key=lambda row: (row[criterion], row["name"]))
    difference = pick["ap_mean"] - base["ap_mean"]
    noise, pooled = difference_noise(pick, base)
    beats = None if noise is None else difference > 2 * noise  # no seed spread at all: no verdict
    return {"criterion": criterion, "pick": pick["name"], "difference": difference, "noise": noise,
            "pooled": pooled, "beats": beats}


def difference_noise(pick: dict, base: dict) -> tuple[float | None, bool]:
    """(standard error of the difference of two mean APs, whether pooled). With k_p and k_b seeds
    and seed stds s_p, s_b it is sqrt(s_p^2/k_p + s_b^2/k_b). A side trained once has no spread of
    its own: it takes the other side's std (pooled: the noise of one training is a property of the
    schedule and the data, measured where there are seeds), sqrt(s^2/k_p + s^2/k_b). Neither side
    with two seeds: (None, False)."""
    seeds_pick, seeds_base = len(pick["aps"]), len(base["aps"])
    if seeds_pick > 1 and seeds_base > 1:
        std_pick, std_base, pooled = pick["ap_std"], base["ap_std"], False
    elif seeds_pick > 1 or seeds_base > 1:
        std_pick = std_base = pick["ap_std"] if seeds_pick > 1 else base["ap_std"]
        pooled = True
    else:
        return None, False
    return math.sqrt(std_pick ** 2 / seeds_pick + std_base ** 2 / seeds_base), pooled


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _answer(correlation: dict, verdict_row: dict) -> str:
    if correlation["n"] < 2:
        return "skipped"
    if not verdict_row.get("pick"):
        return "no candidate fits"
    if verdict_row["beats"] is None:
        return "n/a (1 seed)"
    answer = "yes" if verdict_row["beats"] else "no"
    return f"{answer} (pooled noise)" if verdict_row["pooled"] else answer


def markdown(rows, correlations, verdicts, figures, config: BenchConfig) -> str:
    s, p = config.standalone, config.proxy
    seeds = (f"{config.seeds} seed(s)" if config.seeds == config.base_seeds else
             f"{config.seeds} seed(s) per candidate, {config.base_seeds} for ResNet-18")
    supernet = config.space in SUPERNET_SPACES
    lines = [f"## Proxy fidelity: {len(rows) - 1} {config.space}-space candidates + ResNet-18, {seeds}", "",
             f"Stand-alone: tiny FCOS, {s.epochs} epochs, {s.input_size} px, {s.train_images} train / "
             f"{s.val_images} val images of the hard preset. Proxy (the proxy_train evaluator): {p.epochs} epochs, "
             f"{p.input_size} px, seeded subsets of {p.train_images} / {p.val_images} images."]
    if supernet:
        t = config.supernet_training
        source = (f"the supernet of {config.supernet}" if config.supernet else
                  f"a SPOS supernet trained {t.epochs} epochs on the stand-alone train images")
        lines.append(f"Supernet: {source}; every candidate's path scored on the stand-alone val images, after "
                     f"recomputing its BN statistics on {t.calibration_images} train images (supernet_recal) and "
                     "with the shared statistics (supernet_shared). ResNet-18 is no path of the space: these two "
                     "rank the candidates only.")
    columns = ["backbone", "GFLOPs", "Mparams", "maedet", "maedet_rf", "lat pred ms", "lat meas ms", "proxy AP",
               *(["supernet AP recal", "supernet AP shared"] if supernet else []), "AP mean", "AP std"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [row["name"], f"{row['flops'] / 1e9:.3f}", f"{row['params'] / 1e6:.2f}", f"{row['maedet']:.1f}",
                 f"{row['maedet_rf']:.1f}", f"{row['latency_pred']:.2f}", f"{row['latency_measured']:.2f}",
                 f"{row['proxy_train']:.3f}"]
        if supernet:
            cells += [_fmt(row["supernet_recal"]), _fmt(row["supernet_shared"])]
        cells += [f"{row['ap_mean']:.3f}", f"{row['ap_std']:.3f}" if len(row["aps"]) > 1 else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| criterion | Kendall tau-b | Spearman | n | best within R18 latency | AP diff vs R18 | "
              "2 x noise | beats R18? |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_name = {v["criterion"]: v for v in verdicts}
    for c in correlations:
        v = by_name.get(c["criterion"], {})
        noise = v.get("noise")
        lines.append(f"| {c['criterion']} | {_fmt(c['kendall_tau'])} | {_fmt(c['spearman'])} | {c['n']} | "
                     f"{_fmt(v.get('pick'))} | {_fmt(v.get('difference'))} | "
                     f"{_fmt(2 * noise if noise is not None else None)} | {_answer(c, v)} |")
    f = figures
    lines += ["", f"ResNet-18 AP {f['baseline_ap']:.3f} +- {f['baseline_std']:.3f} (std over {f['baseline_seeds']} "
              f"seeds); mean seed std {_fmt(f['mean_seed_std'])}; AP range {f['ap_min']:.3f}..{f['ap_max']:.3f}; "
              f"{f['candidates_fitting_latency']} candidates within ResNet-18's measured latency."]
    if any(v["pooled"] for v in verdicts):
        lines.append("Pooled noise: a backbone trained once has no seed spread of its own; it takes the other "
                     "side's seed std s, so 2 x noise = 2 sqrt(s^2/k_pick + s^2/k_R18) over their seed counts.")
    winners = [v["criterion"] for v in verdicts if v["beats"]]
    lines.append("Criteria whose pick beats ResNet-18 beyond the noise: " + (", ".join(winners) if winners else "none"))
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[dict], report: dict) -> None:
    columns = ["name", "genotype", *[c for c in CRITERIA], "latency_measured", "ap_mean", "ap_std", "aps"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([json.dumps(row[c]) if c in ("genotype", "aps") else row.get(c) for c in columns])
    atomic_write_text(out / "results.csv", buffer.getvalue())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["criterion", "kendall_tau", "spearman", "n", "pick", "ap_difference", "noise", "pooled_noise",
                     "beats_resnet18"])
    verdicts = {v["criterion"]: v for v in report["verdicts"]}
    for c in report["correlations"]:
        v = verdicts.get(c["criterion"], {})
        writer.writerow([c["criterion"], c["kendall_tau"], c["spearman"], c["n"], v.get("pick"), v.get("difference"),
                         v.get("noise"), v.get("pooled"), v.get("beats")])
    atomic_write_text(out / "correlations.csv", buffer.getvalue())
    atomic_write_text(out / "table.md", report["markdown"])
    scatter_plots(out, rows, report["correlations"])


def scatter_plots(out: Path, rows: list[dict], correlations: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archspec.files import atomic_path

    for c in correlations:
        name = c["criterion"]
        points = [row for row in rows if row.get(name) is not None]
        if not points:
            continue
        figure, axes = plt.subplots(figsize=(4.5, 3.5), dpi=100)
        for row in points:
            colour = "tab:red" if row["name"] == BASELINE else "tab:blue"
            axes.errorbar(row[name], row["ap_mean"], yerr=row["ap_std"], fmt="o", color=colour, ms=4, capsize=2)
        axes.set_xlabel(name)
        axes.set_ylabel("stand-alone AP (mean over seeds)")
        axes.set_title(f"{name}: tau {_fmt(c['kendall_tau'], 2)}, rho {_fmt(c['spearman'], 2)} (red: ResNet-18)",
                       fontsize=9)
        figure.tight_layout()
        with atomic_path(out / f"scatter_{name}.png") as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def parse_args(argv=None) -> tuple[Path, BenchConfig, int | None, int, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Run folder (rerun the command to resume).")
    parser.add_argument("--space", choices=SPACES, default=None,
                        help="Search space of the candidates [maedet]; detnas adds the supernet criteria.")
    parser.add_argument("--candidates", type=positive, default=None, help="Candidates of the space [12].")
    parser.add_argument("--seeds", type=positive, default=None, help="Stand-alone trainings per candidate [3].")
    parser.add_argument("--baseline-seeds", type=positive, default=None,
                        help="Stand-alone trainings of ResNet-18 [--seeds]; its seed spread is the noise of a "
                             "one-seed verdict.")
    parser.add_argument("--epochs", type=positive, default=None, help="Stand-alone epochs [24].")
    parser.add_argument("--batch-size", type=positive, default=None, help="Batch size of every schedule [16].")
    parser.add_argument("--size", type=positive, default=None,
                        help="Image side of the generated set and the stand-alone input size [128].")
    parser.add_argument("--train-images", type=positive, default=None, help="Stand-alone training images [512].")
    parser.add_argument("--val-images", type=positive, default=None, help="Stand-alone validation images [128].")
    parser.add_argument("--proxy-epochs", type=positive, default=None, help="Proxy-training epochs [3].")
    parser.add_argument("--proxy-size", type=positive, default=None, help="Proxy input size [96].")
    parser.add_argument("--proxy-train-images", type=positive, default=None, help="Proxy training images [256].")
    parser.add_argument("--proxy-val-images", type=positive, default=None, help="Proxy validation images [64].")
    parser.add_argument("--supernet", default=None, metavar="RUN",
                        help="A trained supernet run folder of the detnas space (e.g. another run's RUN/supernet) "
                             "instead of training one.")
    parser.add_argument("--supernet-epochs", type=positive, default=None, help="Supernet training epochs [24].")
    parser.add_argument("--calibration-images", type=positive, default=None,
                        help="Training images per path for BN recalibration [256].")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                        help="A hard-preset setting (as `archspec data synth --knob`), e.g. min_side_px=6.")
    parser.add_argument("--min-flops-fraction", type=float, default=None, help="[0.6]")
    parser.add_argument("--mini", action="store_true", help="Plumbing run: 2 candidates, 1 seed, a few steps.")
    parser.add_argument("--stop-after", type=positive, default=None, help="End after N trainings (exit code 3).")
    parser.add_argument("--threads", type=positive, default=2, help="torch threads (with --jobs 1).")
    parser.add_argument("--jobs", type=positive, default=1, help="Trainings run at once, in processes of one thread.")
    args = parser.parse_args(argv)
    space = args.space or "maedet"
    config = mini_config(space) if args.mini else BenchConfig(space=space)
    changes = {key: value for key, value in (("candidates", args.candidates), ("seeds", args.seeds),
                                              ("baseline_seeds", args.baseline_seeds),
                                              ("min_flops_fraction", args.min_flops_fraction),
                                              ("image_size", args.size), ("supernet", args.supernet))
               if value is not None}
    standalone = {key: value for key, value in (("epochs", args.epochs), ("train_images", args.train_images),
                                                ("val_images", args.val_images), ("input_size", args.size),
                                                ("batch_size", args.batch_size))
                  if value is not None}
    if standalone:
        changes["standalone"] = Schedule(**{**asdict(config.standalone), **standalone})
    proxy = {key: value for key, value in (("epochs", args.proxy_epochs), ("input_size", args.proxy_size),
                                           ("train_images", args.proxy_train_images),
                                           ("val_images", args.proxy_val_images),
                                           ("batch_size", args.batch_size)) if value is not None}
    if proxy:
        changes["proxy"] = Schedule(**{**asdict(config.proxy), **proxy})
    supernet = {key: value for key, value in (("epochs", args.supernet_epochs), ("batch_size", args.batch_size),
                                              ("calibration_images", args.calibration_images)) if value is not None}
    if supernet:
        changes["supernet_training"] = SupernetTraining(**{**asdict(config.supernet_training), **supernet})
    if args.knob:
        import yaml

        knobs = dict(config.preset_knobs)
        for knob in args.knob:
            name, _, raw = knob.partition("=")
            knobs[name.strip()] = yaml.safe_load(raw)
        changes["preset_knobs"] = knobs
    config = BenchConfig(**{**{k: getattr(config, k) for k in config.__dataclass_fields__}, **changes})
    return args.out, config, args.stop_after, args.threads, args.jobs


def main(argv=None) -> None:
    import torch

    out, config, stop_after, threads, jobs = parse_args(argv)
    torch.set_num_threads(threads)
    run(out, config, stop_after, jobs, threads)


if __name__ == "__main__":
    main()

"""Which criterion should I search with? Rank correlation of search criteria against the AP of
stand-alone trained detectors on the hard synthetic benchmark (issue 19, part 5).

    .venv/bin/python benchmarks/proxy_fidelity.py --out runs/proxy_fidelity [--candidates 12] [--seeds 3]
    .venv/bin/python benchmarks/proxy_fidelity.py --out /tmp/pf --mini          # plumbing check, seconds

What it does, every step kept in the run folder `--out` so that a rerun resumes (a finished
training is never trained again, a measured latency never measured again):

1. Data: the hard preset (`archspec data synth --preset hard`, detection/synthetic.py) at the
   benchmark's image size.
2. Candidates: `--candidates` distinct backbones of MAE-DET's k1kxk1 space (Sun et al., MAE-DET,
   ICML 2022, section 3), drawn by seeded random walks of the space's own mutations from a small
   base, kept when their FLOPs lie within [`--min-flops-fraction`, 1] of the budget; the budget
   is the FLOPs of the zoo's ResNet-18 at the input size, which is thus the baseline at the
   budget without any scaling.
3. Every backbone becomes a detector through one template (the tiny FCOS of
   examples/detectors/fcos_tiny.yaml: 64-wide FPN on C3..C5, two-conv GroupNorm towers, the
   preset's classes, the input size) and is trained stand-alone with one fixed schedule,
   `--seeds` times; its score is the mean COCO AP over the seeds.
4. Criteria, each read as "higher predicts a better detector": the MAE-DET score (`maedet`), the
   same plus CR-NAS's receptive-field term (`maedet_rf`), FLOPs, params, predicted latency (kernels
   measured into RUN/latency.sqlite, ONNX Runtime on the CPU), `proxy_train` (SpineNet's proxy
   task, Du et al., CVPR 2020, section 4: brief training at reduced size on a subset, scored by AP
   on a fixed validation subset; `proxy_train_ap`), and the supernet with and without BN
   recalibration when a trained supernet of the space is given (skipped otherwise).
5. Kendall tau-b and Spearman rho of every criterion against stand-alone mean AP (candidates and
   baseline together), and the question a user asks: among the candidates whose *measured*
   end-to-end latency is within ResNet-18's, does the best one by each criterion beat ResNet-18
   after the same training, beyond the seed noise (mean AP difference > 2 standard errors of the
   difference)?

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archspec  # noqa: E402
from archspec.files import RunFolder, atomic_write_text, read_text  # noqa: E402

STOPPED = 3
"""Exit code of a run ended by --stop-after (resume it by running the same command again)."""

CRITERIA = ("maedet", "maedet_rf", "flops", "params", "latency_pred", "proxy_train", "supernet", "supernet_bn")
"""Criteria in table order; each is read as "higher predicts a better detector"."""

OUTPUT_FILES = ("data", "runs", "latency.sqlite", "latency.sqlite.lock", "candidates.json", "criteria.json", "table.md", "results.csv",
                "correlations.csv") + tuple(f"scatter_{name}.png" for name in CRITERIA)


@dataclass(frozen=True)
class Schedule:
    """One training recipe (the stand-alone one, or the proxy's)."""

    epochs: int
    """Passes over the training images."""
    input_size: int
    """Detector input side (images are resized to it)."""
    train_images: int
    """The first N images of the preset's train split."""
    val_images: int
    """The first N images of its val split (a fixed subset)."""
    batch_size: int = 16
    learning_rate: float = 2e-3
    max_steps_per_epoch: int | None = None
    """Cut epochs short (the --mini plumbing run only)."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides the benchmark's numbers (stored in the run folder; a rerun with
    different settings is refused rather than mixing two benchmarks)."""

    candidates: int = 12
    seeds: int = 3
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
    """A trained supernet checkpoint of the space (optional)."""


def mini_config() -> BenchConfig:
    """Two candidates, one seed, a few steps on 64-pixel images: the CI plumbing run."""
    tiny = Schedule(epochs=1, input_size=64, train_images=4, val_images=2, batch_size=2, max_steps_per_epoch=1)
    return BenchConfig(candidates=2, seeds=1, image_size=64, standalone=tiny,
                       proxy=Schedule(epochs=1, input_size=64, train_images=2, val_images=2, batch_size=2,
                                      max_steps_per_epoch=1),
                       latency_repeat=3, kernel_budget_ms=2.0,
                       preset_knobs={"min_side_px": 6.0, "max_objects": 3})


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


def sample_candidates(config: BenchConfig, budget: float) -> list[dict]:
    """`config.candidates` distinct genotypes of the maedet space within the FLOPs window,
    each a seeded random walk of 1..8 mutations from the base (walks of different lengths reach
    both near and far corners of the space)."""
    from archspec.search.space import Rejected, make_space
    from archspec.search_config import MaedetSpace

    space = make_space(MaedetSpace(type="maedet", kernels=[3, 5], max_layers=60), archspec.validate(SPACE_BASE))
    rng = random.Random(f"proxy-fidelity:{config.sample_seed}")
    found: dict[tuple, dict] = {}
    for _ in range(config.candidates * 400):
        if len(found) >= config.candidates:
            break
        try:
            genotype = space.mutate(space.base, rng, rng.randint(1, 8))
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
    return {"name": "resnet18", "genotype": None, "backbone": archspec.to_data(spec)}


def detector(entry: dict, schedule: Schedule, classes: list[str]):
    """The tiny-FCOS template around a backbone entry (one definition for every backbone)."""
    template = archspec.load(ROOT / "examples" / "detectors" / "fcos_tiny.yaml")
    data = archspec.to_data(template)
    data.update({"name": f"fcos_{entry['name']}", "backbone": entry["backbone"], "num_classes": len(classes),
                 "class_names": classes, "input_size": schedule.input_size})
    return archspec.validate(data)


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


def proxy_train_ap(spec, data: Path, run: Path, schedule: Schedule, stopper: Stopper, seed: int = 0) -> float:
    """SpineNet-style proxy score (Du et al., CVPR 2020, section 4): the AP after a brief training
    from scratch at reduced input size (`spec`'s input_size is the proxy's) on the first
    `train_images` images, on a fixed validation subset (the first `val_images`). The `proxy_train`
    evaluator (search/proxy_train.py, `evaluator: {type: proxy_train, ...}`) computes the same
    score inside a search; at merge this function can call it instead."""
    return trained_ap(spec, data, run, schedule, seed, stopper)


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


def supernet_scores(backbones: list[dict], config: BenchConfig) -> dict[str, dict] | None:
    """Supernet AP with and without BN recalibration; None (with the reason printed) when no
    trained supernet of the space is given."""
    if config.supernet is None:
        print("supernet criteria skipped: no trained supernet of the maedet space (BenchConfig.supernet; "
              "archspec.search.supernet_eval covers the detnas and crnas spaces)", file=sys.stderr)
        return None
    raise SystemExit("--supernet: scoring maedet-space paths needs a maedet supernet, which "
                     "archspec.search.supernet_eval does not train yet")


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

    settings = out / "config.json"
    # seeds and candidates only say how much of the same deterministic sequence to use: a run may
    # grow or shrink them and keep every training it has
    fixed = {key: value for key, value in asdict(config).items() if key not in ("seeds", "candidates")}
    wanted = json.dumps(fixed, indent=1, sort_keys=True)
    if settings.exists() and read_text(settings, kind="benchmark settings") != wanted:
        raise SystemExit(f"{out}: holds a benchmark with other settings ({settings}); choose another --out")
    atomic_write_text(settings, wanted)
    preset = HardPreset(num_train=max(config.standalone.train_images, config.proxy.train_images),
                        num_val=max(config.standalone.val_images, config.proxy.val_images),
                        image_size=config.image_size, seed=config.data_seed, **config.preset_knobs)
    data = out / "data" / "full"
    if not (data / "annotations" / "instances_val.json").exists():
        synthesize_hard(data, preset)
    classes = [c["name"] for c in json.loads(read_text(data / "annotations" / "instances_val.json",
                                                       kind="annotations", max_bytes=1 << 30))["categories"]]
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
    """One training: a detector spec (as data), its data, its run folder, schedule and seed."""

    key: str
    proxy: bool
    """A proxy_train score (else a stand-alone training)."""
    spec: dict
    data: str
    run: str
    schedule: Schedule
    seed: int


def score_task(task: Task, stopper: Stopper) -> float:
    spec, data, run = archspec.validate(task.spec), Path(task.data), Path(task.run)
    if task.proxy:
        return proxy_train_ap(spec, data, run, task.schedule, stopper, seed=task.seed)
    return trained_ap(spec, data, run, task.schedule, task.seed, stopper)


def run_task(task: Task, threads: int = 1) -> float:
    """A training in a worker process (`--jobs`): its AP."""
    import torch

    torch.set_num_threads(threads)
    return score_task(task, Stopper(None))


def tasks_of(backbones: list[dict], config: BenchConfig, classes: list[str], out: Path) -> list[Task]:
    """Every training, seed-major (all backbones' seed 0 and the proxies first): a run cut short
    by the clock has whole seeds to report."""
    standalone, proxy = out / "data" / "standalone", out / "data" / "proxy"
    tasks = []
    for seed in range(config.seeds):
        for entry in backbones:
            spec = archspec.to_data(detector(entry, config.standalone, classes))
            tasks.append(Task(f"{entry['name']}:{seed}", False, spec, str(standalone), str(out / "runs" / f"{entry['name']}_seed{seed}"),
                              config.standalone, seed))
        if seed == 0:
            for entry in backbones:
                spec = archspec.to_data(detector(entry, config.proxy, classes))
                tasks.append(Task(f"{entry['name']}:proxy", True, spec, str(proxy), str(out / "runs" / f"proxy_{entry['name']}"),
                                  config.proxy, 0))
    return tasks


def train_all(tasks: list[Task], stopper: Stopper, jobs: int, threads: int) -> dict[str, float]:
    """AP of every task; finished ones are read back. With `jobs` > 1 the trainings run in that
    many processes of `threads` torch threads each; each training is seeded, so the results do not
    depend on `jobs` (the number of threads may change the last digits: keep it fixed)."""
    if jobs <= 1:
        return {t.key: score_task(t, stopper) for t in tasks}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = {t.key: score_task(t, stopper) for t in tasks if (Path(t.run) / "result.json").exists()}
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
    print(f"{len(backbones) - 1} candidates of the maedet space within [{config.min_flops_fraction:g}, 1] x "
          f"ResNet-18's {budget / 1e9:.3f} GFLOPs (2 x MACs) at {config.image_size} px", file=sys.stderr)
    criteria = cached_criteria(out, config, backbones)
    subset_data(full, out / "data" / "standalone", config.standalone)
    subset_data(full, out / "data" / "proxy", config.proxy)
    (out / "runs").mkdir(exist_ok=True)
    aps = train_all(tasks_of(backbones, config, classes, out), stopper, jobs, threads)
    rows = []
    for entry in backbones:
        name = entry["name"]
        seeds = [aps[f"{name}:{seed}"] for seed in range(config.seeds)]
        mean, std = mean_std(seeds)
        rows.append({"name": name, "genotype": entry["genotype"], **criteria[name], "proxy_train": aps[f"{name}:proxy"],
                     "supernet": None, "supernet_bn": None, "aps": seeds, "ap_mean": mean, "ap_std": std})
    supernet = supernet_scores(backbones, config)
    if supernet:
        for row in rows:
            row.update(supernet[row["name"]])
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
    base = next(row for row in rows if row["name"] == "resnet18")
    fitting = [row for row in rows if row["name"] != "resnet18"
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
        verdicts.append(verdict(criterion, fitting, base, config.seeds))
    stds = [row["ap_std"] for row in rows]
    figures = {"baseline_ap": base["ap_mean"], "baseline_std": base["ap_std"],
               "mean_seed_std": sum(stds) / len(stds), "ap_min": min(ap), "ap_max": max(ap),
               "candidates_fitting_latency": len(fitting)}
    return {"correlations": correlations, "verdicts": verdicts, "figures": figures,
            "markdown": markdown(rows, correlations, verdicts, figures, config)}


def verdict(criterion: str, fitting: list[dict], base: dict, seeds: int) -> dict:
    """Whether the candidate a criterion ranks first (among those within ResNet-18's measured
    latency) beats ResNet-18 by more than 2 standard errors of the AP difference."""
    scored = [row for row in fitting if row.get(criterion) is not None]
    if not scored:
        return {"criterion": criterion, "pick": None, "difference": None, "noise": None, "beats": None}
    pick = max(scored, key=lambda row: (row[criterion], row["name"]))
    difference = pick["ap_mean"] - base["ap_mean"]
    noise = math.sqrt(pick["ap_std"] ** 2 / seeds + base["ap_std"] ** 2 / seeds)
    beats = difference > 2 * noise if seeds > 1 else None  # one seed: no noise estimate, no verdict
    return {"criterion": criterion, "pick": pick["name"], "difference": difference, "noise": noise, "beats": beats}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows, correlations, verdicts, figures, config: BenchConfig) -> str:
    s, p = config.standalone, config.proxy
    lines = [f"## Proxy fidelity: {len(rows) - 1} maedet-space candidates + ResNet-18, {config.seeds} seed(s)", "",
             f"Stand-alone: tiny FCOS, {s.epochs} epochs, {s.input_size} px, {s.train_images} train / "
             f"{s.val_images} val images of the hard preset. Proxy: {p.epochs} epochs, {p.input_size} px, "
             f"{p.train_images} / {p.val_images} images.", "",
             "| backbone | GFLOPs | Mparams | maedet | maedet_rf | lat pred ms | lat meas ms | proxy AP | AP mean | AP std |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['flops'] / 1e9:.3f} | {row['params'] / 1e6:.2f} | {row['maedet']:.1f} | "
                     f"{row['maedet_rf']:.1f} | {row['latency_pred']:.2f} | {row['latency_measured']:.2f} | "
                     f"{row['proxy_train']:.3f} | {row['ap_mean']:.3f} | {row['ap_std']:.3f} |")
    lines += ["", "| criterion | Kendall tau-b | Spearman | n | best within R18 latency | AP diff vs R18 | "
              "2 x noise | beats R18? |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_name = {v["criterion"]: v for v in verdicts}
    for c in correlations:
        v = by_name.get(c["criterion"], {})
        beats = v.get("beats")
        answer = "skipped" if c["n"] < 2 else ("n/a (1 seed)" if beats is None and v.get("pick") else
                                                "no candidate fits" if not v.get("pick") else
                                                "yes" if beats else "no")
        noise = v.get("noise")
        lines.append(f"| {c['criterion']} | {_fmt(c['kendall_tau'])} | {_fmt(c['spearman'])} | {c['n']} | "
                     f"{_fmt(v.get('pick'))} | {_fmt(v.get('difference'))} | "
                     f"{_fmt(2 * noise if noise is not None else None)} | {answer} |")
    f = figures
    lines += ["", f"ResNet-18 AP {f['baseline_ap']:.3f} +- {f['baseline_std']:.3f} (std over seeds); mean seed std "
              f"{f['mean_seed_std']:.3f}; AP range {f['ap_min']:.3f}..{f['ap_max']:.3f}; "
              f"{f['candidates_fitting_latency']} candidates within ResNet-18's measured latency."]
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
    writer.writerow(["criterion", "kendall_tau", "spearman", "n", "pick", "ap_difference", "noise", "beats_resnet18"])
    verdicts = {v["criterion"]: v for v in report["verdicts"]}
    for c in report["correlations"]:
        v = verdicts.get(c["criterion"], {})
        writer.writerow([c["criterion"], c["kendall_tau"], c["spearman"], c["n"], v.get("pick"), v.get("difference"),
                         v.get("noise"), v.get("beats")])
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
            colour = "tab:red" if row["name"] == "resnet18" else "tab:blue"
            axes.errorbar(row[name], row["ap_mean"], yerr=row["ap_std"], fmt="o", color=colour, ms=4, capsize=2)
        axes.set_xlabel(name)
        axes.set_ylabel("stand-alone AP (mean over seeds)")
        axes.set_title(f"{name}: tau {_fmt(c['kendall_tau'], 2)}, rho {_fmt(c['spearman'], 2)} (red: ResNet-18)",
                       fontsize=9)
        figure.tight_layout()
        with atomic_path(out / f"scatter_{name}.png") as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)


def parse_args(argv=None) -> tuple[Path, BenchConfig, int | None, int, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Run folder (rerun the command to resume).")
    parser.add_argument("--candidates", type=int, default=None, help="Candidates of the space [12].")
    parser.add_argument("--seeds", type=int, default=None, help="Stand-alone trainings per backbone [3].")
    parser.add_argument("--epochs", type=int, default=None, help="Stand-alone epochs [24].")
    parser.add_argument("--batch-size", type=int, default=None, help="Batch size of both schedules [16].")
    parser.add_argument("--size", type=int, default=None,
                        help="Image side of the generated set and the stand-alone input size [128].")
    parser.add_argument("--train-images", type=int, default=None, help="Stand-alone training images [512].")
    parser.add_argument("--val-images", type=int, default=None, help="Stand-alone validation images [128].")
    parser.add_argument("--proxy-epochs", type=int, default=None, help="Proxy-training epochs [3].")
    parser.add_argument("--proxy-size", type=int, default=None, help="Proxy input size [96].")
    parser.add_argument("--proxy-train-images", type=int, default=None, help="Proxy training images [256].")
    parser.add_argument("--proxy-val-images", type=int, default=None, help="Proxy validation images [64].")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                        help="A hard-preset setting (as `archspec data synth --knob`), e.g. min_side_px=6.")
    parser.add_argument("--min-flops-fraction", type=float, default=None, help="[0.6]")
    parser.add_argument("--mini", action="store_true", help="Plumbing run: 2 candidates, 1 seed, a few steps.")
    parser.add_argument("--stop-after", type=int, default=None, help="End after N trainings (exit code 3).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (with --jobs 1).")
    parser.add_argument("--jobs", type=int, default=1, help="Trainings run at once, in processes of one thread.")
    args = parser.parse_args(argv)
    config = mini_config() if args.mini else BenchConfig()
    changes = {key: value for key, value in (("candidates", args.candidates), ("seeds", args.seeds),
                                              ("min_flops_fraction", args.min_flops_fraction),
                                              ("image_size", args.size)) if value is not None}
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

"""Supernet benchmark (issue 13): SPOS training throughput, per-candidate evaluation time (BN
recalibration and evaluation apart), and how well supernet AP ranks paths: Kendall tau between
the supernet AP of >= 10 paths (with and without BN recalibration) and the AP of the same paths
trained stand-alone from scratch for a short fixed schedule.

    python benchmarks/supernet.py                        # the tiny DetNAS preset, 64 px, one class
    python benchmarks/supernet.py --config examples/search/detnas_supernet.yaml --classes 3 --size 128

Paths ranked: every all-one-choice path first (DetNAS: all 3x3, all 5x5, ...; CR-NAS: the
extreme allocations at dilation 1 and 3), whose statistics are furthest from the supernet's
mixture, then seeded random ones. Per path it also prints how far the recalibrated BatchNorm
variances are from the shared ones (mean |log ratio| over the path's BN channels), and the AP
recalibrated on another calibration subset (`subset_seed` + 1): the AP difference recalibration
makes means something only where it exceeds the one the choice of calibration images makes.

Everything is seeded; the data is the synthetic shapes set (made in --work if missing, with
--classes, --size and the object sizes given). Paper scale (COCO, long schedules) is a matter of
the flags. Figures measured for the issue are in the closing note of docs/supernet.md.
"""

from __future__ import annotations

import argparse
import math
import os
import random
from pathlib import Path

import torch

# One Kendall tau-b for the benchmarks (this script's folder is on sys.path when it runs); an
# undefined tau (a ranking of all ties) is nan, not 0.
from proxy_fidelity import kendall_tau_b as kendall_tau  # noqa: E402


TINY_DETNAS = """
type: search
name: tiny_detnas
base:
  type: staged
  stem: [{type: conv, out_channels: 8, kernel: 3, stride: 2, bias: true}]
  stages:
    - {block: {type: shufflenet_v2}, depth: 1, out_channels: 16, stride: 2}
    - {block: {type: shufflenet_v2}, depth: 1, out_channels: 32, stride: 2}
    - {block: {type: shufflenet_v2}, depth: 2, out_channels: 64, stride: 2}
    - {block: {type: shufflenet_v2}, depth: 1, out_channels: 128, stride: 2}
space: {type: detnas}
detector:
  neck: {type: fpn, in_features: [C3, C4, C5], min_level: 3, max_level: 5, channels: 32, extra_from: output}
  head: {type: fcos, convs: 1}
  num_classes: 1
  input_size: 64
  postprocess: {score_threshold: 0.05, pre_nms_top_k: 100, max_detections: 20}
strategy: {type: detnas_evolution}
evaluator: {type: supernet, run: run}
budgets: {input_size: 64}
"""
"""The default: a 5-layer DetNAS supernet (4 choices a layer) small enough to train on a CPU in
minutes until its paths' APs are well above the noise of the validation set."""


def ranked_paths(space, count: int, seed: int) -> list:
    """The paths furthest from the supernet's mixture first, then seeded random ones."""
    if hasattr(space, "allocations"):
        extremes = [a + (d,) * space.total for a in (space.allocations[0], space.allocations[-1])
                    for d in (min(space.config.dilations), max(space.config.dilations))]
    else:
        extremes = [(c,) * len(space.base) for c in range(len(space.choices))]
    rng = random.Random(f"bench:{seed}")
    found = list(dict.fromkeys(extremes))
    while len(found) < count:
        genotype = space.random(rng)
        if genotype not in found:
            found.append(genotype)
    return found[:count]


def statistics_shift(evaluator, genotype) -> float:
    """Mean |log(recalibrated variance / shared variance)| over the path's BN channels (the
    shared statistics are put back afterwards)."""
    norms = [m for module in evaluator.supernet.path_modules(genotype) for m in module.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in norms]
    evaluator.recalibrate(norms)
    shifts = torch.cat([(m.running_var / var).log().abs() for m, (_, var, _, _) in zip(norms, saved)])
    for m, (mean, var, count, momentum) in zip(norms, saved):
        m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        m.momentum = momentum
    return float(shifts.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="Search config (default: the tiny DetNAS preset).")
    parser.add_argument("--data", default=None, help="COCO-format folder (default: synthesise one in --work).")
    parser.add_argument("--work", default="runs/bench_supernet", help="Folder for data, runs and checkpoints.")
    parser.add_argument("--train-images", type=int, default=256, help="Synthetic training images.")
    parser.add_argument("--val-images", type=int, default=96, help="Synthetic validation images.")
    parser.add_argument("--classes", type=int, default=1, help="Synthetic shape kinds (the config's num_classes).")
    parser.add_argument("--object-size", type=float, nargs=2, default=(0.25, 0.55),
                        help="Synthetic object sides, as fractions of the image side.")
    parser.add_argument("--epochs", type=int, default=16, help="Supernet epochs.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--paths", type=int, default=10, help="Paths ranked (>= 10 for the tau).")
    parser.add_argument("--standalone-epochs", type=int, default=6, help="Stand-alone schedule per path.")
    parser.add_argument("--calibration", type=int, default=64, help="BN calibration images per path.")
    parser.add_argument("--validation", type=int, default=96, help="Validation images per path.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from archspec.detection.synthetic import synthesize
    from archspec.detection.train import TrainOptions, train
    from archspec.search.supernet_eval import SupernetEvaluator
    from archspec.search.supernet_train import train_supernet
    from archspec.search_config import load_search_config

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else work / "data"
    config_file = Path(args.config) if args.config else work / "tiny_detnas.yaml"
    if not args.config:
        config_file.write_text(TINY_DETNAS, encoding="utf-8")
    config, base = load_search_config(config_file)
    size = config.detector.input_size if isinstance(config.detector.input_size, int) else config.detector.input_size[0]
    if not args.data and not (data / "annotations").exists():
        synthesize(data, num_train=args.train_images, num_val=args.val_images, image_size=size, seed=args.seed,
                   num_classes=args.classes, max_objects=2, min_size=args.object_size[0],
                   max_size=args.object_size[1])
    run = work / f"{config.name}_supernet"
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                           warmup_steps=10, seed=args.seed)
    print(f"config {config_file}: torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    result = train_supernet(config, base, data, run, options, resume=(run / "last.pt").exists(), progress=False)
    if result.images:
        print(f"supernet training: {result.images} images in {result.seconds:.1f} s = "
              f"{result.images_per_second:.2f} images/s (CPU, batch {args.batch_size}, {size}px)", flush=True)

    settings = config.evaluator.model_copy(update={"run": str(run), "data": str(data),
                                                   "calibration_images": args.calibration,
                                                   "validation_images": args.validation})
    config = config.model_copy(update={"evaluator": settings})
    from archspec.search.space import make_space

    space = make_space(config.space, base)
    evaluator = SupernetEvaluator(config, base, space)
    # the same supernet, other calibration images: how far AP moves with the images alone
    resampled = evaluator.resampled(settings.subset_seed + 1)
    genotypes = ranked_paths(space, args.paths, args.seed)
    rows = []
    for genotype in genotypes:
        shift = statistics_shift(evaluator, genotype)
        recalibrated = evaluator.score_path(genotype, "recalibrate")
        shared = evaluator.score_path(genotype, "supernet")
        other_images = resampled.score_path(genotype, "recalibrate").ap
        spec, _ = evaluator.supernet.subnet(genotype)
        folder = work / "standalone" / "_".join(map(str, genotype))
        if not (folder / "last.pt").exists():  # trained by an earlier run of this script: reused
            torch.manual_seed(args.seed)
            train(spec, data, folder, TrainOptions(epochs=args.standalone_epochs, batch_size=args.batch_size,
                                                   learning_rate=args.lr, warmup_steps=10, seed=args.seed,
                                                   eval_every=args.standalone_epochs), progress=False)
        standalone_ap = _final_ap(folder)
        rows.append((genotype, recalibrated, shared, standalone_ap, other_images))
        print(f"path {','.join(map(str, genotype))}: supernet AP {recalibrated.ap:.4f} (recalibrated; "
              f"{recalibrated.recalibration_seconds:.2f} s + eval {recalibrated.evaluation_seconds:.2f} s; "
              f"{other_images:.4f} on other calibration images), "
              f"{shared.ap:.4f} (shared BN; eval {shared.evaluation_seconds:.2f} s), stand-alone AP {standalone_ap:.4f}; "
              f"BN variance shift {shift:.3f} (x{math.exp(shift):.2f})", flush=True)
    recal = [r[1].ap for r in rows]
    shared = [r[2].ap for r in rows]
    alone = [r[3] for r in rows]
    print(f"\nper candidate: recalibration {sum(r[1].recalibration_seconds for r in rows) / len(rows):.2f} s "
          f"({args.calibration} images), evaluation {sum(r[1].evaluation_seconds for r in rows) / len(rows):.2f} s "
          f"({args.validation} images)")
    print(f"recalibrated AP >= shared-BN AP on {sum(a >= b for a, b in zip(recal, shared))}/{len(rows)} paths; "
          f"mean AP {sum(recal) / len(rows):.4f} vs {sum(shared) / len(rows):.4f}; mean |difference| "
          f"{sum(abs(a - b) for a, b in zip(recal, shared)) / len(rows):.4f}, against "
          f"{sum(abs(a - r[4]) for a, r in zip(recal, rows)) / len(rows):.4f} between two calibration subsets")
    print(f"Kendall tau recalibrated vs shared-BN supernet AP: {kendall_tau(recal, shared):+.3f}; stand-alone AP "
          f"range {min(alone):.4f}..{max(alone):.4f}")
    print(f"Kendall tau vs stand-alone ({args.standalone_epochs} epochs): recalibrated {kendall_tau(recal, alone):+.3f}, "
          f"shared BN {kendall_tau(shared, alone):+.3f} over {len(rows)} paths; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _final_ap(run: Path) -> float:
    from archspec.detection.checkpoint import load_checkpoint

    history = load_checkpoint(run / "last.pt")["history"]
    return float(history[-1].get("AP", 0.0))


if __name__ == "__main__":
    main()

"""Supernet benchmark (issue 13): SPOS training throughput, per-candidate evaluation time (BN
recalibration and evaluation apart), and how well supernet AP ranks paths: Kendall tau between
the supernet AP of >= 10 paths (with and without BN recalibration) and the AP of the same paths
trained stand-alone from scratch for a short fixed schedule.

    python benchmarks/supernet.py                                   # detnas example, CPU scale
    python benchmarks/supernet.py --config examples/search/crnas_supernet.yaml --paths 12

Everything is seeded; the data is the synthetic shapes set (made in --work if missing). Paper
scale (COCO, long schedules) is a matter of the flags; the defaults finish in minutes on a
laptop-class CPU. Figures measured for the issue are in the closing note of docs/supernet.md.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties in either ranking handled), in [-1, 1]."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="examples/search/detnas_supernet.yaml")
    parser.add_argument("--data", default=None, help="COCO-format folder (default: synthesise one in --work).")
    parser.add_argument("--work", default="runs/bench_supernet", help="Folder for data, runs and checkpoints.")
    parser.add_argument("--train-images", type=int, default=96, help="Synthetic training images.")
    parser.add_argument("--val-images", type=int, default=32, help="Synthetic validation images.")
    parser.add_argument("--epochs", type=int, default=4, help="Supernet epochs.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--paths", type=int, default=10, help="Paths ranked (>= 10 for the tau).")
    parser.add_argument("--standalone-epochs", type=int, default=2, help="Stand-alone schedule per path.")
    parser.add_argument("--calibration", type=int, default=32, help="BN calibration images per path.")
    parser.add_argument("--validation", type=int, default=32, help="Validation images per path.")
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
    data = Path(args.data) if args.data else work / "data"
    config, base = load_search_config(args.config)
    size = config.detector.input_size if isinstance(config.detector.input_size, int) else config.detector.input_size[0]
    if not args.data and not (data / "annotations").exists():
        synthesize(data, num_train=args.train_images, num_val=args.val_images, image_size=size, seed=args.seed)
    run = work / f"{config.name}_supernet"
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                           warmup_steps=10, seed=args.seed)
    print(f"config {args.config}: torch threads {torch.get_num_threads()}")
    result = train_supernet(config, base, data, run, options, resume=(run / "last.pt").exists(), progress=False)
    if result.images:
        print(f"supernet training: {result.images} images in {result.seconds:.1f} s = "
              f"{result.images_per_second:.2f} images/s (CPU, batch {args.batch_size}, {size}px)")

    settings = config.evaluator.model_copy(update={"run": str(run), "data": str(data),
                                                   "calibration_images": args.calibration,
                                                   "validation_images": args.validation})
    config = config.model_copy(update={"evaluator": settings})
    from archspec.search.space import make_space

    space = make_space(config.space, base)
    evaluator = SupernetEvaluator(config, base, space)
    rng = random.Random(f"bench:{args.seed}")
    genotypes = list(dict.fromkeys(space.random(rng) for _ in range(args.paths * 3)))[:args.paths]
    rows = []
    for genotype in genotypes:
        recalibrated = evaluator.score_path(genotype, "recalibrate")
        shared = evaluator.score_path(genotype, "supernet")
        spec, _ = evaluator.supernet.subnet(genotype)
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        alone = train(spec, data, work / "standalone" / "_".join(map(str, genotype)),
                      TrainOptions(epochs=args.standalone_epochs, batch_size=args.batch_size, learning_rate=args.lr,
                                   warmup_steps=10, seed=args.seed, eval_every=args.standalone_epochs),
                      progress=False) if not (work / "standalone" / "_".join(map(str, genotype)) / "last.pt").exists() \
            else None
        standalone_ap = _final_ap(work / "standalone" / "_".join(map(str, genotype)))
        rows.append((genotype, recalibrated, shared, standalone_ap, time.perf_counter() - start if alone else 0.0))
        print(f"path {','.join(map(str, genotype))}: supernet AP {recalibrated.ap:.4f} (recalibrated; "
              f"{recalibrated.recalibration_seconds:.2f} s + eval {recalibrated.evaluation_seconds:.2f} s), "
              f"{shared.ap:.4f} (shared BN; eval {shared.evaluation_seconds:.2f} s), stand-alone AP {standalone_ap:.4f}")
    recal = [r[1].ap for r in rows]
    shared = [r[2].ap for r in rows]
    alone = [r[3] for r in rows]
    print(f"\nper candidate: recalibration {sum(r[1].recalibration_seconds for r in rows) / len(rows):.2f} s "
          f"({args.calibration} images), evaluation {sum(r[1].evaluation_seconds for r in rows) / len(rows):.2f} s "
          f"({args.validation} images)")
    print(f"recalibrated AP >= shared-BN AP on {sum(a >= b for a, b in zip(recal, shared))}/{len(rows)} paths; "
          f"mean AP {sum(recal) / len(rows):.4f} vs {sum(shared) / len(rows):.4f}")
    print(f"Kendall tau vs stand-alone ({args.standalone_epochs} epochs): recalibrated {kendall_tau(recal, alone):+.3f}, "
          f"shared BN {kendall_tau(shared, alone):+.3f} over {len(rows)} paths")


def _final_ap(run: Path) -> float:
    from archspec.detection.checkpoint import load_checkpoint

    history = load_checkpoint(run / "last.pt")["history"]
    return float(history[-1].get("AP", 0.0))


if __name__ == "__main__":
    main()

"""Train the tiny FCOS (examples/detectors/fcos_tiny.yaml: zoo ResNet-18 + FPN + FCOS) on the
synthetic shapes set on this machine's CPU, and print mAP@0.5 and the time it took.

    .venv/bin/python benchmarks/train_fcos_synth.py [--epochs 24] [--threads 2] [--out runs/bench_fcos]

The acceptance target of issue 7 is mAP@0.5 >= 0.5 within 15 minutes on 2 CPU cores. Evaluation
is COCOeval (pycocotools) on the 64-image validation split, with the post-processing of the
deployed graph (NMS + top-k).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archspec  # noqa: E402
from archspec.detection.synthetic import synthesize  # noqa: E402
from archspec.detection.train import TrainOptions, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_fcos")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    run = args.out / "run"
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    synthesize(data, num_train=256, num_val=64, seed=args.seed)
    spec = archspec.load(ROOT / "examples" / "detectors" / "fcos_tiny.yaml")
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                           seed=args.seed, eval_every=args.eval_every)
    result = train(spec, data, run, options, progress=sys.stderr.isatty())
    elapsed = time.perf_counter() - started
    best = result.best or {}
    print(json.dumps({"epochs": args.epochs, "threads": args.threads, "train_and_eval_seconds": round(elapsed, 1),
                      "best_epoch": best.get("epoch"), "AP50": round(best.get("AP50", 0.0), 4),
                      "AP": round(best.get("AP", 0.0), 4), "final": result.history[-1]}, indent=2))
    print(f"mAP@0.5 {best.get('AP50', 0.0):.3f} (target >= 0.5) in {elapsed / 60:.1f} min (target <= 15) "
          f"on {args.threads} threads")


if __name__ == "__main__":
    main()

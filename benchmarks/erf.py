"""Effective receptive fields of ResNet-50 and CR-ResNet-50 at C3..C5 (compiler/erf.py).

    python benchmarks/erf.py [--size 224] [--images 4] [--seed 0] [--json FILE]

CR-NAS (Liang et al., ICLR 2020) reallocates ResNet-50's blocks and dilates the deep ones so that
each FPN level's receptive field fits the objects assigned to it. This prints, per level, the
radius holding 50% and 90% of the centre unit's input-gradient mass (Luo et al., NeurIPS 2016),
the theoretical field and RetinaNet's anchor sides, for examples/backbones/resnet50.yaml and
examples/backbones/cr_resnet50.yaml (this repository's stand-in for the searched model).

What it is and is not: random weights (PyTorch's default initialisation, seeded) and random
standard-normal images, a few of them at a small input, so it runs in a minute on a CPU. Trained
weights (--weights of `archspec erf`) give different, usually larger, effective fields; the
comparison here is between architectures at equal initialisation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import archspec
from archspec.compiler.erf import effective_receptive_fields

ROOT = Path(__file__).resolve().parents[1]
SPECS = ("resnet50", "cr_resnet50")
LEVELS = ("C3", "C4", "C5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input side")
    parser.add_argument("--images", type=int, default=4, help="random images to average over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    for name in SPECS:
        spec = archspec.load(ROOT / "examples" / "backbones" / f"{name}.yaml")
        start = time.perf_counter()
        erfs = effective_receptive_fields(spec, (args.size, args.size), count=args.images, seed=args.seed,
                                          outputs=LEVELS)
        seconds = time.perf_counter() - start
        rows += [{"spec": name, **erf.as_dict(), "seconds": round(seconds, 1)} for erf in erfs]
    print(f"ERF at {args.size}x{args.size}, {args.images} random images, random weights (seed {args.seed})")
    header = f"{'spec':<12} {'level':<5} {'stride':>6} {'r50':>6} {'r90':>6} {'side90':>7} {'theor. RF':>9}  anchors"
    print(header)
    print("-" * len(header))
    for row in rows:
        anchors = " / ".join(f"{a:.0f}" for a in row["anchor_sides"])
        print(f"{row['spec']:<12} {row['name']:<5} {row['stride']:>6} {row['radius50']:>6.1f} {row['radius90']:>6.1f} "
              f"{row['side90']:>7.1f} {row['theoretical_rf']:>9}  {anchors}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

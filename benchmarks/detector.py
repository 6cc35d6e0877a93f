"""End-to-end detection latency, PyTorch eager vs ONNX Runtime in one run, and detector sizes
next to the SpineNet paper's.

    .venv/bin/python benchmarks/detector.py [--repeat 5] [--threads 2] [--size 640]

For RetinaNet on ResNet-50-FPN and on SpineNet-49 at 640x640, batch 1: eager runs the network,
the decoding and `detection.postprocess.select_detections` (NMS); ORT runs the exported file,
which holds all three. The weights are random, with the classifier bias set to a 5% prior so
that NMS sees a realistic number of candidates (printed). Runs alternate between the two
runtimes and the median is reported, with the ratio ORT / eager taken from the same run.
Parameter counts are analytic (`compiler.costs`) and equal the modules' (tests/test_detector.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archspec  # noqa: E402
from archspec.compiler import costs  # noqa: E402
from archspec.compiler.runtime import create_session  # noqa: E402
from archspec.detection.export import export_detector  # noqa: E402
from archspec.detection.model import build_detector  # noqa: E402
from archspec.detection.postprocess import detect  # noqa: E402

PAPER_PARAMS = {"retinanet_spinenet49": 28.5e6, "retinanet_spinenet49s": 12.0e6}
"""SpineNet paper (Du et al., CVPR 2020), Table 3: RetinaNet at 640x640."""
LATENCY_SPECS = ("retinanet_r50_fpn", "retinanet_spinenet49")
SIZE_SPECS = ("retinanet_r50_fpn", "retinanet_spinenet49", "retinanet_spinenet49s", "fcos_r50_fpn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--prior", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"threads": args.threads, "size": args.size, "sizes": sizes(), "latency": {}}
    for name in LATENCY_SPECS:
        report["latency"][name] = latency(name, args)
    print(json.dumps(report, indent=2))
    print_table(report)


def sizes() -> dict:
    out = {}
    for name in SIZE_SPECS:
        spec = archspec.load(ROOT / "examples" / "detectors" / f"{name}.yaml")
        counts = costs(spec)
        row = {"params": counts.params, "macs": counts.macs, "input": list(spec.image_size)}
        if name in PAPER_PARAMS:
            row["paper_params"] = PAPER_PARAMS[name]
            row["ratio_to_paper"] = round(counts.params / PAPER_PARAMS[name], 4)
        out[name] = row
    return out


def latency(name: str, args) -> dict:
    spec = archspec.load(ROOT / "examples" / "detectors" / f"{name}.yaml")
    spec = spec.model_copy(update={"input_size": (args.size, args.size)})
    torch.manual_seed(0)
    model = build_detector(spec).eval()
    with torch.no_grad():
        model.head.cls_out.bias.fill_(-math.log((1 - args.prior) / args.prior))
    images = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = export_detector(spec, Path(tmp) / "det.onnx", module=model)
        export_seconds = time.perf_counter() - started
        session = create_session(path, provider="cpu", threads=args.threads)
        feed = {"images": images.numpy()}
        eager, ort = [], []
        for step in range(args.warmup + args.repeat):
            began = time.perf_counter()
            _, _, labels = detect(model, images)
            middle = time.perf_counter()
            session.run(None, feed)
            ended = time.perf_counter()
            if step >= args.warmup:
                eager.append((middle - began) * 1e3)
                ort.append((ended - middle) * 1e3)
        with torch.no_grad():
            _, scores = model.candidates(model(images))
    candidates = int((scores > spec.postprocess.score_threshold).sum())
    eager_ms, ort_ms = statistics.median(eager), statistics.median(ort)
    return {"eager_ms": round(eager_ms, 1), "ort_ms": round(ort_ms, 1), "ort_over_eager": round(ort_ms / eager_ms, 3),
            "detections": int((labels >= 0).sum()), "nms_candidates": candidates,
            "export_seconds": round(export_seconds, 1), "repeat": args.repeat}


def print_table(report: dict) -> None:
    print(f"\nend-to-end latency at {report['size']}x{report['size']}, batch 1, {report['threads']} threads "
          "(network + decoding + NMS; median):")
    for name, row in report["latency"].items():
        print(f"  {name:24s} eager {row['eager_ms']:9.1f} ms   ORT {row['ort_ms']:9.1f} ms   "
              f"ORT/eager {row['ort_over_eager']:.3f}   ({row['nms_candidates']} NMS candidates)")
    print("\ndetector parameters (analytic = module numel):")
    for name, row in report["sizes"].items():
        paper = f"   paper {row['paper_params'] / 1e6:.1f}M (ratio {row['ratio_to_paper']:.3f})" if "paper_params" in row \
            else ""
        print(f"  {name:24s} {row['params'] / 1e6:7.2f}M params  {row['macs'] / 1e9:7.1f} GMACs at "
              f"{row['input'][0]}x{row['input'][1]}{paper}")


if __name__ == "__main__":
    main()

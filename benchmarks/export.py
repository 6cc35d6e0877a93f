"""ONNX export: the direct IR-to-ONNX writer against the dynamo exporter, end to end and the export
step alone, with parity against torch.

    .venv/bin/python benchmarks/export.py [--specs resnet50 spinenet49 retinanet_r50_fpn] [--repeat 3]

For each spec (backbones at 224x224, detectors at their own input size):

* end to end: ``archspec export SPEC -o FILE --exporter X`` in a fresh interpreter, wall time
  (median of `--repeat`), random weights (the command's default). The direct exporter never
  imports torch on this path; dynamo builds the module and traces it.
* start-up and work: the same command driven in a fresh interpreter that times its own imports
  (archspec's CLI, the detection package, the export module, onnx) apart from the export (`work`:
  loading the spec, writing, checking, saving), in wall and in CPU time of the process (all its
  threads; the steadier figure on a loaded machine). The target of issue 14 is work < 1 s for
  resnet50.
* export step alone, in process, from one built torch module (same weights for both exporters):
  `export_spec` / `export_detector` with ``module=``; for direct also with random weights.
* parity: ONNX Runtime on the direct and the dynamo file against the torch module on one random
  input, max |diff| / max |ref| over the outputs (backbones: every output; detectors: the top-k
  candidate scores, sorted per image, and boxes compared as sets, with the head's outputs rescaled
  so that scores spread: `spread_scores`).

Timings on a shared machine are noisy: compare ratios from one run; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SPECS = ("resnet50", "spinenet49", "retinanet_r50_fpn")

DRIVER = """
import json, sys, time
start, start_cpu = time.perf_counter(), time.process_time()
import onnx  # noqa: F401
import archspec.cli, archspec.detection  # noqa: F401
import archspec.compiler.export  # noqa: F401
imported, imported_cpu = time.perf_counter(), time.process_time()
from archspec.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
done, done_cpu = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": imported - start, "work_s": done - imported, "import_cpu_s": imported_cpu - start_cpu,
                  "work_cpu_s": done_cpu - imported_cpu, "torch": "torch" in sys.modules}))
"""


def spec_path(name: str) -> Path:
    for folder in ("backbones", "detectors"):
        path = ROOT / "examples" / folder / f"{name}.yaml"
        if path.exists():
            return path
    raise SystemExit(f"no spec named {name!r} in examples/backbones or examples/detectors")


def end_to_end(path: Path, exporter: str, folder: Path, repeat: int) -> dict:
    """Wall of the CLI in a fresh interpreter, and the driver's import/work split (medians)."""
    out = folder / f"{path.stem}_{exporter}_cli.onnx"
    argv = ["export", str(path), "-o", str(out), "--exporter", exporter]
    walls, imports, works, cpu_imports, cpu_works, torch_loaded = [], [], [], [], [], False
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "archspec.cli", *argv], check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        result = subprocess.run([sys.executable, "-c", DRIVER, *argv], check=True, capture_output=True, text=True)
        split = json.loads(result.stdout.strip().splitlines()[-1])
        imports.append(split["import_s"])
        works.append(split["work_s"])
        cpu_imports.append(split["import_cpu_s"])
        cpu_works.append(split["work_cpu_s"])
        torch_loaded = torch_loaded or split["torch"]
    return {"wall_s": statistics.median(walls), "import_s": statistics.median(imports),
            "work_s": statistics.median(works), "import_cpu_s": statistics.median(cpu_imports),
            "work_cpu_s": statistics.median(cpu_works), "torch_imported": torch_loaded}


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def relative(actual, expected) -> float:
    import numpy as np

    return float(np.abs(actual - expected).max()) / max(float(np.abs(expected).max()), 1e-12)


def spread_scores(detector, size):
    """Head outputs rescaled to class logits of std 2 and box outputs of std 0.5: the
    prior-probability initialisation scores every location alike, and near-equal scores make
    the top-k candidates (hence a parity figure) depend on float rounding."""
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("cls_out", "box_out"):
            getattr(detector.head, name).weight.normal_(0, 0.05, generator=generator)
        dense = detector(torch.rand(1, 3, *size, generator=generator))
        for name, value, target in (("cls_out", dense.class_logits, 2.0), ("box_out", dense.box_regression, 0.5)):
            layer = getattr(detector.head, name)
            layer.weight.mul_(target / float(value.std()))
            layer.bias.normal_(0, 0.1, generator=generator)
    return detector


def set_distance(boxes, reference) -> float:
    """Candidate boxes compared as sets per image (scores tied to float precision may order them
    either way): the largest distance from a box to its nearest reference box, / max|ref|."""
    import numpy as np

    worst = 0.0
    for image in range(boxes.shape[0]):
        gaps = np.abs(boxes[image][:, None, :] - reference[image][None, :, :]).max(-1)
        worst = max(worst, float(gaps.min(1).max()))
    return worst / max(float(np.abs(reference).max()), 1e-12)


def in_process(path: Path, folder: Path, repeat: int, with_dynamo: bool) -> dict:
    """Export-step times and parity from one built module."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    import archspec
    from archspec import compiler

    spec = archspec.load(path)
    torch.manual_seed(0)
    detector = spec.type == "detector"
    if detector:
        from archspec.detection.export import export_detector
        from archspec.detection.model import build_detector

        module = spread_scores(build_detector(spec).eval(), spec.image_size)
        size = spec.image_size

        def export(out, **kw):
            return export_detector(spec, out, **kw)
    else:
        from archspec.compiler.export import export_spec

        module = compiler.build(spec).eval()
        size = (224, 224)

        def export(out, **kw):
            return export_spec(spec, out, input_size=size, **kw)

    row: dict = {}
    direct = folder / f"{path.stem}_direct.onnx"
    row["direct_random_s"] = timed(lambda: export(folder / f"{path.stem}_random.onnx"), repeat)
    row["direct_s"] = timed(lambda: export(direct, module=module), repeat)
    files = {"direct": direct}
    if with_dynamo:
        dynamo = folder / f"{path.stem}_dynamo.onnx"
        row["dynamo_s"] = timed(lambda: export(dynamo, module=module, exporter="dynamo"), 1)
        files["dynamo"] = dynamo
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if detector:
            boxes, scores = module.candidates(module(x))
            reference = {"candidate_boxes": boxes.numpy(), "candidate_scores": np.sort(scores.numpy(), axis=-1)}
        else:
            reference = {k: v.numpy() for k, v in module(x).items()}
    for name, file in files.items():
        model = onnx.load(str(file))
        if detector:  # the candidates feed the NMS tail: read them as outputs
            for value in ("candidate_boxes", "candidate_scores"):
                model.graph.output.append(onnx.helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x.numpy()})))
        if detector:
            got["candidate_scores"] = np.sort(got["candidate_scores"], axis=-1)
            errors = {"scores": relative(got["candidate_scores"], reference["candidate_scores"]),
                      "boxes": set_distance(got["candidate_boxes"], reference["candidate_boxes"])}
            row[f"{name}_parity"] = errors["scores"]
            row[f"{name}_box_parity"] = errors["boxes"]
        else:
            row[f"{name}_parity"] = max(relative(got[k], v) for k, v in reference.items())
        row[f"{name}_mb"] = file.stat().st_size / 2 ** 20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per end-to-end and direct timing (median)")
    parser.add_argument("--skip-dynamo", action="store_true", help="direct exporter only")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    exporters = ["direct"] if args.skip_dynamo else ["direct", "dynamo"]
    rows = {}
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.specs:
            path = spec_path(name)
            row = {f"e2e_{e}": end_to_end(path, e, folder, args.repeat if e == "direct" else 1) for e in exporters}
            row.update(in_process(path, folder, args.repeat, "dynamo" in exporters))
            rows[name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
    print(f"load average after: {os.getloadavg()}\n")
    header = (f"{'spec':<20} {'exporter':<8} {'e2e wall s':>10} {'import s':>9} {'work s':>8} {'work cpu s':>10} "
              f"{'torch':>6} {'step s':>8} {'parity':>9} {'MB':>7}")
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        for exporter in exporters:
            e2e = row[f"e2e_{exporter}"]
            print(f"{name:<20} {exporter:<8} {e2e['wall_s']:>10.2f} {e2e['import_s']:>9.2f} {e2e['work_s']:>8.2f} "
                  f"{e2e['work_cpu_s']:>10.2f} {'yes' if e2e['torch_imported'] else 'no':>6} "
                  f"{row[f'{exporter}_s']:>8.2f} "
                  f"{row[f'{exporter}_parity']:>9.1e} {row[f'{exporter}_mb']:>7.1f}")
        if "dynamo_s" in row:
            e2e = row["e2e_dynamo"]["wall_s"] / row["e2e_direct"]["wall_s"]
            print(f"{'':<20} dynamo/direct: export step {row['dynamo_s'] / row['direct_s']:.1f}x, end to end "
                  f"{e2e:.1f}x; direct with random weights (no module) {row['direct_random_s']:.2f} s")
    print("\nparity: max|ORT - torch| / max|torch| over the outputs (detectors: candidate scores sorted per image; "
          "box parity, boxes as sets, in the JSON rows). step: export from a built module, in process.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

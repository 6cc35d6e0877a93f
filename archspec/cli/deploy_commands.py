"""`archspec export | bench | latency`: ONNX export, latency measurement, latency tables."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from archspec.cli.options import console, guard, max_memory_option, set_option, table
from archspec.io import load

RUNTIME_CHOICES = click.Choice(["ort", "torch", "both"])
PROVIDER_CHOICES = click.Choice(["cpu", "cuda", "tensorrt"])


def _size(text: str | None, default=(224, 224)) -> tuple[int, int]:
    from archspec.sizes import parse_input_size

    return default if text is None else parse_input_size(text)


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .onnx file to write.")
@click.option("--input-size", default=None, metavar="H[xW]",
              help="Input image size [default: 224; a detector's own input_size].")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension symbolic (always on for detectors).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Detector checkpoint (RUN/best.pt) whose weights to export; random weights otherwise.")
@click.option("--opset", type=click.IntRange(7, 30), help="ONNX opset (default: the exporter's).")
@click.option("--exporter", type=click.Choice(["direct", "dynamo"]), default="direct", show_default=True,
              help="direct: the project's IR-to-ONNX writer (no torch tracing; random weights need no torch); "
                   "dynamo: torch.onnx on the built module (legacy TorchScript exporter as its fallback).")
@click.option("--optimize", is_flag=True,
              help="Save ONNX Runtime's basic graph optimizations (constant folding, Conv+BN fusion) in the file.")
@max_memory_option
@set_option
def export(spec_file: Path, output: Path, input_size: str | None, dynamic_batch: bool, weights: Path | None,
           opset: int | None, exporter: str, optimize: bool, max_memory: str | None,
           overrides: tuple[str, ...]) -> None:
    """Export a spec to ONNX, checked with the ONNX checker's full check. The default exporter
    writes the ONNX graph straight from the spec's IR (`--exporter dynamo`: torch.onnx).

    Outputs are named as the spec's outputs; the spec JSON and its fingerprint are stored in the
    file's metadata, so `archspec summary model.onnx` can show what it is. Detectors export the
    whole pipeline: images -> boxes, scores, labels (decoding and NMS inside the graph), with a
    dynamic batch."""
    import archspec.detection  # noqa: F401  (registers the detector exporter)
    from archspec.compiler.export import export as export_any
    from archspec.compiler.export import io_shapes, optimize_onnx

    spec = load(spec_file, overrides=overrides)
    guard(spec, None if input_size is None else _size(input_size), purpose="export", max_memory=max_memory)
    options = {"exporter": exporter}
    if spec.type == "detector":
        if weights is not None:  # random weights need no torch module (direct) or get one built (dynamo)
            options["module"] = _detector_with_weights(spec, weights)
        size = None if input_size is None else _size(input_size)
    elif weights is not None:
        raise click.UsageError("--weights is for detector specs (a training run's checkpoint)")
    else:
        size = _size(input_size)
        options["dynamic_batch"] = dynamic_batch
    from archspec.files import atomic_path

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:  # exported and optimized, then in place: a kill leaves the old file
        export_any(spec, tmp, input_size=size, opset=opset, **options)
        if optimize:
            optimize_onnx(tmp)
    path = output
    shapes = io_shapes(path)
    outs = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes["outputs"].items())
    click.echo(f"wrote {path} ({spec.name}; outputs: {outs}{'; optimized' if optimize else ''})")


def _detector_with_weights(spec, weights: Path | None):
    from archspec.detection.model import build_detector

    model = build_detector(spec)
    if weights is not None:
        from archspec.detection.checkpoint import load_weights

        load_weights(model, weights)
    return model


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--runtime", type=RUNTIME_CHOICES, default="ort", show_default=True)
@click.option("--provider", type=PROVIDER_CHOICES, default="cpu", show_default=True,
              help="ONNX Runtime execution provider (an error if unavailable; never a silent fallback).")
@click.option("--threads", type=click.IntRange(1, 1024), help="Threads (default: physical cores).")
@click.option("--warmup", type=click.IntRange(0, 100000), default=10, show_default=True)
@click.option("--repeat", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--input-size", metavar="H[xW]", help="Input size (default: the ONNX file's, or 224).")
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True)
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="cpu: CPU time of the calling thread (needs --threads 1): steadier on a shared machine.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@max_memory_option
@set_option
def bench(model: Path, runtime: str, provider: str, threads: int | None, warmup: int, repeat: int,
          input_size: str | None, batch: int, clock: str, as_json: bool, max_memory: str | None,
          overrides: tuple[str, ...]) -> None:
    """Latency of a spec or an exported .onnx file: median, p10, p90, min and standard deviation
    in ms, with the runtime, provider, threads and machine fingerprint. With --runtime both,
    ONNX Runtime and torch eager are measured in the same run and their ratio is printed."""
    from archspec.compiler.runtime import measure_onnx, physical_cores

    threads = threads or physical_cores()
    if runtime != "ort" and provider != "cpu":
        raise click.UsageError("--runtime torch/both measures torch on the CPU only; use --provider cpu")
    is_onnx = model.suffix.lower() == ".onnx"
    if is_onnx:
        from archspec.files import check_readable

        check_readable(model, kind="ONNX file")
        if overrides:
            raise click.UsageError("--set changes spec files; an .onnx file holds a fixed network")
    spec = _spec_of(model, is_onnx, needed=runtime != "ort", overrides=overrides)
    size = _bench_size(model, is_onnx, input_size)
    if spec is not None and spec.type == "detector":
        if input_size is not None and size != spec.image_size:
            raise click.UsageError(f"--input-size: a detector runs at its spec's input_size "
                                   f"{spec.image_size[0]}x{spec.image_size[1]}")
        size = spec.image_size
    if spec is not None:
        guard(spec, size, batch=batch, purpose="export" if runtime != "torch" else "inference",
              max_memory=max_memory)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if runtime in ("ort", "both"):
            onnx_path = model
            if not is_onnx or (input_size is not None and _static_size(model) not in (None, size)):
                onnx_path = _export_for_bench(spec, Path(tmp) / "model.onnx", size, batch)
            channels = _in_channels(spec) if spec is not None else _input_channels(onnx_path)
            from archspec.files import read_bytes

            # the bytes, not the path: ONNX Runtime then never opens other files (external data)
            results["ort"] = measure_onnx(read_bytes(onnx_path, kind="ONNX file"), (batch, channels, *size), provider=provider, threads=threads,
                                          warmup=warmup, repeat=repeat, clock=clock)
        if runtime in ("torch", "both"):
            from archspec.compiler.runtime import measure_torch

            results["torch"] = measure_torch(_torch_module(spec), (batch, _in_channels(spec), *size), threads=threads,
                                             warmup=warmup, repeat=repeat, clock=clock)
    ratio = results["ort"].median_ms / results["torch"].median_ms if len(results) == 2 else None
    if as_json:
        data = {"model": str(model), "input_size": list(size), "batch": batch,
                "results": {name: stats.as_dict() for name, stats in results.items()}}
        if ratio is not None:
            data["ort_over_torch"] = ratio
        click.echo(json.dumps(data, indent=2))
        return
    _print_bench(model, size, batch, results, ratio)


def _in_channels(spec) -> int:
    return spec.backbone.in_channels if spec.type == "detector" else spec.in_channels


def _export_for_bench(spec, path: Path, size, batch: int) -> Path:
    import archspec.detection  # noqa: F401  (registers the detector exporter)
    from archspec.compiler.export import export, export_spec

    if spec.type == "detector":
        return export(spec, path)
    return export_spec(spec, path, input_size=size, dynamic_batch=batch > 1)


def _torch_module(spec):
    """What torch eager runs: the backbone, or a detector end to end (network, decoding, NMS)."""
    if spec.type != "detector":
        from archspec.compiler import build

        return build(spec)
    from archspec.detection.postprocess import end_to_end

    return end_to_end(spec)


def _spec_of(model: Path, is_onnx: bool, needed: bool, overrides: tuple[str, ...] = ()):
    if not is_onnx:
        return load(model, overrides=overrides)
    from archspec.compiler.export import METADATA_SPEC, read_metadata, spec_from_onnx

    if METADATA_SPEC in read_metadata(model):
        return spec_from_onnx(model)
    if needed:
        raise ValueError(f"{model}: no archspec metadata, so there is no spec to build a torch module from")
    return None


def _first_input_shape(path: Path) -> list:
    from archspec.compiler.export import io_shapes

    inputs = io_shapes(path)["inputs"]
    if len(inputs) != 1:
        raise ValueError(f"{path}: the model has {len(inputs)} inputs; bench runs models with one image input")
    return next(iter(inputs.values()))


def _static_size(path: Path) -> tuple[int, int] | None:
    shape = _first_input_shape(path)
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return (shape[2], shape[3])
    return None


def _input_channels(path: Path) -> int:
    shape = _first_input_shape(path)
    if len(shape) != 4 or not isinstance(shape[1], int):
        raise ValueError(f"{path}: expected an N x C x H x W input, found {shape}")
    return shape[1]


def _bench_size(model: Path, is_onnx: bool, input_size: str | None) -> tuple[int, int]:
    if input_size is not None:
        return _size(input_size)
    if is_onnx:
        static = _static_size(model)
        if static is not None:
            return static
        from archspec.compiler.export import METADATA_INPUT_SIZE, read_metadata

        recorded = read_metadata(model).get(METADATA_INPUT_SIZE)
        if recorded:
            return _size(recorded)
    return (224, 224)


def _print_bench(model: Path, size, batch: int, results: dict, ratio: float | None) -> None:
    out = console()
    machine = next(iter(results.values())).machine
    out.print(f"[bold]{model}[/bold] at {size[0]}x{size[1]}, batch {batch}")
    # One column per runtime, one row per figure: narrow enough for 80 columns with both runtimes.
    rows = table("", *results)
    stats = list(results.values())
    for label, cell in (("provider", lambda s: s.provider), ("threads", lambda s: str(s.threads)),
                        ("clock", lambda s: s.clock), ("median ms", lambda s: f"{s.median_ms:.3f}"),
                        ("p10 ms", lambda s: f"{s.p10_ms:.3f}"), ("p90 ms", lambda s: f"{s.p90_ms:.3f}"),
                        ("min ms", lambda s: f"{s.min_ms:.3f}"), ("std ms", lambda s: f"{s.std_ms:.3f}"),
                        ("runs (warm-up)", lambda s: f"{s.repeats} ({s.warmup})")):
        rows.add_row(label, *(cell(s) for s in stats))
    out.print(rows)
    if ratio is not None:
        out.print(f"ORT / torch eager (median): [bold]{ratio:.3f}[/bold]")
    out.print(f"machine {machine['hash']}: {machine['cpu_model']}, {machine['physical_cores']} physical cores, "
              f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}")


# -- latency tables ----------------------------------------------------------------------------
@click.group()
def latency() -> None:
    """Latency tables (kernels measured once on this machine) and predictions from them."""


def _table_options(func):
    func = click.option("--table", "table_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Table file (default: $ARCHSPEC_LATENCY_TABLE or ~/.cache/archspec/latency.sqlite).")(func)
    func = click.option("--runtime", type=click.Choice(["ort", "torch"]), default="ort", show_default=True)(func)
    func = click.option("--provider", type=PROVIDER_CHOICES, default="cpu", show_default=True)(func)
    func = click.option("--threads", type=click.IntRange(1, 1024), help="Threads (default: physical cores).")(func)
    func = click.option("--input-size", default="224", show_default=True, metavar="H[xW]")(func)
    func = click.option("--clock", type=click.Choice(["auto", "wall", "cpu"]), default="auto", show_default=True,
                        help="cpu: thread CPU time (needs --threads 1), steadier on a shared machine; auto: cpu "
                             "with 1 thread on the CPU provider, else wall.")(func)
    return func


def _predictor(table_path, runtime, provider, threads, clock="auto", *, read_only: bool = False):
    from archspec.compiler.latency import LatencyPredictor, LatencyTable

    return LatencyPredictor(LatencyTable(table_path, read_only=read_only), runtime=runtime, provider=provider,
                            threads=threads, clock=clock)


def _specs_from(paths: tuple[Path, ...]) -> list:
    """Specs from spec files; a search-space file contributes the candidates its `sample_specs`
    hook (registered in `SPACE_SAMPLERS`) draws."""
    from archspec.io import parse_text, validate

    specs = []
    for path in paths:
        from archspec.files import read_text

        data = parse_text(read_text(path, kind="spec"), format="json" if path.suffix == ".json" else "yaml",
                          source=str(path))
        kind = data.get("type") if isinstance(data, dict) else None
        if kind in SPACE_SAMPLERS:
            specs += SPACE_SAMPLERS[kind](data, str(path))
        else:
            specs.append(validate(data, source=str(path)))
    return specs


def _sample_search(data: dict, source: str) -> list:
    from archspec.search.space import sample_specs

    return sample_specs(Path(source))


SPACE_SAMPLERS: dict[str, object] = {"search": _sample_search}
"""Search-space document type -> fn(data, source) -> list of specs whose kernels to measure."""


@latency.command("build-table")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_table_options
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Also measure each spec end to end and refit the per-model overhead.")
@click.option("--variants", type=click.IntRange(0, 8), default=0, show_default=True,
              help="Also measure this many channel variants of each kernel (other channel counts: one in three, "
                   "rounded up, with every convolution on ONNX Runtime's NCHWc block; one in three, rounded down, "
                   "narrower in every width (x0.25-0.7); the others drawn at random, most off the block), so the "
                   "kernel models predict unseen widths better.")
@click.option("--refine", is_flag=True,
              help="Also measure again what the table already holds of these specs (kernels, variants and "
                   "end-to-end runs) and keep the lower median: on a machine whose speed varies, each pass "
                   "undoes load that lasted through an earlier measurement.")
def build_table(files: tuple[Path, ...], table_path, runtime, provider, threads, input_size: str, clock: str,
                calibrate: bool, variants: int, refine: bool) -> None:
    """Measure every kernel of the given specs that the table lacks (resumable: measured
    kernels are skipped, each is saved as soon as it is measured), fit the per-type kernel
    models for unseen kernels and the per-model overhead. With --refine, the kernels the table
    already held are measured once more and the lower median kept (other processes only ever
    add time), as are the end-to-end runs."""
    import warnings

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from archspec.compiler.latency import CalibrationWarning, describe
    from archspec.compiler.latency.model import MIN_KERNELS_PER_TYPE
    from archspec.compiler.latency.predictor import MIN_CALIBRATION_MODELS

    size = _size(input_size)
    predictor = _predictor(table_path, runtime, provider, threads, clock)
    specs = _specs_from(files)
    wanted = list(dict.fromkeys(k for spec in specs for k in predictor.kernels(spec, size)))
    if variants:
        from archspec.compiler.latency.kernels import channel_variants

        every, block = set(wanted), predictor.block
        drawn = (v for k in wanted for v in channel_variants(k, variants, block=block))
        wanted += [v for v in dict.fromkeys(drawn) if v not in every]
    keys = [k for k in wanted if not predictor.is_measured(k)]
    again = [k for k in wanted if predictor.is_measured(k)] if refine else []
    lowered = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[kernel]}"))
    with Progress(*columns) as progress:
        task = progress.add_task("kernels", total=len(keys), kernel="")
        for key in keys:
            progress.update(task, kernel=describe(key)[:60])
            predictor.measure_keys([key])
            progress.advance(task)
        if again:
            task = progress.add_task("again", total=len(again), kernel="")
            lowered = predictor.refine_keys(again, progress=lambda key: progress.update(
                task, advance=1, kernel=describe(key)[:60]))
        predictor.refit_kernel_model()
        if calibrate:
            cal = progress.add_task("end to end", total=len(specs), kernel="")
            with warnings.catch_warnings(record=True) as refused:
                warnings.simplefilter("always", CalibrationWarning)
                predictor.calibrate(specs, size, refine=refine, progress=lambda spec: progress.advance(cal))
            for warning in refused:
                click.echo(f"warning: {warning.message}", err=True)
    context = predictor.context
    refined = f", {len(again)} measured again, {lowered} of them lower now" if refine else ""
    click.echo(f"table {predictor.table.path}: {predictor.table.count(context)} kernels for {context.runtime}/"
               f"{context.provider}/{context.threads} threads ({context.clock} clock) on machine {context.machine} "
               f"({len(keys)} measured now{refined})")
    report = predictor.calibration_report
    click.echo(report.line() if report is not None else
               f"overhead fit: none (fewer than {MIN_CALIBRATION_MODELS} calibration models: plain kernel sums)")
    click.echo(f"overhead coefficients: {predictor.coefficients.as_dict()}")
    models, trees = predictor.kernel_model.models, predictor.kernel_model.trees
    click.echo("kernel models (unseen kernels): " + (", ".join(
        f"{kind} on {m.kernels} kernels (physical terms {m.median_error:.1%} median error in-sample"
        f"{', tree-corrected' if kind in trees else ''})" for kind, m in sorted(models.items()))
        or f"none (a type needs {MIN_KERNELS_PER_TYPE} measured kernels)"))


@latency.command("predict")
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@_table_options
@click.option("--measure-missing", is_flag=True, help="Measure kernels the table lacks instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(spec_file: Path, table_path, runtime, provider, threads, input_size: str, clock: str,
            measure_missing: bool, as_json: bool) -> None:
    """Predicted latency of a spec from the table: measured kernels from the table, the others
    predicted by their type's regression (fitted on the table's measured kernels). Exit code 2,
    listing the kernels, when some can be neither (unless --measure-missing)."""
    size = _size(input_size)
    spec = load(spec_file)
    # only reads unless told to measure: a shared, read-only table serves predictions
    predictor = _predictor(table_path, runtime, provider, threads, clock, read_only=not measure_missing)
    if measure_missing:
        predictor.measure_missing(spec, size)
    ms = predictor.predict(spec, size)
    total, count = predictor.kernel_sum(spec, size)
    measured, predicted = predictor.sources(spec, size)
    context = predictor.context
    data = {"spec": spec.name, "input_size": list(size), "predicted_ms": ms, "kernel_sum_ms": total,
            "kernels": count, "measured_kernels": measured, "predicted_kernels": predicted,
            "calibrated": predictor.calibrated, "coefficients": predictor.coefficients.as_dict(),
            "runtime": context.runtime, "provider": context.provider, "threads": context.threads, "clock": context.clock,
            "machine": context.machine, "table": str(predictor.table.path)}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    note = "" if predictor.calibrated else " (uncalibrated: plain kernel sum; run build-table with --calibrate)"
    click.echo(f"{spec.name} at {size[0]}x{size[1]}: {ms:.3f} ms predicted ({count} kernels: {measured} measured, "
               f"{predicted} predicted by the kernel models; sum {total:.3f} ms; "
               f"{context.runtime}/{context.provider}/{context.threads} threads, {context.clock} clock){note}")

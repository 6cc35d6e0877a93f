"""`archspec validate | summary | schema | graph`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from archspec.cli.options import console, set_option, table
from archspec.errors import SpecError
from archspec.files import atomic_write_text
from archspec.io import json_schema, load, load_document

input_size_option = click.option(
    "--input-size", default=None, metavar="H[xW]",
    help="Input image size for shapes and costs [default: 224 for backbones, a detector's own input_size].")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@set_option
def validate(files: tuple[Path, ...], overrides: tuple[str, ...]) -> None:
    """Validate documents (backbone, detector and search files, and templates: specs with choices,
    checked branch by branch); print one line per file, every problem of an invalid one. Exit
    code 2 if any is invalid."""
    from archspec.template import is_template, load_template

    bad = 0
    for path in files:
        try:
            document = load_document(path, overrides=overrides)
        except SpecError as exc:
            template = _template_of(path, is_template, load_template, exc)
            if isinstance(template, SpecError):
                for line in template.lines():
                    click.echo(f"error: {line}", err=True)
                bad += 1
                continue
            click.echo(f"ok: {path} (template of {template.kind} specs: {len(template.decisions)} decisions, "
                       f"{template.size():,} architectures)")
            continue
        click.echo(f"ok: {path} ({document.type} {document.name})")
    if bad:
        sys.exit(2)


def _template_of(path: Path, is_template, load_template, error: SpecError):
    """The template a file that is not a plain spec holds, or the error to report: the
    template's own when it is one, else the spec's."""
    from archspec.io import _format_of, _read, parse_text

    try:
        if not is_template(parse_text(_read(path), format=_format_of(path), source=str(path))):
            return error
        return load_template(path)
    except SpecError as exc:
        return exc


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@input_size_option
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (an object, or a list for several files).")
def summary(files: tuple[Path, ...], input_size: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Parameters, MACs, FLOPs (= 2 x MACs) and every output's channels, stride, shape and
    receptive field. MACs count convolutions and linear layers only. A search config is
    summarized by its space, strategy and budgets and its base spec at the budgets' input size."""
    from archspec.compiler import parse_input_size

    size = parse_input_size(input_size) if input_size else None
    summaries = [_summarize_file(path, size, overrides) for path in files]
    if as_json:
        click.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    elif len(summaries) == 1:
        _print_one(summaries[0])
    else:
        _print_table(summaries)


def _summarize_file(path: Path, size, overrides: tuple[str, ...]) -> dict:
    from archspec.compiler import summarize

    if path.suffix.lower() == ".onnx":
        if overrides:
            raise click.UsageError("--set changes spec files; an .onnx file holds a fixed network")
        return _summarize_onnx(path)
    document = load_document(path, overrides=overrides)
    if document.type == "search":
        return _summarize_search(path, size, overrides)
    return summarize(document, size) | {"file": str(path)}


def _summarize_search(path: Path, size, overrides: tuple[str, ...]) -> dict:
    """The base's summary (at the budgets' input size unless --input-size says otherwise), under
    the config's name, with what the search varies and the limits it respects."""
    from archspec.compiler import summarize
    from archspec.search_config import load_search_config

    config, base = load_search_config(path, overrides=overrides)
    budget_size = config.budgets.input_size
    base_summary = summarize(base, size or budget_size)
    search = {key: config.model_dump(mode="json", exclude_none=True)[key]
              for key in ("space", "strategy", "budgets", "score", "trials", "seed")}
    if config.detector is not None:
        search["detector"] = config.detector.model_dump(mode="json", exclude_none=True)
    return base_summary | {"file": str(path), "search": {"name": config.name, **search},
                           "base": {"name": base_summary["name"], "type": base.type}}


def _summarize_onnx(path: Path) -> dict:
    """An exported file: its spec (from the metadata) summarized at the file's input size, plus
    the ONNX input/output shapes."""
    from archspec.compiler import parse_input_size, summarize
    from archspec.compiler.export import METADATA_INPUT_SIZE, io_shapes, read_metadata, spec_from_onnx

    spec = spec_from_onnx(path)
    size = parse_input_size(read_metadata(path).get(METADATA_INPUT_SIZE, "224"))
    return summarize(spec, size) | {"file": str(path), "onnx": io_shapes(path)}


def _print_one(info: dict) -> None:
    out = console()
    h, w = info["input_size"]
    if "search" in info:
        _print_search_header(out, info["search"], info["base"])
    out.print(f"[bold]{info['name']}[/bold] ({info['type']}, fingerprint {info['fingerprint']}) at {h}x{w}")
    out.print(f"  params {info['params']:,}   MACs {info['macs']:,} ({info['macs'] / 1e9:.3f} G)")
    out.print(f"  FLOPs {info['flops'] / 1e9:.3f} G (2 x MACs)   activations {info['activation_bytes'] / 2**20:.1f} MiB")
    rows = table("output", "channels", "stride", "shape C,H,W", "receptive field")
    for name, output in info["outputs"].items():
        rf = output.get("receptive_field", "-")
        rows.add_row(name, str(output["channels"]), str(output["stride"]), "x".join(map(str, output["shape"])),
                     "global" if rf is None else str(rf))
    out.print(rows)
    for part, counts in info.get("parts", {}).items():
        out.print(f"  {part}: params {counts['params']:,}   MACs {counts['macs'] / 1e9:.3f} G")
    for role, values in info.get("onnx", {}).items():
        shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in values.items())
        out.print(f"  ONNX {role}: {shapes}")


def _print_search_header(out, search: dict, base: dict) -> None:
    def fields(data: dict) -> str:
        return ", ".join(f"{key} {value}" for key, value in data.items() if key != "type")

    out.print(f"[bold]{search['name']}[/bold] (search): {search['trials']:,} trials, seed {search['seed']}, "
              f"score {search['score']}")
    out.print(f"  space {search['space']['type']}: {fields(search['space']) or 'defaults'}")
    out.print(f"  strategy {search['strategy']['type']}: {fields(search['strategy']) or 'defaults'}")
    out.print(f"  budgets: {fields(search['budgets'])}")
    if "detector" in search:
        detector = search["detector"]
        out.print(f"  detector: {detector['neck']['type']} neck, {detector['head']['type']} head, "
                  f"{detector['num_classes']} classes")
    out.print("base:")


def _print_table(summaries: list[dict]) -> None:
    h, w = summaries[0]["input_size"]
    rows = table("spec", "type", "params", "GMACs", "outputs: ch/stride", "RF (last)",
                 title=f"{len(summaries)} specs at {h}x{w} (MACs: conv + linear multiply-adds; FLOPs = 2 x MACs)")
    for info in summaries:
        outs = " ".join(f"{n}:{o['channels']}/{o['stride']}" for n, o in info["outputs"].items())
        last_rf = list(info.get("receptive_field", {}).values() or ["-"])[-1]
        name = f"{info['search']['name']} (base {info['name']})" if "search" in info else info["name"]
        if tuple(info["input_size"]) != (h, w):
            name += f" at {info['input_size'][0]}x{info['input_size'][1]}"
        rows.add_row(name, "search" if "search" in info else info["type"], f"{info['params']:,}",
                     f"{info['macs'] / 1e9:.3f}", outs, "global" if last_rf is None else str(last_rf))
    console().print(rows)


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of every document kind: backbones, detectors, search configs
    (point your editor's YAML plugin at it)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "png", "svg", "html"]), default="dot",
              show_default=True, help="svg/html: the readable drawing (levels as rows, blocks coloured by kind, "
                                      "resampling marked, channels and dilation on the blocks).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (required for png; text formats print to stdout otherwise).")
@set_option
def graph(file: Path, fmt: str, output: Path | None, overrides: tuple[str, ...]) -> None:
    """Render the block graph of a spec, one row per feature level (a detector's backbone for
    detector specs)."""
    from archspec.compiler import drawing, lower
    from archspec.compiler import render

    spec = load(file, overrides=overrides)
    ir = lower(spec.backbone if spec.type == "detector" else spec)
    if fmt == "png":
        if output is None:
            raise click.UsageError("--format png needs -o FILE.png")
        click.echo(f"wrote {render.to_png(ir, output)}")
        return
    writers = {"dot": render.to_dot, "mermaid": render.to_mermaid, "svg": drawing.to_svg, "html": drawing.to_html}
    text = writers[fmt](ir)
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)

"""`archspec validate | summary | schema | graph`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from archspec.errors import SpecError
from archspec.io import json_schema, load

input_size_option = click.option(
    "--input-size", default=None, metavar="H[xW]",
    help="Input image size for shapes and costs [default: 224 for backbones, a detector's own input_size].")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Validate spec files; print one line per file. Exit code 2 if any is invalid."""
    bad = 0
    for path in files:
        try:
            spec = load(path)
        except SpecError as exc:
            click.echo(f"error: {exc}", err=True)
            bad += 1
            continue
        click.echo(f"ok: {path} ({spec.type} {spec.name})")
    if bad:
        sys.exit(2)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@input_size_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (an object, or a list for several files).")
def summary(files: tuple[Path, ...], input_size: str, as_json: bool) -> None:
    """Parameters, MACs, FLOPs (= 2 x MACs) and every output's channels, stride, shape and
    receptive field. MACs count convolutions and linear layers only."""
    from archspec.compiler import parse_input_size, summarize

    size = parse_input_size(input_size) if input_size else None
    summaries = [_summarize_onnx(path) if path.suffix.lower() == ".onnx" else
                 summarize(load(path), size) | {"file": str(path)} for path in files]
    if as_json:
        click.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    elif len(summaries) == 1:
        _print_one(summaries[0])
    else:
        _print_table(summaries)


def _summarize_onnx(path: Path) -> dict:
    """An exported file: its spec (from the metadata) summarized at the file's input size, plus
    the ONNX input/output shapes."""
    from archspec.compiler import parse_input_size, summarize
    from archspec.compiler.export import METADATA_INPUT_SIZE, io_shapes, read_metadata, spec_from_onnx

    spec = spec_from_onnx(path)
    size = parse_input_size(read_metadata(path).get(METADATA_INPUT_SIZE, "224"))
    return summarize(spec, size) | {"file": str(path), "onnx": io_shapes(path)}


def _print_one(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    h, w = info["input_size"]
    console.print(f"[bold]{info['name']}[/bold] ({info['type']}, fingerprint {info['fingerprint']}) at {h}x{w}")
    console.print(f"  params {info['params']:,}   MACs {info['macs']:,} ({info['macs'] / 1e9:.3f} G)   "
                  f"FLOPs {info['flops'] / 1e9:.3f} G (2 x MACs)   activations {info['activation_bytes'] / 2**20:.1f} MiB")
    table = Table("output", "channels", "stride", "shape (C, H, W)", "receptive field")
    for name, out in info["outputs"].items():
        rf = out.get("receptive_field", "-")
        table.add_row(name, str(out["channels"]), str(out["stride"]), "x".join(map(str, out["shape"])),
                      "global" if rf is None else str(rf))
    console.print(table)
    for part, counts in info.get("parts", {}).items():
        console.print(f"  {part}: params {counts['params']:,}   MACs {counts['macs'] / 1e9:.3f} G")
    for role, values in info.get("onnx", {}).items():
        shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in values.items())
        console.print(f"  ONNX {role}: {shapes}")


def _print_table(summaries: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    h, w = summaries[0]["input_size"]
    table = Table("spec", "type", "params", "GMACs", "outputs (channels/stride)", "RF of last output",
                  title=f"{len(summaries)} specs at {h}x{w} (MACs: conv + linear multiply-adds; FLOPs = 2 x MACs)")
    for info in summaries:
        outs = " ".join(f"{n}:{o['channels']}/{o['stride']}" for n, o in info["outputs"].items())
        last_rf = list(info.get("receptive_field", {}).values() or ["-"])[-1]
        table.add_row(info["name"], info["type"], f"{info['params']:,}", f"{info['macs'] / 1e9:.3f}", outs,
                      "global" if last_rf is None else str(last_rf))
    Console(width=160).print(table)


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of spec documents (point your editor's YAML plugin at it)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
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
def graph(file: Path, fmt: str, output: Path | None) -> None:
    """Render the block graph of a spec, one row per feature level (a detector's backbone for
    detector specs)."""
    from archspec.compiler import drawing, lower
    from archspec.compiler import render

    spec = load(file)
    ir = lower(spec.backbone if spec.type == "detector" else spec)
    if fmt == "png":
        if output is None:
            raise click.UsageError("--format png needs -o FILE.png")
        click.echo(f"wrote {render.to_png(ir, output)}")
        return
    writers = {"dot": render.to_dot, "mermaid": render.to_mermaid, "svg": drawing.to_svg, "html": drawing.to_html}
    text = writers[fmt](ir)
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)

"""`archspec erf` and `archspec report`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input-size", required=True, metavar="H[xW]", help="Input image size.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A state dict of the backbone, or an archspec detector checkpoint (its backbone weights). "
                   "Default: seeded random initialisation.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of real images (the first N by name, resized, ImageNet-normalised). Default: N seeded "
                   "random-noise images.")
@click.option("-n", "count", type=click.IntRange(min=1, max=1024), default=4, show_default=True,
              help="Images to average the gradient over.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weights and the random images.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the heat-map PNGs (erf_<output>.png) [default: <spec name>_erf].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def erf(file: Path, input_size: str, weights: Path | None, images: Path | None, count: int, seed: int,
        out: Path | None, as_json: bool) -> None:
    """Effective receptive field of every output level (Luo et al., NeurIPS 2016): the gradient
    of the centre unit with respect to the input, averaged over N images. Prints the radii holding
    50% and 90% of the gradient mass next to the theoretical field and the level's RetinaNet anchor
    sides, and writes one heat map per level."""
    from archspec import load
    from archspec.compiler import parse_input_size
    from archspec.compiler.erf import ERF_COLUMNS, effective_receptive_fields, erf_table, load_images, save_heatmap

    spec = load(file)
    size = parse_input_size(input_size)
    batch = load_images(images, count, size) if images is not None else None
    erfs = effective_receptive_fields(spec, size, images=batch, count=count, seed=seed, weights=weights)
    out = out if out is not None else Path(f"{file.stem}_erf")
    out.mkdir(parents=True, exist_ok=True)
    pictures = {e.name: str(_save_atomic(out / f"erf_{e.name}.png", lambda p, e=e: save_heatmap(e, p))) for e in erfs}
    source = f"{batch.shape[0]} images from {images}" if batch is not None else f"{count} random images (seed {seed})"
    weights_note = str(weights) if weights is not None else f"random initialisation (seed {seed})"
    if as_json:
        click.echo(json.dumps({"name": spec.name, "input_size": list(size), "images": source, "weights": weights_note,
                               "levels": [e.as_dict() | {"heatmap": pictures[e.name]} for e in erfs]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*ERF_COLUMNS, title=f"{spec.name} at {size[0]}x{size[1]}: ERF over {source}; weights: "
                                      f"{weights_note}")
    for row in erf_table(erfs):
        table.add_row(*row)
    console = Console(width=140)
    console.print(table)
    console.print("r50/r90: half-side of the square (around the centre of the unit's field) holding 50%/90% of the "
                  "gradient mass; anchors: RetinaNet's 4 * 2**k at scales 2**(i/3).")
    click.echo(f"heat maps: {out}/erf_<output>.png")


def _save_atomic(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename: a reader never sees half a file."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@click.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write [default: RUN/report.html].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The run's search config (only for runs that do not record it: started by an older version).")
@click.option("--top-k", type=click.IntRange(min=1, max=10000), default=20, show_default=True,
              help="Rows of the top-k and infeasible tables.")
@click.option("--erf/--no-erf", default=True, show_default=True,
              help="Effective receptive fields of the best candidate (random weights and images).")
@click.option("--erf-size", type=click.IntRange(min=16, max=4096), default=128, show_default=True,
              help="Input side for the ERF.")
@click.option("--erf-images", type=click.IntRange(min=1, max=256), default=2, show_default=True,
              help="Random images the ERF is averaged over.")
@click.option("--latency-table", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Latency table with calibration runs for measured latencies [default: the one the run used: "
                   "RUN/latency.sqlite, or the shared table it records].")
def report(run: Path, output: Path | None, config_path: Path | None, top_k: int, erf: bool, erf_size: int,
           erf_images: int, latency_table: Path | None) -> None:
    """Write a search run's report page: one self-contained HTML file (works offline): config and
    budgets, progress, Pareto fronts (hover a point for the candidate, click for its YAML), the
    top-k and infeasible candidates, the best architecture drawn and its effective receptive fields.
    `archspec search` writes RUN/report.html at the end of every run."""
    from archspec.search.report import ReportOptions, write_report

    options = ReportOptions(top_k=top_k, erf=erf, erf_size=erf_size, erf_images=erf_images,
                            latency_table=latency_table)
    click.echo(f"wrote {write_report(run, output, config_path=config_path, options=options)}")

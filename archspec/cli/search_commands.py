"""`archspec search` and `archspec score`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the search stored in --out.")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("--max-trials", type=int, default=None, help="Override the config's number of trials.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Evaluate candidates in this many processes. Never changes the results.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Propose this many candidates before any feedback (default: as many as the strategy can "
                   "without changing its results; 1 for the evolutions). Changes the search: results depend on "
                   "it. Lets --workers help the evolutions.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def search(config: Path, out: Path, resume: bool, seed: int | None, max_trials: int | None, workers: int,
           batch: int | None, quiet: bool) -> None:
    """Run a search; every trial goes to OUT/trials.sqlite, results to best.yaml, trials.csv,
    pareto.csv, pareto.png, report.txt and report.html (the report page). Kill it any time and rerun with --resume (with the
    same --batch; --workers may change)."""
    import warnings

    from archspec.search.run import run_search

    with warnings.catch_warnings():
        # A run's warnings (e.g. --workers that cannot help) as one line, not with a source line.
        warnings.showwarning = lambda message, *_, **__: click.echo(f"warning: {message}", err=True)
        result = run_search(config, out, resume=resume, seed=seed, max_trials=max_trials, progress=not quiet,
                            workers=workers, batch=batch)
    click.echo((out / "report.txt").read_text(), nl=False)
    if result.best_spec is not None:
        click.echo(f"best spec: {out / 'best.yaml'}")
    click.echo(f"report page: {out / 'report.html'}")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scorer", type=click.Choice(["maedet", "maedet-rf", "maedet-forward"]), default="maedet",
              show_default=True, help="maedet-rf adds the receptive-field term (default targets; see the search "
                                      "config's receptive_field).")
@click.option("--input-size", default="224", show_default=True, help="Input size (the forward form only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the forward form.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def score(file: Path, scorer: str, input_size: str, seed: int, as_json: bool) -> None:
    """A spec's training-free MAE-DET score (C3:C4:C5 = 1:1:6; higher is better)."""
    from archspec import load
    from archspec.search_config import ReceptiveFieldTarget
    from archspec.compiler import parse_input_size
    from archspec.search.score import combine, level_scores, maedet_forward_score, receptive_field_term

    spec = load(file)
    extra = {}
    if scorer in ("maedet", "maedet-rf"):
        levels = level_scores(spec)
        value = combine(levels)
        if scorer == "maedet-rf":
            extra["receptive_field_term"] = receptive_field_term(spec, ReceptiveFieldTarget())
            value += extra["receptive_field_term"]
    else:
        levels = None
        value = maedet_forward_score(spec, parse_input_size(input_size), seed=seed)
    if as_json:
        info = {"name": spec.name, "scorer": scorer, "score": value, **extra}
        if levels is not None:
            info["levels"] = {f"C{k}": v for k, v in levels.items()}
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"{spec.name}: {scorer} score {value:.3f}")

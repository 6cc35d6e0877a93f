"""`archspec search` and `archspec score`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from archspec.cli.options import max_memory_option, resume_hint_on_interrupt, set_option


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the search stored in --out.")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("--max-trials", type=int, default=None, help="Override the config's number of trials.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Evaluate candidates in this many processes (or Ray actors). Never changes the results.")
@click.option("--executor", "executor_name", type=click.Choice(["serial", "pool", "ray"]), default=None,
              help="Where evaluations run: serial (this process), pool (local processes), ray (Ray actors; "
                   "pip install 'archspec-nas[ray]'). Default: serial for --workers 1, else pool.")
@click.option("--address", default=None, help="Ray cluster to use (head's host:6379, or ray://host:10001); "
                                               "default: a private local Ray started and stopped with the run.")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Ray: CPUs each actor reserves.")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Ray: GPUs each actor reserves (for evaluators that train or run a supernet).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Propose this many candidates before any feedback (default: as many as the strategy can "
                   "without changing its results; 1 for the evolutions). Changes the search: results depend on "
                   "it. Lets --workers help the evolutions.")
@click.option("--quiet", is_flag=True, help="No progress bar (there is none either when the output is not a terminal).")
@click.option("--latency-table", is_flag=False, flag_value="user-cache", default=None, metavar="[PATH]",
              help="Latency table shared across runs, so that two runs of one config agree: PATH, or alone the "
                   "user cache ($ARCHSPEC_LATENCY_TABLE or ~/.cache/archspec/latency.sqlite). Default: the config's "
                   "budgets.latency_table: OUT/latency.sqlite (run) or the user cache (machine).")
@set_option
def search(config: Path, out: Path, resume: bool, seed: int | None, max_trials: int | None, workers: int,
           executor_name: str | None, address: str | None, cpus_per_worker: float, gpus_per_worker: float,
           batch: int | None, quiet: bool, latency_table: str | None, overrides: tuple[str, ...]) -> None:
    """Run a search; every trial goes to OUT/trials.sqlite, results to best.yaml, trials.csv,
    pareto.csv, pareto.png, report.txt and report.html (the report page). Kill it any time and
    rerun with --resume (with the same --batch; --workers and --executor may change)."""
    import warnings

    from archspec.search.report import ReportOptions
    from archspec.search.run import run_search

    _check_executor_options(executor_name, workers, address)
    with warnings.catch_warnings(), resume_hint_on_interrupt("search"):
        # A run's warnings (e.g. --workers that cannot help) as one line, not with a source line.
        warnings.showwarning = lambda message, *_, **__: click.echo(f"warning: {message}", err=True)
        executor = None
        if executor_name == "ray":
            executor = _ray_executor(config, workers, address, cpus_per_worker, gpus_per_worker, overrides)
        try:
            result = run_search(config, out, resume=resume, seed=seed, max_trials=max_trials, progress=not quiet,
                                workers=workers, batch=batch, executor=executor, overrides=overrides,
                                report=ReportOptions(), latency_table=_latency_table_path(latency_table))  # the page with the best candidate's ERF
        finally:
            if executor is not None:
                executor.close()
    click.echo((out / "report.txt").read_text(), nl=False)
    if result.latency_kernels:
        click.echo(result.latency_kernels)
    if result.best_spec is not None:
        click.echo(f"best spec: {out / 'best.yaml'}")
    click.echo(f"report page: {out / 'report.html'}")


def _latency_table_path(option: str | None) -> Path | None:
    """--latency-table: None (the run's own table), the user cache (the option alone) or a path."""
    if option is None:
        return None
    if option == "user-cache":
        from archspec.compiler.latency.table import default_table_path

        return default_table_path()
    return Path(option)


def _check_executor_options(name: str | None, workers: int, address: str | None) -> None:
    if name == "serial" and workers != 1:
        raise click.UsageError(f"--executor serial evaluates in this process; it cannot use --workers {workers}")
    if name == "pool" and workers < 2:
        raise click.UsageError("--executor pool needs --workers 2 or more (one worker is --executor serial)")
    if address is not None and name != "ray":
        raise click.UsageError("--address names a Ray cluster; add --executor ray")


def _ray_executor(config: Path, workers: int, address: str | None, cpus: float, gpus: float,
                  overrides: tuple[str, ...] = ()):
    from archspec.search_config import load_search_config
    from archspec.search.ray_executor import ActorResources, RayExecutor, import_ray

    import_ray()  # before loading anything: the install hint first
    search_config, base = load_search_config(config, overrides=overrides)
    return RayExecutor(workers, search_config, base, address=address,
                       resources=ActorResources(num_cpus=cpus, num_gpus=gpus))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scorer", type=click.Choice(["maedet", "maedet-rf", "maedet-forward"]), default="maedet",
              show_default=True, help="maedet-rf adds the receptive-field term (default targets; see the search "
                                      "config's receptive_field).")
@click.option("--input-size", default="224", show_default=True, help="Input size (the forward form only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the forward form.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@max_memory_option
@set_option
def score(file: Path, scorer: str, input_size: str, seed: int, as_json: bool, max_memory: str | None,
          overrides: tuple[str, ...]) -> None:
    """A spec's training-free MAE-DET score (C3:C4:C5 = 1:1:6; higher is better)."""
    from archspec import load
    from archspec.search.score import SCORERS

    spec = load(file, overrides=overrides)
    result = SCORERS[scorer](spec, input_size=input_size, seed=seed, max_memory=max_memory)
    value, levels, extra = result.value, result.levels, result.terms
    if as_json:
        info = {"name": spec.name, "scorer": scorer, "score": value, **extra}
        if levels is not None:
            info["levels"] = {f"C{k}": v for k, v in levels.items()}
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"{spec.name}: {scorer} score {value:.3f}")

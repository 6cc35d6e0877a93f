"""The `archspec` command line. Commands live in sibling modules and are imported only when
run, so `archspec validate` never imports torch.

Adding a command: write ``archspec/cli/<module>.py`` exposing a click command (or group) and
add one line to `COMMANDS`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NoReturn

import click

from archspec.errors import SpecError

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("archspec.cli.spec_commands:validate", "Validate spec files."),
    "summary": ("archspec.cli.spec_commands:summary", "Costs, outputs and receptive fields of a spec."),
    "schema": ("archspec.cli.spec_commands:schema", "Print the JSON Schema of spec documents."),
    "graph": ("archspec.cli.spec_commands:graph", "Render a spec's block graph (DOT, Mermaid or PNG)."),
    "erf": ("archspec.cli.report_commands:erf", "Effective receptive field of every output level (Luo et al. 2016)."),
    "report": ("archspec.cli.report_commands:report", "A search run's report page: one self-contained HTML file."),
    "search": ("archspec.cli.search_commands:search", "Search a space under budgets (resumable)."),
    "space": ("archspec.cli.space_commands:space", "Search spaces: summary (decisions, size, FLOPs range), sample."),
    "score": ("archspec.cli.search_commands:score", "A spec's training-free MAE-DET score."),
    "export": ("archspec.cli.deploy_commands:export", "Export a spec to ONNX (checked, with the spec in its metadata)."),
    "bench": ("archspec.cli.deploy_commands:bench", "Measure latency on ONNX Runtime and/or torch eager."),
    "latency": ("archspec.cli.deploy_commands:latency", "Latency tables and predictions (build-table, predict)."),
    "data": ("archspec.cli.detection_commands:data", "Datasets (synth: a synthetic COCO-format set)."),
    "train": ("archspec.cli.detection_commands:train", "Train a detector spec on COCO-format data (resumable)."),
    "eval": ("archspec.cli.detection_commands:evaluate", "COCO AP of a training run's checkpoint."),
    "detect": ("archspec.cli.detection_commands:detect", "Run an exported detector on images (ONNX Runtime)."),
    "supernet": ("archspec.cli.supernet_commands:supernet", "One-shot supernets (summary, train, extract)."),
}
"""Command name -> ("module:attribute", one-line help)."""


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


DEBUG_ENV = "ARCHSPEC_DEBUG"
"""Set to 1 to see tracebacks (as --debug does)."""


def _debug_option(ctx, param, value) -> None:
    if value:
        os.environ[DEBUG_ENV] = "1"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archspec-nas")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug_option,
              help=f"Show the traceback of an error (same as {DEBUG_ENV}=1).")
def cli() -> None:
    """archspec: declarative architecture graphs for detection backbones.

    Specs are YAML or JSON files; see `archspec schema` and examples/.
    """


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the error, ``error: `` before each line (a spec error has one line per problem),
    and exit (2 for invalid input)."""
    for line in str(message).splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point and the CLI's one error boundary: an expected failure (bad input, a
    refused file, a resource guard) is one line on stderr and exit code 2; anything else is a
    short "internal error" line and exit code 1. ``--debug`` (or ARCHSPEC_DEBUG=1) shows the
    traceback instead."""
    from archspec.cli.errors import describe_expected

    try:
        cli.main(args=argv, prog_name="archspec", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.UsageError as exc:  # one line, not click's usage block
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
        fail(where + " ".join(exc.format_message().split()), exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 (the boundary: every error becomes one line)
        if os.environ.get(DEBUG_ENV):
            raise
        message = describe_expected(exc)
        if message is not None:
            fail(message)
        fail(f"internal error ({type(exc).__name__}: {_first_line(exc)}); please report it, with the "
             f"traceback shown by --debug", 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"

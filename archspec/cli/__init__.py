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
    "search": ("archspec.cli.search_commands:search", "Search a space under budgets (resumable)."),
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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archspec-nas")
def cli() -> None:
    """archspec: declarative architecture graphs for detection backbones.

    Specs are YAML or JSON files; see `archspec schema` and examples/.
    """


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit (2 for invalid input)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2
    (set ARCHSPEC_DEBUG=1 to see the traceback instead)."""
    if os.environ.get("ARCHSPEC_DEBUG"):
        cli.main(args=argv, prog_name="archspec")
        return
    try:
        cli.main(args=argv, prog_name="archspec", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SpecError as exc:
        fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. an output path under a file, a read-only folder
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        fail("interrupted", 130)

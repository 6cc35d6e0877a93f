"""Kill-and-resume at every write and commit point, made deterministic by the fault hook.

``ARCHSPEC_FAULT=<point>:<n>`` makes the process SIGKILL itself the n-th time it reaches a
write (an atomic write, new content on disk, just before the rename) or a commit (a store
transaction). Each test kills a run at every such point in turn and checks that every output
is its old version or its new one (never a mix or a torn file), and that resuming gives what an
uninterrupted run gives. Runs are forked from one server that imported the CLI once
(tests/forkrunner.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.forkrunner import ForkRunner

MEMORY = 8 << 30
SECONDS = 600
KILLED = -9


@pytest.fixture(scope="module")
def runner():
    server = ForkRunner(str(ROOT))
    yield server
    server.close()


def run(runner, tmp_path, argv, fault: str | None = None, grace: float = 0.0) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    if fault:
        env["ARCHSPEC_FAULT"] = fault
    return runner.run_job(argv, cwd=str(tmp_path), env=env, memory=MEMORY, seconds=SECONDS,
                          stdout=str(tmp_path / "stdout.txt"), stderr=str(tmp_path / "stderr.txt"), grace=grace)


def stderr(tmp_path) -> str:
    return (tmp_path / "stderr.txt").read_text()


# -- search ---------------------------------------------------------------------------------------
SEARCH_OUTPUTS = ("trials.csv", "pareto.csv", "best.yaml", "report.txt", "pareto.png")


TINY_STAGE = "{{block: {{type: k1kxk1, kernel: 3, bottleneck_channels: {}}}, depth: 1, out_channels: {}, stride: 2}}"
TINY_BACKBONE = ("{type: staged, name: tiny, stem: [{type: conv, out_channels: 8, kernel: 3, stride: 2}], stages: ["
                 + ", ".join(TINY_STAGE.format(c // 2, c) for c in (16, 32, 64, 128)) + "], outputs: [C3, C4, C5]}")
"""A MAE-DET-style base small enough that each run's outputs, the report page's receptive fields of
the best candidate included, cost little: what is killed is the writing, not the size of the net."""


def search_config(tmp_path: Path) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text("\n".join(["type: search", f"base: {TINY_BACKBONE}", "space: {type: maedet}",
                               "strategy: {type: maedet_evolution, population: 8}",
                               "budgets: {input_size: 128, max_flops: 0.2e9}", "trials: 60"]) + "\n")
    return path


def outputs(folder: Path) -> dict[str, object]:
    """Each output's content (CSV rows without the timing column), None when absent."""
    found: dict[str, object] = {}
    for name in SEARCH_OUTPUTS:
        path = folder / name
        if not path.exists():
            found[name] = None
        elif name.endswith(".csv"):
            with open(path, newline="") as handle:
                found[name] = [row[:-1] if name == "trials.csv" else row for row in csv.reader(handle)]
        else:
            found[name] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def searches(runner, tmp_path_factory):
    """An uninterrupted 60-trial run ("new") and a 30-trial one ("old") that resumes to 60."""
    root = tmp_path_factory.mktemp("searches")
    config = search_config(root)
    for name, trials in (("whole", 60), ("old", 30)):
        result = run(runner, root, ["search", config, "--out", root / name, "--quiet", "--max-trials", trials])
        assert result["status"] == 0, stderr(root)
    return root, config


@pytest.mark.xdist_group("fault-searches")  # they share the `searches` runs
def test_search_killed_at_every_write_keeps_each_output_old_or_new(runner, searches, tmp_path):
    root, config = searches
    old, new = outputs(root / "old"), outputs(root / "whole")
    assert all(old[name] != new[name] for name in ("trials.csv", "report.txt"))
    killed = 0
    for n in range(1, 30):
        work = tmp_path / f"write{n}"
        shutil.copytree(root / "old", work)
        argv = ["search", config, "--out", work, "--quiet", "--resume", "--max-trials", "60"]
        result = run(runner, tmp_path, argv, fault=f"write:{n}")
        if result["status"] == 0:
            assert outputs(work) == new
            break
        assert result["status"] == KILLED, stderr(tmp_path)
        killed += 1
        now = outputs(work)
        for name in SEARCH_OUTPUTS:
            assert now[name] in (old[name], new[name]), (n, name)
        resumed = run(runner, tmp_path, argv)
        assert resumed["status"] == 0, stderr(tmp_path)
        assert outputs(work) == new, n
        assert not [p.name for p in work.iterdir() if ".tmp" in p.name]  # a killed writer's temporaries are gone
    assert killed >= len(SEARCH_OUTPUTS)  # the marker and every output were a kill point


@pytest.mark.xdist_group("fault-searches")  # they share the `searches` runs
@pytest.mark.parametrize("options", [[], ["--workers", "2", "--batch", "4"]], ids=["serial", "pool"])
def test_search_killed_at_every_commit_resumes_to_the_uninterrupted_result(runner, searches, tmp_path, options):
    root, config = searches
    new = outputs(root / "whole")
    if options:  # --batch changes the search (--workers never does): its own uninterrupted reference
        reference = run(runner, tmp_path, ["search", config, "--out", tmp_path / "reference", "--quiet",
                                           "--max-trials", "60", *options], grace=10.0)
        assert reference["status"] == 0 and reference["left"] == [], stderr(tmp_path)
        new = outputs(tmp_path / "reference")
    killed = 0
    for n in range(1, 20):
        work = tmp_path / f"commit{n}"
        argv = ["search", config, "--out", work, "--quiet", "--max-trials", "60", *options]
        result = run(runner, tmp_path, argv, fault=f"commit:{n}", grace=10.0)
        assert result["left"] == [], "a killed run left processes behind"
        if result["status"] == 0:
            break
        assert result["status"] == KILLED, stderr(tmp_path)
        killed += 1
        again = run(runner, tmp_path, argv)
        assert again["status"] == 2 and "--resume" in stderr(tmp_path)
        resumed = run(runner, tmp_path, [*argv, "--resume"])
        assert resumed["status"] == 0, stderr(tmp_path)
        assert outputs(work) == new, n
    assert killed >= 2  # the identity and at least one batch of trials


# -- export ---------------------------------------------------------------------------------------
def test_export_killed_at_every_write_leaves_the_old_file_or_the_new_one(runner, tmp_path):
    spec = ROOT / "examples" / "backbones" / "resnet18.yaml"
    target = tmp_path / "model.onnx"
    assert run(runner, tmp_path, ["export", spec, "-o", target, "--input-size", "64"])["status"] == 0
    old = target.read_bytes()
    argv = ["export", spec, "-o", target, "--input-size", "96", "--optimize"]
    killed = 0
    for n in range(1, 10):
        result = run(runner, tmp_path, argv, fault=f"write:{n}")
        if result["status"] == 0:
            break
        assert result["status"] == KILLED, stderr(tmp_path)
        killed += 1
        assert target.read_bytes() == old, n  # the new file only appears complete
    assert killed == 3  # the export, its optimization, the final rename
    from archspec.compiler.export import read_metadata

    assert read_metadata(target)["archspec.input_size"] == "96x96"
    assert read_metadata(target)["archspec.optimized"] == "ort-basic"


# -- train ----------------------------------------------------------------------------------------
TRAIN_OUTPUTS = ("spec.yaml", "history.jsonl", "last.pt", "best.pt")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from archspec.detection.synthetic import synthesize

    root = tmp_path_factory.mktemp("data")
    synthesize(root, num_train=4, num_val=2, image_size=64, seed=3)
    return root


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """A tiny FCOS at 64 px (the search's tiny backbone): the write points of a training do not
    depend on the size of the net."""
    path = tmp_path_factory.mktemp("detector") / "fcos_micro.yaml"
    path.write_text("\n".join([
        "type: detector", "name: fcos_micro", f"backbone: {TINY_BACKBONE}",
        "neck: {type: fpn, in_features: [C3, C4, C5], min_level: 3, max_level: 5, channels: 32, extra_from: output}",
        "head: {type: fcos, convs: 1, norm: group_norm}", "num_classes: 3", "input_size: 64"]) + "\n")
    return path


def check_complete(folder: Path) -> None:
    """Every training output present is a complete file of its kind."""
    from archspec import load
    from archspec.detection.checkpoint import load_checkpoint

    if (folder / "spec.yaml").exists():
        load(folder / "spec.yaml")
    if (folder / "history.jsonl").exists():
        for line in (folder / "history.jsonl").read_text().splitlines():
            json.loads(line)
    for name in ("last.pt", "best.pt"):
        if (folder / name).exists():
            load_checkpoint(folder / name)


TRAIN_ARGS = ["--epochs", "2", "--batch-size", "2", "--max-steps-per-epoch", "1", "--seed", "1", "--eval-every", "10"]
TRAIN_WRITES = 9
"""The training's write points: the marker (2), the empty history, spec.yaml; per epoch last.pt
and the history; best.pt at the last epoch."""


@pytest.fixture(scope="module")
def whole_training(runner, data, detector, tmp_path_factory) -> Path:
    """The uninterrupted run every killed-and-resumed one must equal."""
    root = tmp_path_factory.mktemp("train")
    result = run(runner, root, ["train", detector, "--data", data, *TRAIN_ARGS, "--out", root / "whole"])
    assert result["status"] == 0, stderr(root)
    return root / "whole"


# One case per write point (they spread over xdist's workers); the case after the last one finds
# no write left to kill at, so the count of write points is pinned as before.
@pytest.mark.parametrize("n", range(1, TRAIN_WRITES + 2), ids=lambda n: f"write{n}")
def test_train_killed_at_every_write_resumes_to_the_uninterrupted_run(runner, data, detector, whole_training, tmp_path,
                                                                     n):
    import torch

    from archspec.detection.checkpoint import load_checkpoint

    args = ["train", detector, "--data", data, *TRAIN_ARGS]
    whole = load_checkpoint(whole_training / "last.pt")
    work = tmp_path / f"write{n}"
    result = run(runner, tmp_path, [*args, "--out", work], fault=f"write:{n}")
    if n > TRAIN_WRITES:
        assert result["status"] == 0, stderr(tmp_path)  # no write point left: the run completes
        return
    assert result["status"] == KILLED, stderr(tmp_path)
    check_complete(work)
    resumed = run(runner, tmp_path, [*args, "--out", work, "--resume"])
    assert resumed["status"] == 0, (n, stderr(tmp_path))
    cut = load_checkpoint(work / "last.pt")
    assert cut["epoch"] == 2
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, cut["model"][name]), (n, name)
    assert [r["loss"] for r in whole["history"]] == [r["loss"] for r in cut["history"]]
    assert (work / "history.jsonl").read_text() == (whole_training / "history.jsonl").read_text()

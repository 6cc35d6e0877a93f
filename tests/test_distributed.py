"""Data-parallel training (detection/distributed.py): the seeded sharding, the single-process
context, and a 2-process gloo run of the tiny FCOS under torchrun, resumed with 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from archspec.detection.checkpoint import load_checkpoint
from archspec.detection.distributed import Distributed, ShardedBatchSampler, convert_sync_batchnorm, start_distributed
from archspec.detection.synthetic import synthesize
from tests.conftest import ROOT

TINY_SPEC = ROOT / "examples" / "detectors" / "fcos_tiny.yaml"


# -- sharding ------------------------------------------------------------------------------------
def shards(size, batch, world, seed):
    """Per step: the list of every rank's indices."""
    per_rank = [list(ShardedBatchSampler(size, batch, rank, world, seed)) for rank in range(world)]
    assert len({len(batches) for batches in per_rank}) == 1  # every process takes the same number of steps
    return list(zip(*per_rank))


def test_each_global_batch_is_split_over_the_processes_and_the_epoch_covers_the_data():
    steps = shards(size=21, batch=8, world=2, seed=5)
    assert [[len(part) for part in step] for step in steps] == [[4, 4], [4, 4], [3, 2]]
    seen = [index for step in steps for part in step for index in part]
    assert sorted(seen) == list(range(21))  # each image exactly once
    # the same global batches as one process with the same (global) batch size
    single = [step[0] for step in shards(size=21, batch=8, world=1, seed=5)]
    assert [part_a + part_b for part_a, part_b in steps] == single
    assert single[0] == torch.randperm(21, generator=torch.Generator().manual_seed(5)).tolist()[:8]


def test_sharding_is_seeded():
    assert shards(30, 6, 3, seed=1) == shards(30, 6, 3, seed=1)
    assert shards(30, 6, 3, seed=1) != shards(30, 6, 3, seed=2)


def test_a_last_batch_smaller_than_the_processes_borrows_from_the_start():
    steps = shards(size=9, batch=4, world=3, seed=0)  # global batches 4, 4, 1
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0)).tolist()
    assert [len(part) for part in steps[-1]] == [1, 1, 1]
    assert [part[0] for part in steps[-1]] == [order[8], order[0], order[1]]


def test_a_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(ValueError, match="--batch-size 2 is the global batch.*number of processes \\(4\\)"):
        ShardedBatchSampler(10, 2, 0, 4, 0)


# -- the single-process context ------------------------------------------------------------------
def test_without_torchrun_the_context_is_a_single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    context = start_distributed("cpu")
    assert context == Distributed() and context.is_main and not context.active
    model = torch.nn.Linear(2, 2)
    assert context.wrap(model, torch.device("cpu")) is model
    assert context.mean({"loss": 1.5}) == {"loss": 1.5} and context.agree(3, "epoch") == 3
    assert context.place(torch.device("cuda")) == torch.device("cuda")


def test_sync_bn_on_cpu_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="--sync-bn needs --device cuda"):
        convert_sync_batchnorm(torch.nn.BatchNorm2d(4), torch.device("cpu"))


# -- torchrun ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")  # its 2 processes and rendezvous port: one such run at a time
def test_two_process_gloo_training_checkpoints_and_resumes_with_one_process(tmp_path):
    data = tmp_path / "synth"
    synthesize(data, num_train=16, num_val=4, seed=3)
    run = tmp_path / "run"
    # 3 epochs of 2 steps (16 images, global batch 8); stop after epoch 2 (a deterministic "kill").
    # --lr is high because the warm-up is 100 steps: these 6 steps use 1.5-3.5% of it.
    args = [str(TINY_SPEC), "--data", str(data), "--out", str(run), "--epochs", "3", "--batch-size", "8", "--lr",
            "0.05", "--eval-every", "10", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
              "archspec.cli", "train"]
    two = subprocess.run(launch + args + ["--stop-after-epoch", "2"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("trained fcos_tiny for 2 epochs") == 1  # rank 0 reports, rank 1 does not
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]  # written once, by rank 0
    assert history[1]["loss"] < history[0]["loss"]
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and not any(name.startswith("module.") for name in state["model"])
    # no temp files; rank 0 alone held the run folder (its marker and lock)
    assert sorted(path.name for path in run.iterdir()) == [".archspec-run.json", ".archspec-run.lock", "history.jsonl",
                                                           "last.pt", "spec.yaml"]
    # 3 epochs x 2 global steps: the warm-up is capped at 25% of the 6 steps (2), then cosine decay to 1%;
    # after 4 steps the cosine is half way: 0.05 * (0.01 + 0.99 * 0.5 * (1 + cos(pi / 2))) = 0.02525
    assert history[1]["lr"] == pytest.approx(0.02525)

    one = subprocess.run([sys.executable, "-m", "archspec.cli", "train", *args, "--resume"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["epoch"] == 3 and resumed["history"][:2] == state["history"]
    # the schedule continued to its end after 6 steps: 0.05 * 1% (a restarted one would be warming up)
    assert resumed["history"][2]["lr"] == pytest.approx(0.0005)
    assert "AP" in resumed["history"][2] and (run / "best.pt").is_file()
    changed = [name for name, tensor in state["model"].items()
               if tensor.is_floating_point() and not torch.equal(tensor, resumed["model"][name])]
    assert changed, "the resumed epoch must train the weights it loaded"

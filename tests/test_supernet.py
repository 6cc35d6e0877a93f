"""One-shot supernets (issue 13): path parity with extracted stand-alone detectors, weight
sharing, SPOS training and its resume, BN recalibration, the supernet evaluator's determinism,
and clear errors for runs, genotypes and checkpoints that do not belong together."""

from __future__ import annotations

import csv
import random
import shutil

import pytest
import torch

import archspec
from archspec.compiler.fastcosts import fast_costs
from archspec.detection.coco import batches
from archspec.detection.model import build_detector
from archspec.detection.train import TrainOptions
from archspec.search_config import load_search_config
from archspec.search.supernet import SupernetError, build_supernet, cost_extremes
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples" / "search"

TINY_DETNAS = """
type: search
name: {name}
base:
  type: staged
  stem: [{{type: conv, out_channels: 8, kernel: 3, stride: 2, bias: true}}]
  stages:
    - {{block: {{type: shufflenet_v2}}, depth: 1, out_channels: 16, stride: 2}}
    - {{block: {{type: shufflenet_v2}}, depth: 1, out_channels: 32, stride: 2}}
    - {{block: {{type: shufflenet_v2}}, depth: 2, out_channels: 64, stride: 2}}
    - {{block: {{type: shufflenet_v2}}, depth: 1, out_channels: 128, stride: 2}}
space: {space}
detector:
  neck: {{type: fpn, in_features: [C3, C4, C5], min_level: 3, max_level: 5, channels: 32, extra_from: output}}
  head: {{type: fcos, convs: 1}}
  num_classes: 3
  input_size: 64
  postprocess: {{score_threshold: 0.05, pre_nms_top_k: 100, max_detections: 20}}
strategy: {{type: detnas_evolution, population: 4, parents: 2, mutations: 1, crossovers: 1, mutation_prob: 0.3}}
evaluator: {{type: supernet, run: {run}, calibration_images: 8, validation_images: 6, batch_size: 4}}
budgets: {{input_size: 64}}
trials: {trials}
seed: 0
"""


def archspec_cli(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command line, run in this process: the same error
    boundary (`archspec.cli.main`) without a new interpreter importing torch each time."""
    import contextlib
    import io

    from archspec.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def tiny_config(folder, *, name="tiny_detnas", space="{type: detnas}", run="run", trials=6):
    path = folder / f"{name}.yaml"
    path.write_text(TINY_DETNAS.format(name=name, space=space, run=run, trials=trials), encoding="utf-8")
    return path


SHARES_SUPERNETS = pytest.mark.xdist_group("supernet-trained")
"""The tests reading the module's trained supernets run on one xdist worker, so each trains once."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from archspec.detection.synthetic import synthesize

    folder = tmp_path_factory.mktemp("synth")
    synthesize(folder, num_train=16, num_val=8, image_size=64, seed=0)
    return folder


OPTIONS = TrainOptions(epochs=2, batch_size=4, learning_rate=3e-3, warmup_steps=2, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A tiny DetNAS supernet trained for 8 iterations: (config file, run folder)."""
    from archspec.search.supernet_train import train_supernet

    folder = tmp_path_factory.mktemp("trained")
    path = tiny_config(folder)
    config, base = load_search_config(path)
    train_supernet(config, base, data, folder / "run", OPTIONS, progress=False)
    return path, folder / "run"


def randomize_batch_norm(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so parity covers buffers too."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


# -- structure and parity --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["detnas_supernet", "crnas_supernet"])
def test_twenty_random_paths_equal_their_extracted_stand_alone_detectors(name):
    config, base = load_search_config(EXAMPLES / f"{name}.yaml")
    torch.manual_seed(0)
    supernet = build_supernet(config, base)
    randomize_batch_norm(supernet)
    supernet.eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rng = random.Random(f"parity:{name}")
    dilated = 0
    for _ in range(20):
        genotype = supernet.space.random(rng)
        supernet.select(genotype)
        with torch.no_grad():
            ours = supernet(images)
        spec, state = supernet.subnet(genotype)
        assert archspec.fingerprint(spec.backbone) == archspec.fingerprint(supernet.space.decode(genotype))
        alone = build_detector(spec)
        alone.load_state_dict(state)  # strict: every stand-alone tensor comes from the supernet
        alone.eval()
        with torch.no_grad():
            theirs = alone(images)
        for a, b in zip(ours, theirs):
            if a is not None:
                assert a.shape == b.shape
                assert torch.allclose(a, b, atol=1e-5, rtol=0), (genotype, (a - b).abs().max())
        if name == "crnas_supernet":
            dilated += any(d > 1 for d in supernet.space.split(genotype)[1])
    assert name != "crnas_supernet" or dilated >= 15  # dilated paths were compared too


def test_detnas_supernet_holds_every_choice_of_every_layer_once():
    config, base = load_search_config(EXAMPLES / "detnas_supernet.yaml")
    supernet = build_supernet(config, base)
    space = supernet.space
    layers, choices = len(space.base), len(space.choices)
    assert len(supernet.backbone.slots) == 1 + layers * choices  # the stem is shared
    # parameters: every all-same path once, their shared stem (3x3 conv 3->16 with bias, BN) once
    stem = 3 * 16 * 9 + 16 + 2 * 16
    per_path = [fast_costs(space.decode((c,) * layers), (128, 128)).params for c in range(choices)]
    backbone = sum(p.numel() for n, p in supernet.named_parameters() if n.startswith("backbone."))
    assert backbone == sum(per_path) - (choices - 1) * stem


def test_crnas_dilations_add_no_parameters_and_stages_share_their_first_blocks():
    config, base = load_search_config(EXAMPLES / "crnas_supernet.yaml")
    supernet = build_supernet(config, base)
    deepest = [max(choices) for choices in config.space.depth_choices]
    assert len(supernet.backbone.slots) == len(base.stem) + sum(deepest)
    before = supernet.parameter_count()
    rng = random.Random(0)
    for _ in range(5):
        supernet.select(supernet.space.random(rng))
    assert supernet.parameter_count() == before
    # the FLOPs of a bottleneck block are the same in every stage here (width x2, side /2), so the
    # allocation moves parameters, not FLOPs: the cost range says so exactly
    extremes = cost_extremes(supernet, (128, 128))
    assert extremes["flops"][0] == extremes["flops"][1]
    assert extremes["params"][0] < extremes["params"][1]


def test_summary_command_prints_parameters_and_cost_range():
    code, out, err = archspec_cli("supernet", "summary", EXAMPLES / "detnas_supernet.yaml")
    assert code == 0, err
    assert "37 backbone slots" in out and "paths: 262,144" in out
    assert "MFLOPs at 128x128" in out


# -- bad input -------------------------------------------------------------------------------
def test_a_genotype_outside_the_space_is_refused_with_the_rule():
    config, base = load_search_config(EXAMPLES / "detnas_supernet.yaml")
    supernet = build_supernet(config, base)
    with pytest.raises(SupernetError, match=r"outside the detnas space: choice index outside 0\.\.3"):
        supernet.select((7,) * len(supernet.space.base))
    with pytest.raises(SupernetError, match="genotype of length 3"):
        supernet.select((0, 1, 2))


@SHARES_SUPERNETS
def test_a_run_of_another_config_and_a_checkpoint_of_another_supernet_are_refused(tmp_path, trained, data):
    from archspec.search.supernet_train import open_supernet, train_supernet

    config_file, run = trained
    # another space (two choices only): another supernet
    other_file = tiny_config(tmp_path, name="other", space="{type: detnas, choices: [{type: shufflenet_v2, kernel: 3}, "
                                                            "{type: shuffle_xception}]}")
    other, other_base = load_search_config(other_file)
    with pytest.raises(SupernetError, match="trained from another config"):
        open_supernet(run, other, other_base)
    # its own run folder, holding the first supernet's checkpoint
    train_supernet(other, other_base, data, tmp_path / "other_run",
                   TrainOptions(epochs=1, batch_size=4, max_steps_per_epoch=1), progress=False)
    shutil.copy(run / "last.pt", tmp_path / "other_run" / "last.pt")
    with pytest.raises(SupernetError, match="belongs to another supernet"):
        open_supernet(tmp_path / "other_run", other, other_base)
    # a detector checkpoint is no supernet checkpoint
    from archspec.detection.train import train as train_detector

    config, base = load_search_config(config_file)
    detector = config.detector.around(base)
    train_detector(detector, data, tmp_path / "detector", TrainOptions(epochs=1, batch_size=4, max_steps_per_epoch=1),
                   progress=False)
    shutil.copy(tmp_path / "detector" / "last.pt", tmp_path / "other_run" / "last.pt")
    with pytest.raises(SupernetError, match="not a supernet checkpoint"):
        open_supernet(tmp_path / "other_run", other, other_base)
    # the command line says it in one line, exit code 2
    code, _, err = archspec_cli("supernet", "extract", tmp_path / "other_run", "0,0,0,0,0", "-o", tmp_path / "x")
    assert code == 2 and err.count("\n") == 1, err
    assert "not a supernet checkpoint" in err
    code, _, err = archspec_cli("supernet", "extract", run, "0,1,9,0,0", "-o", tmp_path / "x")
    assert code == 2 and "outside the detnas space" in err, err
    assert err.count("\n") == 1


# -- training --------------------------------------------------------------------------------
@SHARES_SUPERNETS
def test_a_killed_and_resumed_training_equals_an_uninterrupted_one(tmp_path, trained, data, monkeypatch):
    from archspec.search import supernet_train

    config, base = load_search_config(trained[0])
    real_step, calls = supernet_train._train_step, []

    def dying_step(*args, **kwargs):  # a deterministic kill: the 7th iteration never happens
        if len(calls) == 6:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(supernet_train, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        supernet_train.train_supernet(config, base, data, tmp_path / "run", OPTIONS, checkpoint_every=2,
                                      progress=False)
    monkeypatch.setattr(supernet_train, "_train_step", real_step)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2)  # epoch 2, after its second of 4 iterations
    with pytest.raises(Exception, match="--resume"):
        supernet_train.train_supernet(config, base, data, tmp_path / "run", OPTIONS, progress=False)
    result = supernet_train.train_supernet(config, base, data, tmp_path / "run", OPTIONS, resume=True,
                                           progress=False)
    assert result.images == 8  # only the two missing iterations ran
    resumed = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    whole = torch.load(trained[1] / "last.pt", weights_only=True)
    assert resumed["history"] == whole["history"]
    assert resumed["model"].keys() == whole["model"].keys()
    for key, value in whole["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert (tmp_path / "run" / "history.jsonl").read_text() == (trained[1] / "history.jsonl").read_text()


@SHARES_SUPERNETS
def test_extract_then_fine_tune_and_export(tmp_path, trained, data):
    config_file, run = trained
    out = tmp_path / "path"
    code, _, err = archspec_cli("supernet", "extract", run, "[0, 1, 2, 3, 0]", "-o", out)
    assert code == 0, err
    spec = archspec.load(out / "spec.yaml")
    assert [layer.block.type for layer in spec.backbone.layers() if layer.stage is not None] == [
        "shufflenet_v2", "shufflenet_v2", "shufflenet_v2", "shuffle_xception", "shufflenet_v2"]
    # never overwrites
    code, _, err = archspec_cli("supernet", "extract", run, "0,1,2,3,0", "-o", out)
    assert code == 2 and "exists already" in err
    # the extracted weights are the supernet path's: the fine-tune starts from them
    from archspec.detection.checkpoint import load_weights
    from archspec.search.supernet_train import open_supernet

    config, base = load_search_config(config_file)
    supernet = open_supernet(run, config, base)
    alone = build_detector(spec)
    load_weights(alone, out / "weights.pt")
    supernet.select((0, 1, 2, 3, 0))
    supernet.eval(), alone.eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(supernet(images).class_logits, alone(images).class_logits, atol=1e-5, rtol=0)
    code, _, err = archspec_cli("train", out / "spec.yaml", "--data", data, "--out", tmp_path / "tune", "--epochs", 1,
                                "--batch-size", 4, "--max-steps-per-epoch", 1, "--init", out / "weights.pt")
    assert code == 0, err
    code, _, err = archspec_cli("export", out / "spec.yaml", "-o", tmp_path / "path.onnx", "--weights",
                                out / "weights.pt")
    assert code == 0, err
    assert (tmp_path / "path.onnx").stat().st_size > 0


# -- evaluation ------------------------------------------------------------------------------
TINY_CRNAS = """
type: search
name: tiny_crnas
base:
  type: staged
  stem: [{type: conv, out_channels: 8, kernel: 3, stride: 2}, {type: max_pool, kernel: 3, stride: 2}]
  stages:
    - {block: {type: bottleneck}, depth: 1, out_channels: 16, stride: 1}
    - {block: {type: bottleneck}, depth: 1, out_channels: 32, stride: 2}
    - {block: {type: bottleneck}, depth: 2, out_channels: 64, stride: 2}
    - {block: {type: bottleneck}, depth: 1, out_channels: 128, stride: 2}
space: {type: crnas, depth_choices: [[1, 2], [1, 2], [1, 2, 3], [1, 2]], dilations: [1, 2, 3]}
detector:
  neck: {type: fpn, in_features: [C3, C4, C5], min_level: 3, max_level: 5, channels: 32, extra_from: output}
  head: {type: fcos, convs: 1}
  num_classes: 1
  input_size: 64
  postprocess: {score_threshold: 0.05, pre_nms_top_k: 100, max_detections: 20}
strategy: {type: crnas_two_step, undecided_dilations: sampled}
evaluator: {type: supernet, run: run, calibration_images: 64, validation_images: 32, batch_size: 8}
budgets: {input_size: 64}
"""


@pytest.fixture(scope="module")
def crnas_trained(tmp_path_factory):
    """A tiny CR-NAS supernet (5 blocks of 64 px bottlenecks, dilations 1-3) trained for 72
    iterations on one large shape class, long enough that its paths' APs stand above the noise
    of its 32 validation images: an evaluator on it."""
    from archspec.detection.synthetic import synthesize
    from archspec.search.space import make_space
    from archspec.search.supernet_eval import SupernetEvaluator
    from archspec.search.supernet_train import train_supernet

    folder = tmp_path_factory.mktemp("crnas")
    synthesize(folder / "data", num_train=96, num_val=32, image_size=64, num_classes=1, max_objects=2,
               min_size=0.25, max_size=0.55, seed=0)
    (folder / "tiny_crnas.yaml").write_text(TINY_CRNAS, encoding="utf-8")
    config, base = load_search_config(folder / "tiny_crnas.yaml")
    train_supernet(config, base, folder / "data", folder / "run",
                   TrainOptions(epochs=6, batch_size=8, learning_rate=1e-2, warmup_steps=5, seed=0), progress=False)
    return SupernetEvaluator(config, base, make_space(config.space, base))


def path_norms(supernet, genotype) -> list:
    return [m for module in supernet.path_modules(genotype) for m in module.modules()
            if isinstance(m, torch.nn.BatchNorm2d)]


def activation_statistics(evaluator, genotype) -> list[torch.Tensor]:
    """Per BN layer of the path, the per-channel variance of its input on the validation images,
    every layer normalised by its own batch's statistics (training mode, no gradients; the
    running statistics are put back): the path's own statistics, on images recalibration never sees."""
    supernet = evaluator.supernet
    supernet.select(genotype)
    norms, seen = path_norms(supernet, genotype), {}
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    hooks = [m.register_forward_hook(lambda m, args, out, i=i: seen.setdefault(i, []).append(
        args[0].transpose(0, 1).flatten(1))) for i, m in enumerate(norms)]
    supernet.train()
    try:
        with torch.no_grad():
            for images, _ in batches(evaluator.val_set, evaluator.validation, evaluator.settings.batch_size):
                supernet(images)
    finally:
        supernet.eval()
        for hook in hooks:
            hook.remove()
        for m, (mean, var, count) in zip(norms, saved):
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
    return [torch.cat(seen[i], 1).var(1) for i in range(len(norms))]


def statistics_error(evaluator, genotype) -> tuple[list[float], list[float]]:
    """Per BN layer of the path, mean |log(variance / the path's own variance on the validation
    images)| of the shared statistics and of the recalibrated ones (the shared ones come back)."""
    norms = path_norms(evaluator.supernet, genotype)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in norms]
    truth = activation_statistics(evaluator, genotype)
    evaluator.recalibrate(norms)
    error = lambda var, true: float((var / true).log().abs().mean())  # noqa: E731
    shared = [error(var, t) for (_, var, _, _), t in zip(saved, truth)]
    recalibrated = [error(m.running_var, t) for m, t in zip(norms, truth)]
    assert all(not torch.allclose(m.running_mean, mean) for m, (mean, _, _, _) in zip(norms, saved))
    for m, (mean, var, count, momentum) in zip(norms, saved):
        m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        m.momentum = momentum
    return shared, recalibrated


@SHARES_SUPERNETS
def test_recalibration_replaces_statistics_that_do_not_fit_the_path(trained, crnas_trained):
    """Acceptance (issue 13): recalibrated statistics differ from the shared ones and fit the path;
    AP with them is compared with AP without, against the noise of the calibration images.

    Asserted, as it holds at this scale: (a) on every sampled path the recalibrated statistics
    differ from the shared ones and are closer to the path's own. Not asserted, because it does not
    hold here: "AP with recalibration >= AP without for most paths". On this fixture (CR-NAS, 72
    iterations, FCOS head with GroupNorm, 32 validation images) recalibration raises AP on some
    paths and lowers it on others, by about as much as recalibrating on other training images
    does: on 3 of the 6 paths, mean AP 0.0916 vs 0.0918 with torch's default two threads and 0.1034
    vs 0.1087 with one, against a mean |change| of 0.0079 and 0.0053 between two calibration
    subsets (docs/supernet.md, "Why recalibration helps, and when it does not", has the other
    regimes tried). What is asserted of AP instead: every path keeps an AP above an untrained
    detector's, and recalibration costs at most twice that noise in mean AP (statistics left at
    their reset values, a recalibration that measured nothing, cost 0.035-0.057 AP on these paths)."""
    from archspec.search.space import make_space
    from archspec.search.supernet_eval import SupernetEvaluator

    # trained briefly (8 iterations; a slot's running statistics have seen about 2 of them): the
    # shared statistics are still near their initial values, the recalibrated ones are the path's
    config, base = load_search_config(trained[0])
    brief = SupernetEvaluator(config, base, make_space(config.space, base))
    space = brief.space
    for genotype in [(c,) * len(space.base) for c in range(len(space.choices))]:
        shared, recalibrated = statistics_error(brief, genotype)
        assert sum(r < s for r, s in zip(recalibrated, shared)) >= 0.9 * len(shared), (genotype, shared, recalibrated)
    # trained longer (72 iterations, APs well above an untrained detector's), seeded random paths
    evaluator = crnas_trained
    other_images = evaluator.resampled(evaluator.settings.subset_seed + 1)  # another calibration subset
    rng = random.Random("recalibration acceptance")
    figures = []
    for genotype in [evaluator.space.random(rng) for _ in range(6)]:
        shared, recalibrated = statistics_error(evaluator, genotype)  # asserts the statistics moved
        assert sum(recalibrated) < sum(shared), (genotype, shared, recalibrated)
        before = [m.running_var.clone() for m in path_norms(evaluator.supernet, genotype)]
        aps = [evaluator.score_path(genotype, "recalibrate").ap, evaluator.score_path(genotype, "supernet").ap,
               other_images.score_path(genotype, "recalibrate").ap]
        assert all(torch.equal(m.running_var, var) for m, var in zip(path_norms(evaluator.supernet, genotype), before))
        assert min(aps) > 0.05, aps
        figures.append((genotype, sum(shared) / len(shared), sum(recalibrated) / len(shared), *aps))
    mean = lambda column: sum(f[column] for f in figures) / len(figures)  # noqa: E731
    noise = sum(abs(f[3] - f[5]) for f in figures) / len(figures)
    shown = [(f[0], *(round(x, 3) for x in f[1:3]), *(round(x, 4) for x in f[3:])) for f in figures]
    print("path, statistics error shared / recalibrated, AP recalibrated / shared BN / recalibrated on other "
          f"images: {shown}; recalibrated >= shared on {sum(f[3] >= f[4] for f in figures)}/{len(figures)}; "
          f"mean AP {mean(3):.4f} / {mean(4):.4f}; mean |AP change| by recalibration "
          f"{sum(abs(f[3] - f[4]) for f in figures) / len(figures):.4f}, by the calibration images {noise:.4f}")
    assert mean(3) >= mean(4) - 2 * noise, (mean(3), mean(4), noise)


def read_trials(path):
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@SHARES_SUPERNETS
def test_search_trials_are_the_same_for_one_and_two_workers_and_after_a_kill(tmp_path, trained, monkeypatch):
    from archspec.search import supernet_eval
    from archspec.search.run import run_search

    config = tiny_config(tmp_path, run=str(trained[1]), trials=8)
    run_search(config, tmp_path / "one", progress=False, batch=4)
    run_search(config, tmp_path / "two", progress=False, batch=4, workers=2)
    one = read_trials(tmp_path / "one" / "trials.csv")
    assert one == read_trials(tmp_path / "two" / "trials.csv")
    assert sum(row["status"] == "feasible" for row in one) >= 4
    assert len({row["score"] for row in one if row["score"]}) > 1
    # the run's report page holds every trial, scored by supernet AP
    from tests.test_report import page_data

    shown = page_data((tmp_path / "one" / "report.html").read_text())["trials"]
    assert [str(i) for i in shown["id"]] == [row["id"] for row in one]
    # killed after its 5th evaluation (deterministically), then resumed
    real, calls = supernet_eval.SupernetEvaluator.evaluate, []

    def dying(self, genotype):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(genotype)
        return real(self, genotype)

    monkeypatch.setattr(supernet_eval.SupernetEvaluator, "evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        run_search(config, tmp_path / "killed", progress=False, batch=4)
    monkeypatch.setattr(supernet_eval.SupernetEvaluator, "evaluate", real)
    run_search(config, tmp_path / "killed", progress=False, batch=4, resume=True)
    assert read_trials(tmp_path / "killed" / "trials.csv") == one
    assert (tmp_path / "killed" / "best.yaml").read_text() == (tmp_path / "one" / "best.yaml").read_text()


# -- CR-NAS's dilation step: undecided blocks ------------------------------------------------
def _drive_crnas(strategy, score):
    proposals = []
    while not strategy.done:
        proposal = strategy.propose()
        assert proposal.genotype is not None, proposal.reason
        proposals.append(proposal.genotype)
        strategy.feedback(proposal.genotype, score(proposal.genotype))
    return proposals


def test_the_dilation_step_marks_undecided_blocks_only_when_sampled():
    import hashlib

    from archspec.search.space import UNDECIDED, make_space, undecided_blocks
    from archspec.search.strategies import CrnasTwoStepStrategy

    config, base = load_search_config(EXAMPLES / "crnas_supernet.yaml")
    assert config.strategy.undecided_dilations == "sampled"
    space = make_space(config.space, base)

    def score(genotype):  # any fixed function of the genotype will do for the bookkeeping
        return int(hashlib.sha256(str(genotype).encode()).hexdigest()[:8], 16) / 2 ** 32

    strategy = CrnasTwoStepStrategy(space, 0, top_k=3, undecided_dilations="sampled")
    proposals = _drive_crnas(strategy, score)
    step_two = proposals[len(space.allocations):]
    assert all(not undecided_blocks(space, g) for g in proposals[:len(space.allocations)])
    total, choices = space.total, config.space.dilations
    for block in range(total):  # block b's round: blocks before b decided, b tried, after b undecided
        round_ = [g for g in step_two if undecided_blocks(space, g) == tuple(range(block + 1, total))]
        assert len(round_) == (1 if block == 0 else 3) * len(choices), block
        for genotype in round_:
            dilations = space.split(genotype)[1]
            assert all(d in choices for d in dilations[:block + 1])
            assert all(d == UNDECIDED for d in dilations[block + 1:])
    assert len(step_two) == len(choices) * (1 + 3 * (total - 1))  # every round's candidates are new
    assert len(set(proposals)) == len(proposals)
    best = strategy.best
    assert not undecided_blocks(space, best) and space.split(best)[0] in space.allocations
    # a partial architecture decodes (for its costs) as its dilation-1 completion
    partial = step_two[0]
    ones = space.split(partial)[0] + tuple(1 if d == UNDECIDED else d for d in space.split(partial)[1])
    assert archspec.fingerprint(space.decode(partial)) == archspec.fingerprint(space.decode(ones))
    # `one`, for training-free scores: nothing is ever marked undecided
    fixed = _drive_crnas(CrnasTwoStepStrategy(space, 0, top_k=3, undecided_dilations="one"), score)
    assert not any(undecided_blocks(space, g) for g in fixed)


def test_sampled_undecided_dilations_need_an_evaluator_that_runs_mini_batches(tmp_path):
    import yaml

    from archspec.errors import SpecError

    data = yaml.safe_load((EXAMPLES / "crnas_supernet.yaml").read_text())
    data["evaluator"] = {"type": "analytic"}
    path = tmp_path / "analytic.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="strategy.undecided_dilations: 'sampled' draws undecided dilations"):
        load_search_config(path)
    data["strategy"]["undecided_dilations"] = "one"
    path.write_text(yaml.safe_dump(data))
    load_search_config(path)


@SHARES_SUPERNETS
def test_a_partial_architecture_is_scored_over_seeded_completions_per_mini_batch(crnas_trained, monkeypatch):
    from archspec.search.space import UNDECIDED
    from archspec.search.supernet_eval import SupernetEvaluator, candidate_fingerprint

    evaluator = crnas_trained
    supernet, space = evaluator.supernet, evaluator.space
    allocation = space.allocations[-1]
    partial = allocation + (2,) + (UNDECIDED,) * (space.total - 1)  # block 0 decided, the rest not
    ones = allocation + (2,) + (1,) * (space.total - 1)
    selected = []
    real_select = type(supernet).select

    def spy(self, genotype):
        selected.append(tuple(genotype))
        return real_select(self, genotype)

    monkeypatch.setattr(type(supernet), "select", spy)
    first = evaluator.score_path(partial)
    batches = 64 // 8 + 32 // 8  # calibration, then validation mini-batches
    completions = selected[-batches:]
    # one completion per mini-batch, the decided genes kept, the undecided ones drawn afresh
    assert all(space.split(g)[0] == allocation and space.split(g)[1][0] == 2 and not space.undecided(g)
               for g in completions)
    assert len(set(completions)) > batches // 2
    # deterministic: the same draws and AP again, and from a fresh evaluator (as in another worker)
    selected.clear()
    assert evaluator.score_path(partial).ap == first.ap and selected[-batches:] == completions
    fresh = SupernetEvaluator(*evaluator.made_from, space, supernet=supernet)
    selected.clear()
    assert fresh.score_path(partial).ap == first.ap and selected[-batches:] == completions
    # the score depends on the draws: another sampling stream (same images) gives another AP ...
    assert evaluator.score_path(partial, fingerprint="another stream").ap != first.ap
    # ... and is not the score of fixing the undecided blocks at dilation 1
    fixed = evaluator.score_path(ones)
    assert fixed.ap != first.ap and first.ap > 0.05
    assert candidate_fingerprint(space, partial, space.decode(partial)) != \
        candidate_fingerprint(space, ones, space.decode(ones))
    # a complete genotype runs itself on every mini-batch and scores as the plain path does
    selected.clear()
    assert evaluator.score_path(ones).ap == fixed.ap and set(selected) == {ones}
    norms = path_norms(supernet, ones)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in norms]
    evaluator.recalibrate(norms)  # the path selected last, by hand
    assert evaluator._validation_ap()[0] == fixed.ap
    for m, (mean, var, count, momentum) in zip(norms, saved):
        m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        m.momentum = momentum

"""The ``supernet`` evaluator: a candidate's score is the COCO AP of its path in a trained
supernet (DetNAS section 3.3, CR-NAS section 3).

Per candidate, in order of cost:

1. the space's rules (`space.check`, `decode`), then the analytic params/FLOPs budgets, then --
   when the config has a latency budget and the latency table already holds every kernel of the
   candidate -- the latency budget; a candidate that breaks any of them is returned without a
   forward pass (a candidate whose kernels are not measured yet is scored, and the run's parent
   process measures them and applies the budget, as for every evaluator);
2. ``batch_norm: recalibrate``: the BatchNorm layers of the path are reset and their statistics
   recomputed on `calibration_images` training images, in training mode under ``no_grad`` with
   a cumulative average (momentum None), as the DetNAS release's ``bn_calibration_init`` does:
   the shared statistics mix every path's and fit none. ``batch_norm: supernet`` skips this.
3. COCO AP (pycocotools) of the path on `validation_images` validation images.

A *partial architecture* (CR-NAS's greedy dilation step with ``undecided_dilations: sampled``:
some dilation genes are `UNDECIDED`) is scored as the paper does: each calibration and each
validation mini-batch runs a completion whose undecided dilations are drawn afresh
(`CrnasSearchSpace.complete`). The draws are seeded by `subset_seed` and the partial
architecture's fingerprint, so they depend on neither the worker, the trial nor the order of
evaluation. Its BN statistics are recalibrated over those mixed completions (dilations share
the slots, so the statistics are one set), and a complete genotype is scored as before.

Afterwards the path's BatchNorm buffers are put back, so the score of a candidate never depends
on which candidates a worker evaluated before it. The calibration and validation subsets are a
fixed function of `subset_seed` (not of the worker, the trial or ``--seed``), images are
letterboxed without flips, and scores are cached by the candidate's fingerprint: the trials are
the same for any ``--workers``, after a resume, and from run to run on CPU. On CUDA the same
needs ``torch.backends.cudnn.deterministic = True`` and ``benchmark = False`` (set here when the
device is cuda) and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment; even then, GPUs of
another model may round differently.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

import torch

import archspec
from archspec.detection.coco import batches, coco_evaluate, coco_subset, open_split, seeded_subset
from archspec.detection.train import coco_results
from archspec.search.budgets import BudgetChecker
from archspec.search.evaluators import Outcome, checked_spec
from archspec.search.space import undecided_blocks
from archspec.search.supernet import Supernet
from archspec.search.supernet_train import open_supernet, read_run_file


@dataclass(frozen=True)
class PathScore:
    """What scoring one path measured."""

    ap: float
    ap50: float
    recalibration_seconds: float
    evaluation_seconds: float


class SupernetEvaluator:
    """Scores genotypes by their supernet path's AP; built once per process (`make_evaluator`)."""

    def __init__(self, config, base, space, supernet: Supernet | None = None):
        settings = config.evaluator
        self.settings = settings
        self.made_from = (config, base)
        self.space = space
        self.checker = BudgetChecker(config.budgets)
        self.device = torch.device(settings.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        self.supernet = supernet if supernet is not None else open_supernet(settings.run, config, base,
                                                                             device=settings.device)
        self.supernet.to(self.device)
        data = settings.data or read_run_file(settings.run)["data"]
        spec = self.supernet.spec
        self.train_set = open_split(data, "train", spec, train=False)
        self.val_set = open_split(data, "val", spec, train=False)
        rng = random.Random(f"supernet-eval:{settings.subset_seed}")
        self.calibration = seeded_subset(rng, len(self.train_set), settings.calibration_images)
        self.validation = seeded_subset(rng, len(self.val_set), settings.validation_images)
        self.val_gt = coco_subset(self.val_set.coco, [self.val_set.image_ids[i] for i in self.validation])
        self.cache: dict[str, tuple[float, dict]] = {}

    def resampled(self, subset_seed: int) -> "SupernetEvaluator":
        """An evaluator on the same supernet whose calibration and validation subsets are drawn
        with another `subset_seed`: how far a score moves with the images alone is the noise any
        difference between two scores has to exceed."""
        config, base = self.made_from
        settings = self.settings.model_copy(update={"subset_seed": subset_seed})
        return SupernetEvaluator(config.model_copy(update={"evaluator": settings}), base, self.space, self.supernet)

    # -- the evaluator protocol -------------------------------------------------------------
    def evaluate(self, genotype) -> Outcome:
        start = time.perf_counter()
        spec = checked_spec(self.space, genotype)
        if isinstance(spec, Outcome):
            return spec
        fingerprint = candidate_fingerprint(self.space, genotype, spec)
        metrics, broken = self.checker.analytic(spec)
        kernels = self.checker.latency_kernels(spec)
        if broken is None and kernels is not None:
            broken, metrics = self._latency_known(kernels, metrics)
        if broken:
            return Outcome("infeasible", broken, fingerprint, metrics, seconds=time.perf_counter() - start)
        if fingerprint not in self.cache:
            result = self.score_path(genotype, fingerprint=fingerprint)
            self.cache[fingerprint] = (result.ap, {"AP": result.ap, "AP50": result.ap50,
                                                   "recalibration_s": result.recalibration_seconds,
                                                   "evaluation_s": result.evaluation_seconds})
        score, extra = self.cache[fingerprint]
        # timings are not part of the trial's metrics: they differ from run to run
        extra = {k: v for k, v in extra.items() if not k.endswith("_s")}
        return Outcome("passed", None, fingerprint, metrics | extra, score, kernels, None,
                       time.perf_counter() - start)

    def _latency_known(self, kernels, metrics: dict) -> tuple[str | None, dict]:
        """The latency verdict when the table holds every kernel already; (None, metrics) else."""
        from archspec.compiler.latency import MissingKernelError

        try:
            latency = self.checker.predictor().predict_keys(kernels)
        except MissingKernelError:
            return None, metrics
        return self.checker.latency_broken(latency), metrics

    # -- scoring a path ---------------------------------------------------------------------
    def score_path(self, genotype, batch_norm: str | None = None, fingerprint: str | None = None) -> PathScore:
        """AP of a path, with its BN statistics recomputed (`batch_norm` overrides the setting).
        A partial genotype runs a seeded completion per mini-batch (`fingerprint`: the
        candidate's, computed when not given)."""
        mode = batch_norm or self.settings.batch_norm
        genotype = tuple(genotype)
        if fingerprint is None:
            fingerprint = candidate_fingerprint(self.space, genotype, self.space.decode(genotype))
        paths = PathSampler(self.space, genotype, f"{self.settings.subset_seed}:{fingerprint}")
        model = self.supernet
        norms = [m for module in model.path_modules(paths.any()) for m in module.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
                 for m in norms]
        start = time.perf_counter()
        try:
            if mode == "recalibrate":
                self.recalibrate(norms, paths.draw("calibration"))
            recalibrated = time.perf_counter()
            ap, ap50 = self._validation_ap(paths.draw("validation"))
        finally:
            for m, (mean, var, count, momentum) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
                m.momentum = momentum
        return PathScore(ap, ap50, recalibrated - start, time.perf_counter() - recalibrated)

    def recalibrate(self, norms: list, paths=None) -> None:
        """DetNAS's BN recalibration: reset, then a cumulative average over the calibration images
        run through the selected path (or, per mini-batch, the next genotype of `paths`) in
        training mode, without gradients."""
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        self.supernet.train()
        with torch.no_grad():
            for images, _ in batches(self.train_set, self.calibration, self.settings.batch_size):
                if paths is not None:
                    self.supernet.select(next(paths))
                self.supernet(images.to(self.device))
        self.supernet.eval()

    def _validation_ap(self, paths=None) -> tuple[float, float]:
        model = self.supernet
        select = None if paths is None else (lambda: model.select(next(paths)))  # a path per mini-batch
        mini_batches = batches(self.val_set, self.validation, self.settings.batch_size)
        results = coco_results(model, self.val_set, mini_batches, self.device, before_batch=select)
        metrics = coco_evaluate(self.val_gt, results)
        return metrics["AP"], metrics["AP50"]


def candidate_fingerprint(space, genotype, spec) -> str:
    """The spec's fingerprint; for a partial genotype, that of the spec together with its
    undecided blocks (its spec decodes them at dilation 1, yet it is scored otherwise)."""
    fingerprint = archspec.fingerprint(spec)
    undecided = undecided_blocks(space, tuple(genotype))
    if not undecided:
        return fingerprint
    return hashlib.sha256(f"{fingerprint}:undecided:{list(undecided)}".encode()).hexdigest()[:16]


class PathSampler:
    """The genotypes a candidate runs, mini-batch by mini-batch: the genotype itself when it is
    complete; for a partial one, a completion drawn afresh per mini-batch from a stream seeded
    by `key` (subset seed and fingerprint) and the phase (calibration or validation)."""

    def __init__(self, space, genotype, key: str):
        self.space, self.genotype, self.key = space, tuple(genotype), key
        self.partial = bool(undecided_blocks(space, self.genotype))

    def any(self):
        """A complete genotype of the candidate (all completions run the same slots)."""
        return self.space.complete(self.genotype, random.Random(0)) if self.partial else self.genotype

    def draw(self, phase: str):
        """Endless genotypes for the mini-batches of `phase`."""
        rng = random.Random(f"supernet-undecided:{self.key}:{phase}")
        while True:
            yield self.space.complete(self.genotype, rng) if self.partial else self.genotype

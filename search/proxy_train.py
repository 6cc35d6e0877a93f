"""The ``proxy_train`` evaluator: a candidate's score is the COCO AP of a brief training from
scratch (SpineNet, Du et al., CVPR 2020, "Architecture search implementation details": a proxy
task of short training at reduced image size, scored on a validation set held out of training).

Per candidate, in order of cost:

1. the space's rules (`checked_spec`), then the analytic params/FLOPs budgets, then -- when the
   config has a latency budget and the latency table already holds every kernel -- the latency
   budget, then the training memory estimate (`compiler.resources`); a candidate that breaks
   any of them is returned without training;
2. the candidate backbone inside the config's ``detector:`` template, at the evaluator's
   `input_size`, is trained from scratch for `epochs` over a fixed subset of `train_images`
   training images (AdamW, linear warm-up then cosine decay, as `archspec train`);
3. its COCO AP (pycocotools) on a fixed subset of `validation_images` validation images is the
   score.

Determinism: the subsets are a function of the config's `seed` alone; the candidate's
initialisation, data order and flips of ``candidate_seed(seed, fingerprint)`` -- never of the
worker, the trial id or the completion order. Training runs with torch's deterministic
algorithms and a fixed intra-op thread count (`threads`; CPU sums are bit-equal only at one
thread count), so ``--workers 1`` and ``--workers N`` give bit-equal scores on CPU. On CUDA the
same needs ``torch.backends.cudnn.deterministic = True``, ``benchmark = False`` (set here) and
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment before the process starts; a kernel
without a deterministic CUDA version makes torch warn (not fail), and another GPU model may round
differently. (CUDA determinism is documented, not verified: no GPU was at hand.)

Resume: the search store keeps finished trials; in addition every finished training's score is
written (atomically) to ``RUN/proxy_train/<fingerprint>.json`` with the digest of everything the
score depends on (`settings_digest`), so after a kill the trials evaluated but not yet committed
are read back instead of retrained, and a changed config or data set never reuses a score.
``RUN/proxy_train/trainings.log`` gets one line per training started (what tests count).

`proxy_train_ap` is the same training as a plain function (benchmarks call it per seed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import archspec
from archspec.compiler.resources import ResourceLimitError, guard_memory
from archspec.detection.coco import batches, coco_evaluate, coco_subset, open_split, seeded_subset, split_paths
from archspec.detection.losses import detection_loss
from archspec.detection.model import build_detector
from archspec.detection.train import TrainOptions, coco_results, lr_schedule, warmup_steps
from archspec.errors import SpecError
from archspec.files import atomic_write_text, read_text
from archspec.search.budgets import BudgetChecker
from archspec.search.evaluators import Outcome, checked_spec
from archspec.sizes import parse_input_size

CACHE_VERSION = 1
"""Part of every cached score's digest: raise it when the training changes what a score means."""
GRAD_CLIP = TrainOptions.grad_clip
"""Gradient norm clip, as `archspec train`."""


@dataclass(frozen=True)
class ProxyResult:
    """What one proxy training measured."""

    ap: float
    ap50: float
    seed: int
    train_seconds: float
    evaluation_seconds: float


def candidate_seed(seed: int, fingerprint: str) -> int:
    """The training seed of a candidate: a function of the config's seed and the candidate's
    fingerprint only (below 2**62, so seed + epoch stays a valid torch seed)."""
    digest = hashlib.sha256(f"proxy_train:{seed}:{fingerprint}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def proxy_detector(backbone, template, settings):
    """The detector a candidate trains as: the template around `backbone`, at the proxy input
    size (`settings.input_size`, default the template's)."""
    if settings.input_size is not None:
        template = template.model_copy(update={"input_size": _input_size(settings.input_size)})
    return template.around(backbone, name=f"proxy_{backbone.name}")


def _input_size(size) -> int | tuple[int, int]:
    height, width = parse_input_size(size)
    return height if height == width else (height, width)


@contextlib.contextmanager
def deterministic_torch(threads: int, device: torch.device):
    """Deterministic algorithms and `threads` intra-op threads inside; the process's settings
    are put back afterwards (a serial search trains in the run's own process)."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.set_num_threads(threads)
    # On CUDA a few backward kernels have no deterministic version; torch then warns instead of
    # failing the search (those trainings may differ in the last bits from run to run).
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


class ProxyTrainer:
    """Trains candidates of one template on one data set with one proxy setting: the splits are
    opened and the subsets drawn once, then `train_ap` trains one backbone."""

    def __init__(self, template, data_dir: str | Path, settings):
        self.template, self.settings, self.data_dir = template, settings, Path(data_dir)
        self.device = torch.device(settings.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("proxy_train: device cuda, but no CUDA device is available to this torch build")
        size = settings.input_size if settings.input_size is not None else template.input_size
        shape = _SizeOnly(parse_input_size(size))
        self.train_set = open_split(data_dir, "train", shape, train=True)
        self.val_set = open_split(data_dir, "val", shape, train=False)
        found = len(self.train_set.label_to_category_id)
        if found > template.num_classes:
            raise ValueError(f"{data_dir}: the data has {found} categories but the detector template's "
                             f"num_classes is {template.num_classes}")
        rng = random.Random(f"proxy_train:{settings.seed}")
        self.train_indices = seeded_subset(rng, len(self.train_set), settings.train_images)
        self.val_indices = seeded_subset(rng, len(self.val_set), settings.validation_images)
        self.val_gt = coco_subset(self.val_set.coco, [self.val_set.image_ids[i] for i in self.val_indices])

    def train_ap(self, backbone, seed: int) -> ProxyResult:
        """Train the candidate from scratch with `seed` (initialisation, data order, flips) and
        return its AP on the validation subset."""
        detector = proxy_detector(backbone, self.template, self.settings)
        with deterministic_torch(self.settings.threads, self.device):
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = build_detector(detector).to(self.device)
            self._train(model, seed)
            trained = time.perf_counter()
            ap, ap50 = self._validation_ap(model)
        return ProxyResult(ap, ap50, seed, trained - start, time.perf_counter() - trained)

    def _train(self, model, seed: int) -> None:
        settings = self.settings
        steps_per_epoch = max(1, math.ceil(len(self.train_indices) / settings.batch_size))
        total = steps_per_epoch * settings.epochs
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        warmup = warmup_steps(TrainOptions(epochs=settings.epochs, batch_size=settings.batch_size), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(warmup, total))
        self.train_set.seed = seed  # flips are drawn from (seed, epoch, index)
        model.train()
        for epoch in range(settings.epochs):
            self.train_set.set_epoch(epoch)
            order = torch.randperm(len(self.train_indices), generator=torch.Generator().manual_seed(seed + epoch))
            for images, targets in batches(self.train_set, [self.train_indices[i] for i in order.tolist()],
                                           settings.batch_size):
                loss = detection_loss(model, model(images.to(self.device)), targets).total
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"proxy training, epoch {epoch + 1}: the loss is {float(loss)}; "
                                             "lower evaluator.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                optimizer.step()
                scheduler.step()

    def _validation_ap(self, model) -> tuple[float, float]:
        mini_batches = batches(self.val_set, self.val_indices, self.settings.batch_size)
        metrics = coco_evaluate(self.val_gt, coco_results(model, self.val_set, mini_batches, self.device))
        return metrics["AP"], metrics["AP50"]


@dataclass(frozen=True)
class _SizeOnly:
    """What `open_split` reads of a spec (its input size) before any candidate exists."""

    image_size: tuple[int, int]


def proxy_train_ap(backbone, template, data_dir: str | Path, settings, seed: int) -> float:
    """The proxy AP of `backbone` inside the detector `template` (`archspec.detector.DetectorTemplate`)
    trained on `data_dir` with `settings` (a `ProxyTrainEvaluatorConfig`) and `seed`. The
    evaluator trains candidate ``spec`` with ``seed = candidate_seed(settings.seed,
    archspec.fingerprint(spec))``; the same call gives the same AP to the last bit. To train
    several backbones on one data set, build one `ProxyTrainer` and call its `train_ap`."""
    return ProxyTrainer(template, data_dir, settings).train_ap(backbone, seed).ap


def settings_digest(settings, template, data_dir: str | Path) -> str:
    """SHA-256 of everything a cached score depends on besides the candidate: the proxy settings
    (the device included: CPU and CUDA round differently), the detector template, the content of
    the data's annotation files, and `CACHE_VERSION`."""
    data = settings.model_dump(mode="json", exclude={"max_memory_gib"})
    parts = {"version": CACHE_VERSION, "settings": data, "template": template.model_dump(mode="json"),
             "annotations": [_file_digest(split_paths(data_dir, split)[1]) for split in ("train", "val")]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ScoreCache:
    """Finished trainings' scores in ``<folder>/<fingerprint>.json``, each tagged with the
    settings digest; a file with another digest, or one that does not read, is ignored (the
    candidate is trained again and the file replaced)."""

    def __init__(self, folder: Path, digest: str):
        self.folder, self.digest = folder, digest
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, fingerprint: str) -> dict | None:
        path = self.folder / f"{fingerprint}.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(read_text(path, kind="proxy_train score", max_bytes=1 << 16))
        except (ValueError, OSError):
            return None
        valid = (isinstance(data, dict) and data.get("digest") == self.digest and data.get("fingerprint") == fingerprint
                 and all(isinstance(data.get(k), float) and 0.0 <= data[k] <= 1.0 for k in ("AP", "AP50")))
        return data if valid else None

    def put(self, fingerprint: str, result: ProxyResult) -> None:
        record = {"fingerprint": fingerprint, "digest": self.digest, "AP": result.ap, "AP50": result.ap50,
                  "seed": result.seed}
        atomic_write_text(self.folder / f"{fingerprint}.json", json.dumps(record, sort_keys=True) + "\n")

    def log_training(self, fingerprint: str) -> None:
        """One line per training run (appended: workers write lines of a few dozen bytes, which
        O_APPEND keeps whole)."""
        line = f"{fingerprint} {os.getpid()}\n".encode()
        fd = os.open(self.folder / "trainings.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class ProxyTrainEvaluator:
    """Scores genotypes by proxy training; built once per process (`make_evaluator`)."""

    def __init__(self, config, base, space):
        settings = config.evaluator
        self.settings, self.space = settings, space
        self.checker = BudgetChecker(config.budgets)
        self.trainer = ProxyTrainer(config.detector, settings.data, settings)
        self.memory_limit = None if settings.max_memory_gib is None else int(settings.max_memory_gib * (1 << 30))
        self.digest = settings_digest(settings, config.detector, settings.data)
        folder = settings.cache_dir
        self.cache = ScoreCache(folder, self.digest) if folder is not None else None
        self.scores: dict[str, dict] = {}
        """Scores this process computed or read (a candidate met again is not read again)."""

    def evaluate(self, genotype) -> Outcome:
        start = time.perf_counter()
        spec = checked_spec(self.space, genotype)
        if isinstance(spec, Outcome):
            return spec
        fingerprint = archspec.fingerprint(spec)
        metrics, broken = self.checker.analytic(spec)
        kernels = self.checker.latency_kernels(spec)
        if broken is None and kernels is not None:
            broken = _latency_known(self.checker, kernels)
        if broken is None:
            try:
                detector = proxy_detector(spec, self.trainer.template, self.settings)
            except SpecError as exc:  # the template does not fit this candidate (e.g. a missing level)
                return Outcome("rejected", f"detector: {exc}", fingerprint, metrics,
                               seconds=time.perf_counter() - start)
            broken = self._memory_broken(detector)
        if broken:
            return Outcome("infeasible", broken, fingerprint, metrics, seconds=time.perf_counter() - start)
        record = self.score(spec, fingerprint)
        return Outcome("passed", None, fingerprint, metrics | {"AP": record["AP"], "AP50": record["AP50"]},
                       record["AP"], kernels, None, time.perf_counter() - start)

    def score(self, spec, fingerprint: str) -> dict:
        """The candidate's AP and AP50: remembered, cached in the run folder, or trained now."""
        record = self.scores.get(fingerprint)
        if record is None and self.cache is not None:
            record = self.cache.get(fingerprint)
        if record is None:
            if self.cache is not None:
                self.cache.log_training(fingerprint)
            result = self.trainer.train_ap(spec, candidate_seed(self.settings.seed, fingerprint))
            if self.cache is not None:
                self.cache.put(fingerprint, result)
            record = {"AP": result.ap, "AP50": result.ap50}
        self.scores[fingerprint] = record
        return record

    def _memory_broken(self, detector) -> str | None:
        """Why training the candidate's detector would not fit in memory (`compiler.resources`), or None."""
        try:
            guard_memory(detector, batch=self.settings.batch_size, purpose="training", limit=self.memory_limit)
        except ResourceLimitError as exc:
            return f"memory: {exc}"
        return None


def _latency_known(checker: BudgetChecker, kernels) -> str | None:
    """The latency verdict when the table holds every kernel already; None else (the run's
    parent measures the missing kernels and judges)."""
    from archspec.compiler.latency import MissingKernelError

    try:
        latency = checker.predictor().predict_keys(kernels)
    except MissingKernelError:
        return None
    return checker.latency_broken(latency)


__all__ = ["ProxyResult", "ProxyTrainer", "ProxyTrainEvaluator", "ScoreCache", "candidate_seed", "proxy_detector",
           "proxy_train_ap", "settings_digest"]

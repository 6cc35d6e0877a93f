"""Search configurations: what to search (a base spec and a space), how (a strategy), under
which budgets, and scored how. Pure data, validated like every spec (`type: search`).

    type: search
    base: ../backbones/maedet_s.yaml       # a spec file (relative to this file) or an inline spec
    space: {type: maedet}
    strategy: {type: maedet_evolution, population: 64, iterations: 2000}
    budgets: {input_size: 480, max_flops: 37.6e9, max_latency_ms: 200}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from archspec.blocks import Spec
from archspec.detector import DetectorTemplate


class MaedetSpace(Spec):
    """MAE-DET's k1kxk1 space (papers.md 2.2): per stage the output width, kernel, bottleneck
    width and depth mutate; the stem mutates only its width."""

    type: Literal["maedet"]
    """Space kind tag."""
    kernels: list[Annotated[int, Field(ge=1, le=15)]] = [3, 5]
    """Kernel choices of the middle convolution."""
    depth_deltas: list[int] = [-2, -1, 1, 2]
    """Depth changes a mutation may apply."""
    width_ratios: list[Annotated[float, Field(gt=0, le=4)]] = [1.5, 1.25, 0.8, 0.6, 0.5]
    """Multipliers a width (or bottleneck) mutation may apply; results round to multiples of 8."""
    max_channels: Annotated[int, Field(ge=8, le=16384)] = 2048
    """Largest output width."""
    min_bottleneck_ratio: Annotated[int, Field(ge=1, le=64)] = 10
    """Bottleneck width >= output width / this (the release's btn_minimum_ratio)."""
    max_layers: Annotated[int, Field(ge=1, le=1000)] | None = 91
    """Budget on convolution layers (1 per stem conv, 3 per k1kxk1 block); None for none."""
    first_stage_max_depth: Annotated[int, Field(ge=1, le=256)] = 3
    """The first stage keeps at most this many blocks."""


DETNAS_CHOICES = [{"type": "shufflenet_v2", "kernel": 3}, {"type": "shufflenet_v2", "kernel": 5},
                  {"type": "shufflenet_v2", "kernel": 7}, {"type": "shuffle_xception"}]


class DetnasSpace(Spec):
    """DetNAS's space (papers.md 3.1): every layer of every stage picks one choice block."""

    type: Literal["detnas"]
    """Space kind tag."""
    choices: list[dict] = Field(default_factory=lambda: [dict(c) for c in DETNAS_CHOICES], min_length=2)
    """Block specs a layer may use (default: shufflenet 3x3, 5x5, 7x7, xception)."""


CRNAS_RESNET_DEPTHS = [list(range(1, 11)), list(range(1, 11)), [2, 3, 5, 6, 9, 11, 14, 17, 20, 23],
                       [2, 3, 4, 6, 7, 9, 11, 13, 15, 17]]
"""CR-NAS's allowed block counts per stage for the ResNet series (papers.md 4.1)."""


class CrnasSpace(Spec):
    """CR-NAS's computation reallocation (papers.md 4.1): the number of blocks per stage, with
    their total fixed (so FLOPs stay about constant), and the dilation of every block's spatial
    convolution (which changes neither params nor FLOPs)."""

    type: Literal["crnas"]
    """Space kind tag."""
    depth_choices: list[list[Annotated[int, Field(ge=1, le=256)]]] = Field(
        default_factory=lambda: [list(c) for c in CRNAS_RESNET_DEPTHS], min_length=1)
    """Allowed block counts of each stage (default: the paper's ResNet-series table)."""
    total_blocks: Annotated[int, Field(ge=1, le=1024)] | None = None
    """Blocks over all stages (default: the base's total, e.g. 16 for ResNet-50)."""
    dilations: list[Annotated[int, Field(ge=1, le=32)]] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    """Dilation choices of every block (the paper: 1, 2, 3)."""


class SpinenetSpace(Spec):
    """SpineNet's search space (papers.md 1): over a scale-permuted base, the levels of the
    intermediate blocks are permuted (and, separately, those of the output blocks), each block's
    two parents are rewired to any earlier blocks, and block kinds switch between bottleneck
    and basic ("block adjustment")."""

    type: Literal["spinenet"]
    """Space kind tag."""
    kinds: list[Literal["bottleneck", "basic"]] = Field(default_factory=lambda: ["bottleneck", "basic"], min_length=1)
    """Block kinds a block may take."""
    permute_outputs: bool = True
    """Whether output blocks also permute their levels among themselves."""


AnySpace = Annotated[Union[MaedetSpace, DetnasSpace, CrnasSpace, SpinenetSpace], Field(discriminator="type")]

SPACE_BASE_TYPES = {"maedet": "staged", "detnas": "staged", "crnas": "staged", "spinenet": "scale_permuted"}
"""The base spec kind each space edits."""


class MaedetEvolution(Spec):
    """MAE-DET's evolution: mutate a random member of the population, insert the child if it
    meets the budgets, keep the best `population` by score."""

    type: Literal["maedet_evolution"]
    """Strategy kind tag."""
    population: Annotated[int, Field(ge=1, le=100000)] = 256
    """Population size (the release uses 256)."""
    mutations_per_child: Annotated[int, Field(ge=1, le=16)] = 2
    """Mutations applied to make one child (the release's block_num = 2)."""


class RandomWalk(Spec):
    """Random search: every candidate is the base mutated a random number of times."""

    type: Literal["random"]
    """Strategy kind tag."""
    max_mutations: Annotated[int, Field(ge=1, le=100)] = 8
    """Each candidate applies 1..max_mutations random mutations to the base."""


class DetnasEvolution(Spec):
    """DetNAS's evolutionary search (papers.md 3.4): generations of `population` candidates made
    of `mutations` mutated and `crossovers` crossed-over children of the `parents` best so far,
    topped up with random ones; only candidates within the params/FLOPs budgets are admitted
    (up to 10x tries each)."""

    type: Literal["detnas_evolution"]
    """Strategy kind tag."""
    population: Annotated[int, Field(ge=2, le=10000)] = 50
    """Candidates per generation."""
    parents: Annotated[int, Field(ge=1, le=10000)] = 10
    """Top-k candidates children are made from."""
    mutations: Annotated[int, Field(ge=0, le=10000)] = 20
    """Mutated children per generation."""
    crossovers: Annotated[int, Field(ge=0, le=10000)] = 20
    """Crossed-over children per generation (uniform per gene)."""
    mutation_prob: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Probability that a gene is redrawn in a mutation."""


class AgingEvolution(Spec):
    """Regularized (aging) evolution (Real et al. 2019): sample `sample_size` members of the
    population, mutate the best; the oldest member dies when a child joins."""

    type: Literal["aging_evolution"]
    """Strategy kind tag."""
    population: Annotated[int, Field(ge=1, le=100000)] = 64
    """Population size."""
    sample_size: Annotated[int, Field(ge=1, le=100000)] = 16
    """Tournament size."""


class CrnasTwoStep(Spec):
    """CR-NAS's two steps (papers.md 4.1): score every allowed stage allocation (dilations as in
    the base) and keep the best; then choose dilations block by block, greedily, keeping the
    `top_k` best partial choices (blocks not yet chosen keep dilation 1). Stops by itself."""

    type: Literal["crnas_two_step"]
    """Strategy kind tag."""
    top_k: Annotated[int, Field(ge=1, le=100)] = 3
    """Partial architectures kept after each block's choice (the paper: 3)."""
    max_allocations: Annotated[int, Field(ge=1, le=100000)] = 1000
    """Allocations scored in step one; a seeded sample when more are allowed."""


AnyStrategy = Annotated[Union[MaedetEvolution, RandomWalk, DetnasEvolution, AgingEvolution, CrnasTwoStep],
                        Field(discriminator="type")]


class Budgets(Spec):
    """Limits a feasible candidate respects, checked in order of cost (params, FLOPs, latency)."""

    input_size: Annotated[int, Field(ge=16, le=4096)] | list[Annotated[int, Field(ge=16, le=4096)]] = 224
    """Input size (H or [H, W]) at which FLOPs, latency and the score are taken."""
    max_params: Annotated[float, Field(gt=0)] | None = None
    """Most parameters."""
    min_params: Annotated[float, Field(ge=0)] | None = None
    """Fewest parameters."""
    max_flops: Annotated[float, Field(gt=0)] | None = None
    """Most FLOPs (2 x MACs) at the input size."""
    min_flops: Annotated[float, Field(ge=0)] | None = None
    """Fewest FLOPs (2 x MACs) at the input size."""
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    """Most predicted latency, batch 1, on `latency_runtime`/`latency_provider` at `latency_input_size`."""
    latency_runtime: Literal["ort", "torch"] = "ort"
    """Runtime the latency budget refers to."""
    latency_provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    """Provider the latency budget refers to."""
    latency_input_size: Annotated[int, Field(ge=16, le=4096)] | None = None
    """Input size for latency (default: `input_size`); smaller keeps kernel tables small."""


class ReceptiveFieldTarget(Spec):
    """The receptive-field term of the `maedet_rf` score (a training-free stand-in for CR-NAS's
    supernet AP): CR-NAS reallocates computation so that each FPN level's receptive field fits
    the objects assigned to it. The term is ``-weight * sum_k |log2(RF_k / (ratio * anchor_k))|``
    over C3..C5, with RF_k the theoretical receptive field of output C<k> (pixels, dilation
    included) and anchor_k = 4 * 2**k the RetinaNet anchor side at level k."""

    ratio: Annotated[float, Field(gt=0, le=100)] = 6.0
    """Wanted receptive field in anchor sides (theoretical RFs are several times the effective ones)."""
    weight: Annotated[float, Field(ge=0, le=1e6)] = 50.0
    """Score points per octave of mismatch, per level."""


class SearchConfig(Spec):
    """A search: base spec, space, strategy, budgets, score."""

    type: Literal["search"]
    """Document kind tag."""
    name: str = "search"
    """A name for people."""
    description: str = ""
    """Free text."""
    base: str | dict
    """The starting spec: a path (relative to this file) or an inline spec document."""
    space: AnySpace
    """Which choices a candidate may make."""
    strategy: AnyStrategy
    """How candidates are proposed."""
    budgets: Budgets = Budgets()
    """Limits every feasible candidate respects."""
    score: Literal["maedet", "maedet_rf"] = "maedet"
    """Objective (higher is better): MAE-DET's analytic multi-scale entropy (`maedet`), or that
    plus the receptive-field term of `receptive_field` (`maedet_rf`, dilation-sensitive, for CR-NAS)."""
    receptive_field: ReceptiveFieldTarget = Field(default_factory=ReceptiveFieldTarget)
    """Targets of the `maedet_rf` score."""
    detector: DetectorTemplate | None = None
    """Neck, head, classes and input size wrapped around every candidate backbone: with it,
    `best.yaml` is a complete detector spec (backbone inline) that `archspec train`, `export` and
    `detect` take as it is, and the trained evaluators (proxy training, the supernet) train
    detectors of this form. Without it the search works on backbones alone."""
    trials: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    """Candidates to propose (``--max-trials`` overrides)."""
    seed: int = 0
    """Seed of every random choice (``--seed`` overrides)."""
    evaluator: "AnyEvaluator" = Field(default_factory=lambda: AnalyticEvaluatorConfig(type="analytic"))
    """How candidates are scored: ``analytic`` (training-free, by `score`) or ``supernet`` (COCO AP
    of the candidate's path in a trained one-shot supernet; `score` is then unused)."""


# -- evaluators (issue 13) ---------------------------------------------------------------------
class AnalyticEvaluatorConfig(Spec):
    """Training-free scoring: validate, analytic budgets, the config's `score` (microseconds)."""

    type: Literal["analytic"]
    """Evaluator kind tag."""


class SupernetEvaluatorConfig(Spec):
    """One-shot scoring (DetNAS, CR-NAS): a candidate's score is the COCO AP of its path in a
    supernet trained by `archspec supernet train`, after (by default) recomputing the path's
    BatchNorm statistics on training images, as the DetNAS release does."""

    type: Literal["supernet"]
    """Evaluator kind tag."""
    run: str
    """The supernet's run folder (relative to this file), made by `archspec supernet train`."""
    data: str | None = None
    """COCO-format folder of the calibration (train split) and validation (val split) images,
    relative to this file; default: the folder the supernet was trained on."""
    checkpoint: Literal["last.pt"] = "last.pt"
    """Checkpoint of the run whose weights are used."""
    calibration_images: Annotated[int, Field(ge=0, le=1_000_000)] = 256
    """Training images run through each path to recompute its BatchNorm statistics."""
    validation_images: Annotated[int, Field(ge=1, le=1_000_000)] = 500
    """Validation images the AP is measured on (a fixed seeded subset; all if fewer)."""
    batch_norm: Literal["recalibrate", "supernet"] = "recalibrate"
    """``recalibrate``: reset the path's BN statistics and recompute them on the calibration
    images (DetNAS); ``supernet``: use the statistics shared during supernet training."""
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Images per forward pass (calibration and validation)."""
    subset_seed: int = 0
    """Seed of the calibration and validation subsets (fixed: not the search's ``--seed``)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where paths are evaluated (one device per worker process)."""


AnyEvaluator = Annotated[Union[AnalyticEvaluatorConfig, SupernetEvaluatorConfig], Field(discriminator="type")]
SearchConfig.model_rebuild()


def _resolve_evaluator_paths(config: SearchConfig, folder: Path) -> SearchConfig:
    """A supernet evaluator's `run` and `data`, made absolute (relative to the config file)."""
    evaluator = config.evaluator
    if evaluator.type != "supernet":
        return config
    update = {"run": str((folder / evaluator.run).resolve())}
    if evaluator.data is not None:
        update["data"] = str((folder / evaluator.data).resolve())
    return config.model_copy(update={"evaluator": evaluator.model_copy(update=update)})


def load_search_config(path: str | Path) -> tuple[SearchConfig, object]:
    """The validated config and its validated base spec (errors name file and field)."""
    from pydantic import TypeAdapter, ValidationError

    from archspec.errors import SpecError
    from archspec.io import _from_validation_error, load, parse_text, validate

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", "no such file", source=str(path)) from None
    data = parse_text(text, source=str(path))
    if not isinstance(data, dict):
        raise SpecError("", "a search config must be a mapping with 'type: search'", source=str(path))
    try:
        config = TypeAdapter(SearchConfig).validate_python(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, str(path)) from None
    if isinstance(config.base, str):
        base_path = (path.parent / config.base).resolve()
        try:
            base = load(base_path)
        except SpecError as exc:
            raise SpecError(issues=exc.with_prefix("base").issues, source=str(path)) from None
    else:
        try:
            base = validate(config.base)
        except SpecError as exc:
            raise exc.with_prefix("base").with_source(str(path)) from None
    wanted = SPACE_BASE_TYPES[config.space.type]
    if base.type != wanted:
        raise SpecError("base", f"the {config.space.type} space edits {wanted} backbones, not {base.type!r}",
                        source=str(path))
    if config.detector is not None:
        try:
            config.detector.around(base)
        except SpecError as exc:
            raise SpecError(issues=exc.with_prefix("detector").issues, source=str(path)) from None
    if config.evaluator.type == "supernet" and config.detector is None:
        raise SpecError("evaluator", "the supernet evaluator trains and scores detectors: add a detector: template",
                        source=str(path))
    return _resolve_evaluator_paths(config, path.parent), base

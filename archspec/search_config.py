"""Search configurations: what to search (a base spec and a space), how (a strategy), under
which budgets, and scored how. Pure data, validated like every spec (`type: search`).

    type: search
    base: ../backbones/maedet_s.yaml       # a spec file (relative to this file) or an inline spec
    space: {type: maedet}
    strategy: {type: maedet_evolution, population: 64, iterations: 2000}
    budgets: {input_size: 480, max_flops: 37.6e9, max_latency_ms: 200}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from archspec.blocks import Spec, registered_union
from archspec.detector import DetectorTemplate
from archspec.errors import SpecError
from archspec.registry import Registry

CAPABILITIES = ("random", "mutate", "crossover", "enumerate", "redraw", "reallocate")
"""What a search space can do for a strategy, in the order messages list them:

* ``random``: ``random(rng)``, a genotype drawn from the whole space;
* ``mutate``: ``mutate(genotype, rng, times)``, a nearby genotype (the space's own moves);
* ``crossover``: ``crossover(a, b, rng)``, a child mixing two parents;
* ``enumerate``: ``enumerate(limit)``, every genotype (when the space is small enough);
* ``redraw``: ``redraw(genotype, rng, prob)``, every decision redrawn with probability ``prob``
  (DetNAS's mutation; it needs a genotype of independent decisions);
* ``reallocate``: CR-NAS's stage allocations and per-block dilations (``allocations``,
  ``split``, ``with_allocation``, ``with_dilation``, ``total``).

Every space also has ``base`` (its starting genotype), ``check`` and ``decode``. Capabilities
are declared as data on the config models (`SpaceConfig.offers`, `StrategyConfig.needs`) so the
spec layer can refuse a strategy the space cannot serve when the config loads, before any run
folder is touched; the search layer checks at registration that an implementation has the
methods its config declares."""

SPACE_CONFIGS: Registry[type["SpaceConfig"]] = Registry("search space config")
"""Space ``type`` tag -> its config model (the members of `AnySpace`)."""
STRATEGY_CONFIGS: Registry[type["StrategyConfig"]] = Registry("search strategy config")
"""Strategy ``type`` tag -> its config model (the members of `AnyStrategy`)."""
EVALUATOR_CONFIGS: Registry[type["EvaluatorConfig"]] = Registry("search evaluator config")
"""Evaluator ``type`` tag -> its config model (the members of `AnyEvaluator`)."""


class SpaceConfig(Spec):
    """Base of every space config: what the space offers and which base specs it edits."""

    offers: ClassVar[frozenset[str]] = frozenset()
    """Capabilities (`CAPABILITIES`) the space implements."""
    base_types: ClassVar[tuple[str, ...]] = ("staged",)
    """Spec kinds (`type` tags) of the base the space edits."""

    def default_base(self) -> dict | None:
        """The base spec data when the search config gives none (spaces that carry their own
        starting point, such as a template's defaults); None when a base is required."""
        return None

    def resolved(self, config_dir: Path, source: str) -> "SpaceConfig":
        """The config with files it names read in (relative to the search config's folder), so
        that the run's identity covers their content; errors name the file and field."""
        return self

    def check_base(self, base) -> None:
        """`SpecError` (path under ``base``) if the space cannot start from this base spec."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.offers) - set(CAPABILITIES)
        if unknown:
            raise TypeError(f"{cls.__name__}.offers names unknown capabilities {sorted(unknown)}")


class StrategyConfig(Spec):
    """Base of every strategy config: what the strategy needs from a space."""

    needs: ClassVar[frozenset[str]] = frozenset()
    """Capabilities (`CAPABILITIES`) the strategy calls."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.needs) - set(CAPABILITIES)
        if unknown:
            raise TypeError(f"{cls.__name__}.needs names unknown capabilities {sorted(unknown)}")


class EvaluatorConfig(Spec):
    """Base of every evaluator config."""

    needs_detector: ClassVar[bool] = False
    """Whether the evaluator trains or scores detectors (the config must then have a `detector:`)."""
    samples_undecided: ClassVar[bool] = False
    """Whether the evaluator scores partial architectures by sampling their undecided choices per
    mini-batch (CR-NAS's dilation step with ``undecided_dilations: sampled``)."""

    run_files: ClassVar[tuple[str, ...]] = ()
    """Names the evaluator writes in the search's run folder (recorded in its marker)."""
    score_label: ClassVar[str | None] = None
    """What the evaluator's scores are, for plots and the report page; None: the search config's
    analytic `score`."""

    def resolved(self, config_dir: Path) -> "EvaluatorConfig":
        """The config with the paths it names made absolute (relative to the search config's folder)."""
        return self

    def in_run(self, folder: Path) -> "EvaluatorConfig":
        """The config of an evaluator working for the search run in `folder` (e.g. to keep a
        per-trial cache there); not part of the run's identity. Default: unchanged."""
        return self


def ordered(capabilities) -> list[str]:
    """Capabilities in the order of `CAPABILITIES` (messages list them so)."""
    return sorted(capabilities, key=CAPABILITIES.index)


@SPACE_CONFIGS.register("maedet")
class MaedetSpace(SpaceConfig):
    """MAE-DET's k1kxk1 space (Sun et al., MAE-DET, ICML 2022; the release's k1kxk1 space and its mutator): per stage the output width, kernel, bottleneck
    width and depth mutate; the stem mutates only its width."""

    offers: ClassVar[frozenset[str]] = frozenset({"mutate"})
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


@SPACE_CONFIGS.register("detnas")
class DetnasSpace(SpaceConfig):
    """DetNAS's space (Chen et al., DetNAS, NeurIPS 2019; the release's ShuffleNetV2 choice blocks): every layer of every stage picks one choice block."""

    offers: ClassVar[frozenset[str]] = frozenset({"random", "mutate", "crossover", "redraw"})
    type: Literal["detnas"]
    """Space kind tag."""
    choices: list[dict] = Field(default_factory=lambda: [dict(c) for c in DETNAS_CHOICES], min_length=2)
    """Block specs a layer may use (default: shufflenet 3x3, 5x5, 7x7, xception)."""


CRNAS_RESNET_DEPTHS = [list(range(1, 11)), list(range(1, 11)), [2, 3, 5, 6, 9, 11, 14, 17, 20, 23],
                       [2, 3, 4, 6, 7, 9, 11, 13, 15, 17]]
"""CR-NAS's allowed block counts per stage for the ResNet series (Liang et al., CR-NAS, ICLR 2020; its ResNet-series choice table)."""


@SPACE_CONFIGS.register("crnas")
class CrnasSpace(SpaceConfig):
    """CR-NAS's computation reallocation (Liang et al., CR-NAS, ICLR 2020; its ResNet-series choice table): the number of blocks per stage, with
    their total fixed (so FLOPs stay about constant), and the dilation of every block's spatial
    convolution (which changes neither params nor FLOPs)."""

    offers: ClassVar[frozenset[str]] = frozenset({"random", "mutate", "crossover", "reallocate"})
    type: Literal["crnas"]
    """Space kind tag."""
    depth_choices: list[list[Annotated[int, Field(ge=1, le=256)]]] = Field(
        default_factory=lambda: [list(c) for c in CRNAS_RESNET_DEPTHS], min_length=1)
    """Allowed block counts of each stage (default: the paper's ResNet-series table)."""
    total_blocks: Annotated[int, Field(ge=1, le=1024)] | None = None
    """Blocks over all stages (default: the base's total, e.g. 16 for ResNet-50)."""
    dilations: list[Annotated[int, Field(ge=1, le=32)]] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    """Dilation choices of every block (the paper: 1, 2, 3)."""


@SPACE_CONFIGS.register("spinenet")
class SpinenetSpace(SpaceConfig):
    """SpineNet's search space (Du et al., SpineNet, CVPR 2020): over a scale-permuted base, the levels of the
    intermediate blocks are permuted (and, separately, those of the output blocks), each block's
    two parents are rewired to any earlier blocks, and block kinds switch between bottleneck
    and basic ("block adjustment")."""

    offers: ClassVar[frozenset[str]] = frozenset({"random", "mutate"})
    base_types: ClassVar[tuple[str, ...]] = ("scale_permuted",)
    type: Literal["spinenet"]
    """Space kind tag."""
    kinds: list[Literal["bottleneck", "basic"]] = Field(default_factory=lambda: ["bottleneck", "basic"], min_length=1)
    """Block kinds a block may take."""
    permute_outputs: bool = True
    """Whether output blocks also permute their levels among themselves."""


@SPACE_CONFIGS.register("annotated")
class AnnotatedSpace(SpaceConfig):
    """A space written in a spec document itself (a template: see `archspec.template`): the
    genotype is the vector of the template's decisions; random draws, mutation (k decisions),
    uniform crossover, DetNAS's per-decision redraw and (for small spaces) enumeration are
    generic, and every decoded spec is checked by the spec validator."""

    offers: ClassVar[frozenset[str]] = frozenset({"random", "mutate", "crossover", "enumerate", "redraw"})
    base_types: ClassVar[tuple[str, ...]] = ("staged", "scale_permuted")
    type: Literal["annotated"]
    """Space kind tag."""
    template: str | dict
    """The template: a file (relative to the search config) or the template document inline.
    When the config loads, a file is read in, so a run's identity covers the template's text."""
    enumerate_limit: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """Largest space `enumerate` walks (a strategy that enumerates refuses larger ones)."""

    def parsed(self):
        """The parsed template (inline data; `resolved` has read any file in)."""
        from archspec.template import parse_template

        if not isinstance(self.template, dict):
            raise ValueError("an annotated space config must be resolved before its template is parsed")
        return parse_template(self.template, check_branches=False)

    def resolved(self, config_dir: Path, source: str) -> "AnnotatedSpace":
        from archspec.errors import SpecError
        from archspec.template import load_template, parse_template

        if isinstance(self.template, str):
            template = load_template(config_dir / self.template)  # errors name the template file
        else:
            try:
                template = parse_template(self.template, source=source, base_dir=config_dir)
            except SpecError as exc:
                raise exc.with_prefix("space.template") from None
        return self.model_copy(update={"template": template.to_data()})

    def default_base(self) -> dict | None:
        from archspec.errors import SpecError

        template = self.parsed()
        try:
            return template.data(template.default) if template.decode(template.default) else None
        except SpecError as exc:
            raise SpecError("template", f"the template's defaults (first options, or `default:`) do not make a "
                                        f"valid spec: {exc}") from None

    def check_base(self, base) -> None:
        from archspec.errors import SpecError

        if self.parsed().match(base) is None:
            raise SpecError("base", "the base spec is not one of the template's architectures (leave `base` out "
                                    "to start from the template's defaults)")


AnySpace = registered_union(SPACE_CONFIGS, SpaceConfig)
"""Any registered space config, chosen by its `type` tag."""


@STRATEGY_CONFIGS.register("maedet_evolution")
class MaedetEvolution(StrategyConfig):
    """MAE-DET's evolution: mutate a random member of the population, insert the child if it
    meets the budgets, keep the best `population` by score."""

    needs: ClassVar[frozenset[str]] = frozenset({"mutate"})
    type: Literal["maedet_evolution"]
    """Strategy kind tag."""
    population: Annotated[int, Field(ge=1, le=100000)] = 256
    """Population size (the release uses 256)."""
    mutations_per_child: Annotated[int, Field(ge=1, le=16)] = 2
    """Mutations applied to make one child (the release's block_num = 2)."""


@STRATEGY_CONFIGS.register("random")
class RandomWalk(StrategyConfig):
    """Random search: every candidate is the base mutated a random number of times."""

    needs: ClassVar[frozenset[str]] = frozenset({"mutate"})
    type: Literal["random"]
    """Strategy kind tag."""
    max_mutations: Annotated[int, Field(ge=1, le=100)] = 8
    """Each candidate applies 1..max_mutations random mutations to the base."""


@STRATEGY_CONFIGS.register("detnas_evolution")
class DetnasEvolution(StrategyConfig):
    """DetNAS's evolutionary search (Chen et al., DetNAS, NeurIPS 2019; evolutionary search on the SPOS supernet): generations of `population` candidates made
    of `mutations` mutated and `crossovers` crossed-over children of the `parents` best so far,
    topped up with random ones; only candidates within the params/FLOPs budgets are admitted
    (up to 10x tries each)."""

    needs: ClassVar[frozenset[str]] = frozenset({"random", "redraw", "crossover"})
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


@STRATEGY_CONFIGS.register("aging_evolution")
class AgingEvolution(StrategyConfig):
    """Regularized (aging) evolution (Real et al. 2019): sample `sample_size` members of the
    population, mutate the best; the oldest member dies when a child joins."""

    needs: ClassVar[frozenset[str]] = frozenset({"mutate"})
    type: Literal["aging_evolution"]
    """Strategy kind tag."""
    population: Annotated[int, Field(ge=1, le=100000)] = 64
    """Population size."""
    sample_size: Annotated[int, Field(ge=1, le=100000)] = 16
    """Tournament size."""


@STRATEGY_CONFIGS.register("crnas_two_step")
class CrnasTwoStep(StrategyConfig):
    """CR-NAS's two steps (Liang et al., CR-NAS, ICLR 2020; its ResNet-series choice table): score every allowed stage allocation (dilations as in
    the base) and keep the best; then choose dilations block by block, greedily, keeping the
    `top_k` best partial choices (blocks not yet chosen: see `undecided_dilations`). Stops by itself."""

    needs: ClassVar[frozenset[str]] = frozenset({"reallocate"})
    type: Literal["crnas_two_step"]
    """Strategy kind tag."""
    top_k: Annotated[int, Field(ge=1, le=100)] = 3
    """Partial architectures kept after each block's choice (the paper: 3)."""
    max_allocations: Annotated[int, Field(ge=1, le=100000)] = 1000
    """Allocations scored in step one; a seeded sample when more are allowed."""
    undecided_dilations: Literal["one", "sampled"] = "one"
    """How the dilation step scores a partial architecture's blocks not chosen yet. ``sampled``
    (the paper's way; needs an evaluator that runs mini-batches, the supernet's): they are marked
    undecided and their dilations drawn per mini-batch. ``one``: they stay at dilation 1 (what a
    deterministic training-free score can do)."""


AnyStrategy = registered_union(STRATEGY_CONFIGS, StrategyConfig)
"""Any registered strategy config, chosen by its `type` tag."""


@EVALUATOR_CONFIGS.register("analytic")
class AnalyticEvaluatorConfig(EvaluatorConfig):
    """The training-free evaluator: the space's rules, the validated spec, analytic params and
    FLOPs budgets, and the config's `score` (microseconds per candidate)."""

    type: Literal["analytic"]
    """Evaluator kind tag."""


AnyEvaluator = registered_union(EVALUATOR_CONFIGS, EvaluatorConfig)
"""Any registered evaluator config, chosen by its `type` tag."""


class Budgets(Spec):
    """Limits a feasible candidate respects, checked in order of cost (params, FLOPs, latency)."""

    input_size: Annotated[int, Field(ge=16, le=4096)] | Annotated[
        list[Annotated[int, Field(ge=16, le=4096)]], Field(min_length=2, max_length=2)] = 224
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
    latency_threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    """Intra-op threads the latency budget refers to (default: physical cores). With 1 on the CPU,
    kernels are timed by the thread's CPU time, which load from other processes hardly moves."""
    latency_table: Literal["run", "machine"] = "run"
    """Where the latency kernels a search measures are kept: `run`, the run's own OUT/latency.sqlite
    (each run measures its design kernels again); `machine`, this machine's shared table
    ($ARCHSPEC_LATENCY_TABLE or ~/.cache/archspec/latency.sqlite), so every later run of the config
    on this machine measures nothing and judges every candidate as the first one did. The
    `--latency-table` option overrides it."""

    @model_validator(mode="after")
    def _minimum_within_maximum(self) -> "Budgets":
        for low, high in (("min_params", "max_params"), ("min_flops", "max_flops")):
            lowest, highest = getattr(self, low), getattr(self, high)
            if lowest is not None and highest is not None and lowest > highest:
                raise SpecError(low, f"{lowest:g} is above {high} {highest:g}: no candidate could be feasible")
        return self


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
    base: str | dict | None = None
    """The starting spec: a path (relative to this file) or an inline spec document. Spaces that
    carry their own starting point (`annotated`: the template's defaults) may leave it out."""
    space: AnySpace
    """Which choices a candidate may make."""
    strategy: AnyStrategy
    """How candidates are proposed (it must need only capabilities the space offers)."""
    evaluator: AnyEvaluator = Field(default_factory=lambda: AnalyticEvaluatorConfig(type="analytic"))
    """How candidates are evaluated (default: the analytic, training-free evaluator)."""
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


@EVALUATOR_CONFIGS.register("supernet")
class SupernetEvaluatorConfig(EvaluatorConfig):
    """One-shot scoring (DetNAS, CR-NAS): a candidate's score is the COCO AP of its path in a
    supernet trained by `archspec supernet train`, after (by default) recomputing the path's
    BatchNorm statistics on training images, as the DetNAS release does."""

    samples_undecided: ClassVar[bool] = True
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


    needs_detector: ClassVar[bool] = True
    score_label: ClassVar[str | None] = "AP of the supernet path"

    def resolved(self, config_dir: Path) -> "SupernetEvaluatorConfig":
        update = {"run": str((config_dir / self.run).resolve())}
        if self.data is not None:
            update["data"] = str((config_dir / self.data).resolve())
        return self.model_copy(update=update)


@EVALUATOR_CONFIGS.register("proxy_train")
class ProxyTrainEvaluatorConfig(EvaluatorConfig):
    """Proxy-task training (SpineNet, Du et al., CVPR 2020, "Architecture search implementation
    details": candidates are ranked by the AP of a brief training at reduced image size, measured
    on a reserved validation set): each candidate backbone, inside the config's `detector:`
    template at `input_size`, is trained from scratch for `epochs` on a fixed seeded subset of
    `train_images` training images, and its score is the COCO AP on a fixed seeded subset of
    `validation_images` validation images (higher is better)."""

    type: Literal["proxy_train"]
    """Evaluator kind tag."""
    data: str
    """COCO-format folder with a train and a val split (relative to this file), e.g. one written
    by `archspec data synth`."""
    epochs: Annotated[int, Field(ge=1, le=1000)] = 2
    """Training epochs over the training subset (the proxy's brevity)."""
    input_size: Annotated[int, Field(ge=16, le=4096)] | Annotated[
        list[Annotated[int, Field(ge=16, le=4096)]], Field(min_length=2, max_length=2)] | None = None
    """Proxy input size (H or [H, W]), usually below the detector's; default: the template's."""
    train_images: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    """Training images (a fixed seeded subset of the train split; all of it if fewer)."""
    validation_images: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    """Validation images the AP is measured on (a fixed seeded subset of the val split; all if fewer)."""
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Images per training step and per evaluation forward pass."""
    lr: Annotated[float, Field(gt=0, le=10)] = 1e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 1% of it, as `archspec train`)."""
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-4
    """AdamW weight decay."""
    seed: int = 0
    """Seed of the subsets and, with each candidate's fingerprint, of its initialisation, data order
    and flips (fixed: not the search's ``--seed``, so a candidate scores the same in every search)."""
    threads: Annotated[int, Field(ge=1, le=1024)] = 1
    """Intra-op threads per worker while training: CPU results are bit-equal only at one thread
    count, so it is part of the config (not of the machine); more workers use more cores."""
    max_memory_gib: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    """Refuse (as infeasible) candidates whose estimated training memory exceeds this many GiB;
    default: ``$ARCHSPEC_MAX_MEMORY`` or half of the free memory, which depends on the machine and
    its load -- set it when trials must be identical everywhere."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where candidates train (one device per worker process)."""

    needs_detector: ClassVar[bool] = True
    run_files: ClassVar[tuple[str, ...]] = ("proxy_train",)
    score_label: ClassVar[str | None] = "AP after proxy training"
    _run_folder: str | None = PrivateAttr(None)
    """The search's run folder (set by the run, `in_run`): finished trials' scores are cached in
    its ``proxy_train/`` folder. Private: it is not part of the run's identity, and it does not
    travel to Ray actors (their nodes may not share the folder)."""

    def resolved(self, config_dir: Path) -> "ProxyTrainEvaluatorConfig":
        return self.model_copy(update={"data": str((config_dir / self.data).resolve())})

    def in_run(self, folder: Path) -> "ProxyTrainEvaluatorConfig":
        config = self.model_copy()
        config._run_folder = str(Path(folder).resolve())
        return config

    @property
    def cache_dir(self) -> Path | None:
        """Where finished trials' scores are kept (``RUN/proxy_train``); None outside a run."""
        return Path(self._run_folder) / "proxy_train" if self._run_folder else None


def load_search_config(path: str | Path, *, overrides: Sequence[str] = ()) -> tuple[SearchConfig, object]:
    """The validated config and its validated base spec (errors name file and field);
    `overrides` are ``key.path=value`` strings applied before validation (``--set``)."""
    from archspec.io import _format_of, _overridden, _read, parse_text

    path = Path(path)
    data = parse_text(_read(path), format=_format_of(path), source=str(path))
    return search_config_from_data(_overridden(data, overrides, str(path)), source=str(path),
                                   base_dir=path.parent)


def search_config_from_data(data, *, source: str | None = None,
                            base_dir: Path | None = None) -> tuple[SearchConfig, object]:
    """A search config validated from plain data, with its base (a file relative to `base_dir`,
    default the current directory, inline, or the space's own default) and its detector template
    checked against it. A strategy the space cannot serve is refused here, before anything runs."""
    from pydantic import TypeAdapter, ValidationError

    from archspec.errors import SpecError
    from archspec.io import _from_validation_error

    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    if not isinstance(data, dict):
        raise SpecError("", "a search config must be a mapping with 'type: search'", source=source)
    try:
        config = TypeAdapter(SearchConfig).validate_python(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, source) from None
    check_capabilities(config, source=source)
    config = config.model_copy(update={"space": config.space.resolved(base_dir, source)})
    base = _load_base(config, base_dir, source)
    if base.type not in config.space.base_types:
        wanted = " or ".join(config.space.base_types)
        raise SpecError("base", f"the {config.space.type} space edits {wanted} backbones, not {base.type!r}",
                        source=source)
    if config.base is not None:
        try:
            config.space.check_base(base)
        except SpecError as exc:
            raise (exc.with_source(source) if source else exc) from None
    if config.detector is not None:
        try:
            config.detector.around(base)
        except SpecError as exc:
            raise SpecError(issues=exc.with_prefix("detector").issues, source=source) from None
    if config.evaluator.needs_detector and config.detector is None:
        raise SpecError("evaluator", f"the {config.evaluator.type} evaluator trains and scores detectors: add a "
                                     "detector: template", source=source)
    if getattr(config.strategy, "undecided_dilations", None) == "sampled" and not config.evaluator.samples_undecided:
        raise SpecError("strategy.undecided_dilations", f"'sampled' draws undecided dilations per mini-batch; the "
                                                        f"{config.evaluator.type} evaluator runs none (use 'one', or "
                                                        "the supernet evaluator)", source=source)
    return config.model_copy(update={"evaluator": config.evaluator.resolved(base_dir)}), base


def check_capabilities(config: SearchConfig, source: str | None = None) -> None:
    """Refuse a strategy that needs capabilities the space does not offer (`strategy.type`)."""
    from archspec.errors import SpecError

    missing = config.strategy.needs - config.space.offers
    if missing:
        offers = ", ".join(ordered(config.space.offers)) or "nothing"
        raise SpecError("strategy.type", f"{config.strategy.type!r} needs a space that can {', '.join(ordered(missing))}; "
                                         f"the {config.space.type!r} space offers {offers}", source=source)


def _load_base(config: SearchConfig, base_dir: Path, source: str | None):
    """The validated base spec: the config's `base` (a file relative to `base_dir`, or inline),
    or the space's own default."""
    from archspec.errors import SpecError
    from archspec.io import load, validate

    if config.base is None:
        try:
            data = config.space.default_base()
        except SpecError as exc:
            raise exc.with_prefix("space").with_source(source) from None
        if data is None:
            raise SpecError("base", f"required field is missing (the {config.space.type} space edits a base spec)",
                            source=source)
        try:
            return validate(data, base_dir=base_dir)
        except SpecError as exc:
            raise exc.with_prefix("space").with_source(source) from None
    if isinstance(config.base, str):
        try:
            return load((base_dir / config.base).resolve())
        except SpecError as exc:
            raise SpecError(issues=exc.with_prefix("base").issues, source=source) from None
    try:
        return validate(config.base)
    except SpecError as exc:
        raise exc.with_prefix("base").with_source(source) from None

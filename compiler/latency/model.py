"""A predictor for kernels never measured: one regression per kernel type, fitted on the table.

nn-Meter (Zhang et al., MobiSys 2021, section 4) fits one model per kernel type on sampled
configurations and predicts configurations it never measured. Here each kernel type (a layer
kernel's block type, e.g. ``bottleneck``, ``k1kx``, ``conv``, ``max_pool``; ``classifier``,
``resample``, ``merge``) gets a non-negative linear model on physical work terms:

    ms = fixed + a8 * MMACs on blocks of 8 + a16 * MMACs with outputs on 16 + b * Mparams
           + c * M input elements + d * M output elements + e * M activation elements
           + f * M convolution output pixels

fitted by non-negative least squares on relative errors (each row weighted by 1 / ms), so that
a 0.1 ms kernel counts as much as a 10 ms one and no term can be a negative cost. The terms are
what a CPU kernel spends its time on: a fixed dispatch cost, arithmetic, reading weights, and
reading and writing feature maps, and a cost per output pixel of each convolution whatever
its width (`CONV_PIXELS_NOTE`). The arithmetic is counted as the blocked layout does it, each
convolution's channels rounded up to whole blocks (`PADDED_MACS_NOTE`). The
shape parameters (kernel size, stride, dilation, channels, groups, resolution) enter through
them, since every one is computed from the kernel's own graph (`compiler.costs`). A type with
too few measured kernels borrows the model fitted on every kernel of the table (all types
pooled), unless a model of its own predicts its kernels better (`SMALL_TYPE_NOTE`).

On top, each type with `MIN_KERNELS_FOR_TREES` kernels gets a `TreeCorrection` (extremely
randomised trees on the shape features) of what its linear model leaves of the log-ratio. A
ridge regression of that log-ratio on the same features once sat between the two. It was
dropped after the held-out kernels of three saved benchmark settings (two seeds, and two threads)
were predicted better without it (median error 7.9% -> 5.1%, 6.3% -> 5.6%, 12.8% -> 11.6%).
On a seed measured afterwards the median kernel error stayed about the same (7.3-7.6% -> 7.8%)
and the held-out models came out better (86.7-93.3% -> 90.0-96.7% within +/-10%; see
docs/latency.md). Being linear in the log features, the ridge step extrapolated across the
whole shape space, where the trees correct locally from a kernel's measured neighbours.

The fit is deterministic (rows sorted by key, fixed seed) and takes well under a second, so it
is refitted from the table whenever a predictor opens it: nothing is pickled, and the linear
coefficients are plain floats (`KernelModel.as_dict`, JSON).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from archspec.compiler.latency.kernels import IMAGE_CHANNELS, KernelKey, kernel_graph
from archspec.compiler.ops import Add, Conv

TERMS = ("fixed", "mmacs_8", "mmacs_out_16", "mparams", "min", "mout", "mact", "mconvpx")
"""The model's columns: 1, MACs with the channels rounded up to blocks of 8, MACs with the
output channels rounded up to 16 (`PADDED_MACS_NOTE`), parameters, input, output and all
activation elements, and the convolutions' output pixels (millions)."""
MIN_KERNELS_PER_TYPE = 12
"""Measured kernels a type needs for a model of its own (else it uses the pooled model, unless
`MIN_KERNELS_SMALL_TYPE` applies)."""
MIN_KERNELS_SMALL_TYPE = 6
"""A type with at least this many measured kernels, but fewer than `MIN_KERNELS_PER_TYPE`, gets a
model of its own where that model, fitted without each of its kernels in turn, predicts them
better than the pooled model does (`SMALL_TYPE_NOTE`)."""
SMALL_TYPE_NOTE = """The pooled model is fitted on every kernel type together, so it prices a
type the way the convolutions that dominate the table cost. A max-pooling layer costs nothing
like that: it is a pass over its input map, which runs out of the L2 cache at about twice the
cost per element once the map is large (`predictor.SPILL_NOTE`). The held-out predictor
benchmark measures 11 to 16 max-pooling kernels (channel variants of a few stems). In the six
of its 17 saved runs with fewer than 12, the type fell to the pooled model, which put the four
unseen ones a median 44-48% low (a 64-channel pool at 80x80: 0.057 ms predicted, 0.190 ms
measured); a model of the type's own put them 19-26% off (mean error -2% to -13%). So a type with
`MIN_KERNELS_SMALL_TYPE` to `MIN_KERNELS_PER_TYPE - 1` kernels gets its own model where its
leave-one-out median error on them is below the pooled model's median error on the same kernels
(in-sample for the pooled model: a comparison that favours it)."""
POOLED = "*"
"""Name of the model fitted on every kernel type together."""
FEATURE_NAMES = ("macs", "params", "in_elems", "out_elems", "activations")
"""Static features every measured kernel of a table has (`has_features`)."""
LATER_FEATURES = ("conv_pixels", "skip_elems", "convs_off_8", "convs_off_16", "padded_macs_8",
                  "padded_out_macs_16")
"""Features `key_features` computes that tables written before them lack: `complete_features`
computes them from the kernel's key."""
CONV_PIXELS_NOTE = """A convolution spends time on every output pixel whatever its width: the
loop over the image, the tiling into ONNX Runtime's blocked layout, the edges. Work terms that
scale with channels (MACs, activation elements) miss it, so kernels with few channels at a high
resolution came out low: on the held-out benchmark, MAE-DET-like blocks with 16-24 bottleneck
channels at 64x64 and 80x80 were predicted 15-24% under their times. The term `conv_pixels`
(each convolution's output height times width, summed) is that cost. Scored again on the same
measurements, the five saved runs that showed the misses had 93.3-98.3% of their held-out models
within +/-10% from predicted kernels alone, against 90.0-96.7% before; on seven runs measured
afterwards (seeds 0-6), 93.3-100% against 93.3-96.7% (mean 96.4% against 95.0%), and the unseen
kernels' median error went from 6.2% to 5.8% (docs/latency.md)."""

PADDED_MACS_NOTE = """ONNX Runtime's CPU convolutions in the blocked layout (NCHWc) compute whole
channel blocks. Timed on the development machine (1 thread, CPU clock, block of 8): a 7x7
stride-2 stem at 128x128 rose in steps of 16 output channels, 0.16 ms for 8-16 channels,
0.25-0.28 ms for 20-32, 0.33-0.35 for 36-48, 0.43-0.46 for 52-64, 0.63-0.64 for 68-80,
0.72-0.75 for 84-96; a 5x5 convolution at 32x32 with 48 inputs took 0.35 ms for 8-16 outputs,
0.51-0.53 for 24-32 and 0.66-0.68 for 40-48, and with 48 outputs 0.13 ms for 8 inputs, 0.25
for 16, 0.45-0.47 for 20-32. MACs proportional to the width, fitted on the random widths of
channel variants, put the stems of the shipped spaces (mostly 16, 32 or 64 channels: the top
of a step) 7-32% high on average per run. So the arithmetic terms are the MACs of each
convolution with its input and output widths rounded up to whole blocks of 8
(`padded_macs_8`) and the MACs with its output width rounded up to 16 (`padded_out_macs_16`),
each with its own cost; an image input, and the per-group input of a grouped convolution,
stay as they are, and MACs of other operators count as they are. Rounding the inputs to 16 as
well put blocks with an 8-wide bottleneck 30-56% high (8 inputs cost half of 16, as above).
Scored again on thirteen saved runs of the held-out benchmark, the stems' mean error per run
went from +6.8-31.7% to +5.0-16.6%, and the test models within +/-10% from predicted kernels
from 92.7% to 93.7% on average (docs/latency.md, "MACs on whole channel blocks")."""


def kernel_type(key: KernelKey) -> str:
    """``layer:<block type>`` for block and stem kernels, else the kernel kind."""
    data = json.loads(key)
    kind = data.get("kind", "?")
    if kind == "layer":
        return f"layer:{data.get('block', {}).get('type', '?')}"
    return kind


@functools.lru_cache(maxsize=1 << 16)
def key_features(key: KernelKey) -> dict:
    """MACs, parameters, input/output/all activation elements of one kernel, its convolutions'
    output pixels (`CONV_PIXELS_NOTE`), the elements of its identity skips (sums with the
    kernel's own input as an operand: `predictor.SKIP_NOTE`) and how many of its convolutions
    have a channel count off each of `CHANNEL_BLOCKS` (`INNER_ALIGNMENT_NOTE`), and its MACs with
    the channels on whole blocks (`PADDED_MACS_NOTE`), from its graph (no module is built; about
    0.5 ms)."""
    from archspec.compiler.costs import graph_costs

    graph, size = kernel_graph(key)
    shapes = graph.shapes(size)
    counts = graph_costs(graph, size, shapes)
    channels = graph.nx.nodes[graph.input]["channels"]
    out_elems = int(sum(shapes[node].numel for node in graph.outputs.values()))
    convs = [(node, op) for node, op in graph.nx.nodes(data="op") if isinstance(op, Conv)]
    conv_pixels = sum(shapes[node].height * shapes[node].width for node, _ in convs)
    skip_elems = sum(shapes[node].numel for node, op in graph.nx.nodes(data="op")
                     if isinstance(op, Add) and graph.input in graph.inputs_of(node))
    # MACs of the operators that are not convolutions (a classifier's), which no rounding touches
    other_macs = counts.macs - sum(op.macs(shapes[node]) for node, op in convs)
    return {"macs": counts.macs, "params": counts.params, "in_elems": channels * size[0] * size[1],
            "out_elems": out_elems, "activations": counts.activations, "conv_pixels": conv_pixels,
            "skip_elems": skip_elems,
            **{f"convs_off_{b}": sum(1 for _, op in convs if op.in_channels % b or op.out_channels_ % b)
               for b in CHANNEL_BLOCKS},
            "padded_macs_8": other_macs + sum(padded_macs(op, shapes[node], 8) for node, op in convs),
            "padded_out_macs_16": other_macs + sum(padded_macs(op, shapes[node], 16, inputs=False)
                                                   for node, op in convs)}


def padded_macs(conv: Conv, out, block: int, inputs: bool = True) -> int:
    """MACs of `conv` (output shape `out`) with its output width rounded up to whole blocks of
    `block`, and its input width too (`inputs`) unless it is an image or split into groups
    (`PADDED_MACS_NOTE`)."""
    def whole(channels: int) -> int:
        return -(-channels // block) * block

    rounded = inputs and conv.groups == 1 and conv.in_channels > IMAGE_CHANNELS
    fan_in = (whole(conv.in_channels) if rounded else conv.in_channels) // conv.groups * conv.kernel ** 2
    return out.height * out.width * whole(conv.out_channels_) * fan_in


def complete_features(key: KernelKey, features: Mapping) -> Mapping:
    """`features` with the `LATER_FEATURES` a table written before them lacks, computed from the key
    (left as they are for a key whose graph this version cannot build: those terms then count 0)."""
    if all(name in features for name in LATER_FEATURES):
        return features
    try:
        return {**key_features(key), **features}
    except (ValueError, KeyError):
        return features


def design_row(features: Mapping) -> list[float]:
    """The model's columns (`TERMS`) for one kernel's features."""
    macs = features.get("macs", 0)
    return [1.0, features.get("padded_macs_8", macs) / 1e6, features.get("padded_out_macs_16", macs) / 1e6,
            features.get("params", 0) / 1e6, features.get("in_elems", 0) / 1e6,
            features.get("out_elems", 0) / 1e6, features.get("activations", 0) / 1e6,
            features.get("conv_pixels", 0) / 1e6]


def has_features(features: Mapping) -> bool:
    return all(name in features for name in FEATURE_NAMES)


SHAPE_FEATURES = ("macs", "params", "in_elems", "out_elems", "activations", "conv_pixels", "in", "out", "mid",
                  "pixels", "kernel", "stride", "dilation", "groups", "unaligned_8", "unaligned_16",
                  "convs_off_8", "convs_off_16")
"""Shape features of the tree correction (logarithms): the work terms, the kernel's shape parameters
(``mid``: a block's bottleneck width, 0 without one), how many of its channel counts are not
multiples of 8 and of 16 (`channel_counts`), and how many of its convolutions have an input or
output width off 8 and off 16 (`INNER_ALIGNMENT_NOTE`)."""
CHANNEL_BLOCKS = (8, 16)
"""ONNX Runtime's CPU convolutions run in a blocked channel layout (NCHWc; a block is 8 or 16
channels by the CPU's MLAS kernels, 8 on the development machine, whatever its AVX-512 flags:
`predictor.nchwc_block` asks ORT) only when channel counts divide into blocks; other counts take
a slower path. The kernel models learn from both counts, as the block of the machine that
measured the table is not part of a kernel's features. On the 2-core development machine a
bottleneck block with 664 channels at 1x1 took 0.046 ms against 0.009 ms with 512, and
SpineNet-like models at width scale 0.65 (channels 41, 83, 166, 332, 664) had their blocks
under-predicted by 15-65% before this feature."""
INNER_ALIGNMENT_NOTE = """A kernel's key names its edge widths and, for some blocks, the inner
one (``bottleneck_channels`` of k1kx and k1kxk1 blocks). A ResNet bottleneck derives its inner
width from its output (out / expansion): with 64 or 72 output channels both edges are on the
block of 8, and the inner width, 16 or 18, on it or off it. Off the block the convolutions take
ONNX Runtime's slower path (in one run, a basic block of 16 channels at 32x32 took 0.072 ms, one
of 18 channels 0.166 ms). Channel variants of bottleneck kernels are mostly blocks with the inner
width off the block, and the trees could not tell them from a search's on-block blocks: in five
runs of the held-out benchmark the unseen bottleneck kernels came out 6-23% high on average.
`convs_off_8` and `convs_off_16` count the kernel's convolutions with an input or output width
off 8 and off 16, read from its graph, so they hold for every block kind (docs/latency.md,
"Inner widths off the block")."""
MAX_CORRECTION = 0.7
"""The correction's log-factor is clipped to +/- this (a factor of about 2): it only bends the
physical model, never replaces it."""


def shape_vector(key: KernelKey, features: Mapping) -> list[float]:
    """log(1 + x) of each `SHAPE_FEATURES` entry of a kernel."""
    data = json.loads(key)
    block = data.get("block", {}) if isinstance(data.get("block"), dict) else {}
    h, w = data.get("hw", (1, 1))
    values = {"in": data.get("in", data.get("channels", 0)), "out": data.get("out", data.get("channels", 0)),
              "pixels": h * w, "kernel": block.get("kernel", data.get("levels", 1)), "stride": data.get("stride", 1),
              "dilation": data.get("dilation", 1), "groups": block.get("groups", data.get("terms", 1)),
              "mid": block.get("bottleneck_channels", 0)}
    values.update({name: features.get(name, 0) for name in (*FEATURE_NAMES, *LATER_FEATURES)})
    counts = channel_counts(data, block)
    values.update({f"unaligned_{b}": sum(1 for c in counts if c % b) for b in CHANNEL_BLOCKS})
    return [float(np.log1p(abs(float(values.get(name, 0) or 0)))) for name in SHAPE_FEATURES]


def channel_counts(data: Mapping, block: Mapping) -> list[int]:
    """The channel counts a kernel's convolutions run at: its input and output, a block's
    bottleneck, a resampling's width."""
    names = (data.get("in"), data.get("out"), data.get("channels"), data.get("width"), block.get("bottleneck_channels"))
    return [int(c) for c in names if isinstance(c, int) and c > 0]


@dataclass(frozen=True)
class KernelModel:
    """One kernel type's physical model: non-negative coefficients of the work terms (`TERMS`),
    with its fit figures."""

    kind: str
    coefficients: tuple[float, ...]
    kernels: int
    """Measured kernels it was fitted on."""
    median_error: float
    """Median absolute relative error on those kernels (in-sample) of this physical model alone;
    the type's tree correction, fitted to what it leaves, would make an in-sample figure
    meaningless."""

    def predict_row(self, row: list[float]) -> float:
        return float(sum(c * v for c, v in zip(self.coefficients, row)))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "kernels": self.kernels, "median_error": self.median_error,
                **dict(zip(TERMS, self.coefficients))}


def fit_nonnegative(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative errors: minimises sum(((row . c) / t - 1)^2) with c >= 0."""
    from sklearn.linear_model import LinearRegression

    weights = 1.0 / np.maximum(targets, 1e-9)
    scale = np.abs(rows).max(axis=0) + 1e-12  # unit-free columns: the solver's tolerance then means the same for each
    design = rows * weights[:, None] / scale
    model = LinearRegression(positive=True, fit_intercept=False).fit(design, targets * weights)
    return np.maximum(model.coef_, 0.0) / scale


def fit_kernel_models(measured: Mapping[KernelKey, float], features: Mapping[KernelKey, Mapping]) -> dict[str, KernelModel]:
    """Kernel type -> `KernelModel` from the measured kernels (plus the pooled model `POOLED`),
    for types with at least `MIN_KERNELS_PER_TYPE` kernels, and for smaller types where their own
    model beats the pooled one (`SMALL_TYPE_NOTE`). Deterministic: rows in key order.
    `features` are complete (`complete_features`), as `KernelPredictor.fit` passes them."""
    by_type: dict[str, list[tuple[list[float], float]]] = {}
    for key in sorted(measured):
        feats = features.get(key) or {}
        if not has_features(feats) or measured[key] <= 0:
            continue
        by_type.setdefault(kernel_type(key), []).append((design_row(feats), float(measured[key])))
    models: dict[str, KernelModel] = {}
    pooled = [item for items in by_type.values() for item in items]
    for kind, items in [(POOLED, pooled), *sorted(by_type.items())]:
        rows = np.array([r for r, _ in items], dtype=float)
        targets = np.array([t for _, t in items], dtype=float)
        if len(items) >= MIN_KERNELS_PER_TYPE or _beats_pooled(rows, targets, models.get(POOLED)):
            models[kind] = _fit_model(kind, rows, targets)
    return models


def _fit_model(kind: str, rows: np.ndarray, targets: np.ndarray) -> KernelModel:
    coefficients = fit_nonnegative(rows, targets)
    return KernelModel(kind, tuple(float(c) for c in coefficients), len(targets),
                       float(np.median(_relative_errors(rows @ coefficients, targets))))


def _relative_errors(predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.abs(np.maximum(predicted, 1e-9) / targets - 1)


def _beats_pooled(rows: np.ndarray, targets: np.ndarray, pooled: KernelModel | None) -> bool:
    """Whether a small type (`MIN_KERNELS_SMALL_TYPE` kernels or more) is predicted better by a
    model of its own, each kernel predicted by the model fitted on the others, than by `pooled`."""
    if pooled is None or len(targets) < MIN_KERNELS_SMALL_TYPE:
        return False
    left_out = np.array([rows[i] @ fit_nonnegative(np.delete(rows, i, axis=0), np.delete(targets, i))
                         for i in range(len(targets))])
    own = np.median(_relative_errors(left_out, targets))
    return bool(own < np.median(_relative_errors(rows @ np.array(pooled.coefficients), targets)))


TREES = 50
"""Extremely randomised trees of each type's residual correction (`TreeCorrection`)."""
MIN_KERNELS_FOR_TREES = 20
"""Measured kernels a type needs before its tree correction is fitted."""
TREE_MIN_LEAF = 2
"""Kernels a leaf of the trees holds at least."""


class TreeCorrection:
    """A correction of one type's model: extremely randomised trees (Geurts et al., 2006)
    regress log(measured / type model) on the shape features (plus a one-hot kernel type, when
    several types share it). Each type's correction depends on its own kernels only, so a
    type's predictions never change when other types are measured.
    Fitted with scikit-learn (fixed seed, rows in key order: deterministic, so it is refitted
    from the table rather than stored), then evaluated by our own vectorised walk over the
    trees' node arrays: scikit-learn's `predict` costs milliseconds per call, too much for a
    search that predicts a few kernels per candidate."""

    def __init__(self, types: list[str], keys: list[KernelKey], features: Mapping, log_ratio: np.ndarray):
        from sklearn.ensemble import ExtraTreesRegressor

        self.types = list(types)
        forest = ExtraTreesRegressor(TREES, min_samples_leaf=TREE_MIN_LEAF, random_state=0, n_jobs=1)
        forest.fit(np.array([self.vector(k, features[k]) for k in keys]), log_ratio)
        self.forest = forest
        """The fitted scikit-learn model (the tests check the node-array walk against its `predict`)."""
        trees = [estimator.tree_ for estimator in forest.estimators_]
        offsets = np.cumsum([0] + [t.node_count for t in trees[:-1]])
        self.roots = offsets.astype(np.int64)
        left = np.concatenate([np.where(t.children_left >= 0, t.children_left + o, -1) for t, o in zip(trees, offsets)])
        right = np.concatenate([np.where(t.children_right >= 0, t.children_right + o, -1) for t, o in zip(trees, offsets)])
        self.leaf = left < 0
        self.left, self.right = np.where(self.leaf, np.arange(len(left)), left), np.where(self.leaf, np.arange(len(left)), right)
        self.feature = np.concatenate([np.maximum(t.feature, 0) for t in trees])
        self.threshold = np.concatenate([t.threshold for t in trees])
        self.value = np.concatenate([t.value[:, 0, 0] for t in trees])

    def vector(self, key: KernelKey, features: Mapping) -> list[float]:
        kind = kernel_type(key)
        return shape_vector(key, features) + [float(kind == t) for t in self.types]

    def log_factors(self, rows: np.ndarray) -> np.ndarray:
        """Mean leaf value over the trees for each row (`vector`s), clipped to +/- `MAX_CORRECTION`."""
        nodes = np.broadcast_to(self.roots, (len(rows), len(self.roots))).copy()
        index = np.arange(len(rows))[:, None]
        while True:
            done = self.leaf[nodes]
            if done.all():
                break
            go_left = rows[index, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(done, nodes, np.where(go_left, self.left[nodes], self.right[nodes]))
        return np.clip(self.value[nodes].mean(axis=1), -MAX_CORRECTION, MAX_CORRECTION)


class KernelPredictor:
    """Predicted ms of kernels from the per-type models and their tree corrections; `None`
    where no model applies."""

    def __init__(self, models: Mapping[str, KernelModel], trees: Mapping[str, TreeCorrection] | None = None):
        self.models = dict(models)
        self.trees = dict(trees or {})
        """Kernel type -> its tree correction (types with `MIN_KERNELS_FOR_TREES` kernels)."""

    @classmethod
    def fit(cls, measured: Mapping[KernelKey, float], features: Mapping[KernelKey, Mapping]) -> "KernelPredictor":
        features = {k: complete_features(k, features[k]) for k in measured if has_features(features.get(k) or {})}
        predictor = cls(fit_kernel_models(measured, features))
        by_type: dict[str, list[KernelKey]] = {}
        for key in sorted(measured):
            if key in features and measured[key] > 0 and kernel_type(key) in predictor.models:
                by_type.setdefault(kernel_type(key), []).append(key)
        for kind, keys in by_type.items():
            if len(keys) >= MIN_KERNELS_FOR_TREES:
                base = np.array([predictor._base(k, features[k]) for k in keys])
                log_ratio = np.log(np.array([measured[k] for k in keys]) / np.maximum(base, 1e-9))
                predictor.trees[kind] = TreeCorrection([kind], keys, features, log_ratio)
        return predictor

    def _base(self, key: KernelKey, feats: Mapping) -> float:
        return max(self.model_for(key).predict_row(design_row(feats)), 1e-6)

    def model_for(self, key: KernelKey) -> KernelModel | None:
        return self.models.get(kernel_type(key)) or self.models.get(POOLED)

    def predict(self, key: KernelKey) -> tuple[float, dict] | None:
        """(predicted ms, the kernel's features), or None without a model for its type."""
        return self.predict_many([key]).get(key)

    def predict_many(self, keys: Iterable[KernelKey]) -> dict[KernelKey, tuple[float, dict]]:
        """Predictions of the keys a model covers (one vectorised pass of the trees for all)."""
        covered = [k for k in keys if self.model_for(k) is not None]
        if not covered:
            return {}
        feats = [key_features(k) for k in covered]
        base = np.array([self._base(k, f) for k, f in zip(covered, feats)])
        kinds = [kernel_type(k) for k in covered]
        for kind, trees in self.trees.items():
            chosen = [i for i, t in enumerate(kinds) if t == kind]
            if chosen:
                rows = np.array([trees.vector(covered[i], feats[i]) for i in chosen])
                base[chosen] = base[chosen] * np.exp(trees.log_factors(rows))
        return {k: (float(b), f) for k, b, f in zip(covered, base, feats)}

    def __bool__(self) -> bool:
        return bool(self.models)

    def as_dict(self) -> dict:
        return {kind: model.as_dict() for kind, model in sorted(self.models.items())}

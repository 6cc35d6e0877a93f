"""A spec as a list of kernels: the units whose latency is measured once and summed.

A kernel is one block instance at its input resolution (block kind and parameters, in/out
channels, stride, dilation, whether it is its stage's first block, input H x W), a stem layer,
a head, or for scale-permuted specs one cross-scale resampling, one merge (sum + activation)
or one endpoint. Its key is canonical JSON text, so it is stable across runs and readable.

Deriving keys never builds a graph or a module: each spec kind has a decomposer in
`DECOMPOSERS` (spec type -> fn(spec, (H, W)) -> list of keys) working from the spec's resolved
layers, with memoized key construction. Measuring a kernel needs its graph: `KERNEL_GRAPHS`
maps a key's ``kind`` to a function building a one-kernel graph IR (lowered with the same
functions the compiler uses for whole specs).
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable

from archspec.backbones import Layer
from archspec.blocks import ConvBlock
from archspec.registry import Registry

KernelKey = str
"""Canonical JSON of a kernel: ``{"kind": ..., ...}``."""


def halve(size: int) -> int:
    """Spatial size after a stride-2 layer: every conv, pool and block here pads to 'same', so
    ceil(size / 2) (checked against the graph's shape inference in the tests)."""
    return (size + 1) // 2


def _key(data: dict) -> KernelKey:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# -- keys ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _block_data(block) -> str:
    """The block's parameters without placement-given fields (channels, stride, dilation)."""
    data = block.model_dump(mode="json", exclude={"out_channels", "stride", "dilation"})
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=1 << 16)
def layer_key(block, in_channels: int, out_channels: int, stride: int, dilation: int, first: bool,
              height: int, width: int) -> KernelKey:
    """Key of one block (or stem layer) at a placement and input size."""
    return ('{"block":' + _block_data(block) + f',"dilation":{dilation},"first":{str(first).lower()},'
            f'"hw":[{height},{width}],"in":{in_channels},"kind":"layer","out":{out_channels},"stride":{stride}}}')


def layer_kernel(layer: Layer, height: int, width: int) -> KernelKey:
    return layer_key(layer.block, layer.in_channels, layer.out_channels, layer.stride, layer.dilation,
                     layer.index == 0, height, width)


@functools.lru_cache(maxsize=1 << 12)
def head_key(in_channels: int, num_classes: int, height: int, width: int) -> KernelKey:
    """Key of a classifier head (global pool + linear; dropout is free at inference)."""
    return _key({"kind": "classifier", "in": in_channels, "classes": num_classes, "hw": [height, width]})


# -- decomposers -----------------------------------------------------------------------------
Decomposer = Callable[[object, tuple[int, int]], list[KernelKey]]


def staged_kernels(spec, input_size: tuple[int, int]) -> list[KernelKey]:
    """Stem layers, blocks and the head of a staged backbone.

    Walks the stem and stages the way `StagedBackbone.layers()` resolves them, without building
    `Layer` objects (three times faster; `layers()` itself costs more than the whole prediction
    budget). The tests check that both give the same keys for the zoo and random specs."""
    height, width = input_size
    keys = []
    channels = spec.in_channels
    for i, step in enumerate(spec.stem):
        is_conv = step.type == "conv"
        out = step.out_channels if is_conv else channels
        keys.append(layer_key(step, channels, out, step.stride, step.dilation if is_conv else 1, i == 0,
                              height, width))
        if step.stride == 2:
            height, width = halve(height), halve(width)
        channels = out
    for stage in spec.stages:
        overrides, dilations = stage.blocks, stage.dilations
        for b in range(stage.depth):
            block = (overrides[b] if overrides and b < len(overrides) else None) or stage.block
            stride = stage.stride if b == 0 else 1
            dilation = dilations[b] if dilations and b < len(dilations) else block.dilation
            keys.append(layer_key(block, channels, stage.out_channels, stride, dilation, b == 0, height, width))
            if stride == 2:
                height, width = halve(height), halve(width)
            channels = stage.out_channels
    if spec.head is not None:
        keys.append(head_key(channels, spec.head.num_classes, height, width))
    return keys


def staged_kernels_from_layers(spec, input_size: tuple[int, int]) -> list[KernelKey]:
    """The same keys as `staged_kernels`, derived from `spec.layers()` (the reference)."""
    height, width = input_size
    keys = []
    for layer in spec.layers():
        keys.append(layer_kernel(layer, height, width))
        if layer.stride == 2:
            height, width = halve(height), halve(width)
    if spec.head is not None:
        keys.append(head_key(spec.layers()[-1].out_channels, spec.head.num_classes, height, width))
    return keys


DECOMPOSERS: Registry[Decomposer] = Registry("latency decomposer")
DECOMPOSERS.register("staged", staged_kernels)
"""Spec type -> kernels of a spec at an input size."""


MEMO_SIZE = 4096
_memo: OrderedDict[tuple[int, tuple[int, int]], tuple[object, list[KernelKey]]] = OrderedDict()


def kernels(spec, input_size: tuple[int, int]) -> list[KernelKey]:
    """The kernels of `spec` at `input_size` (H, W), in execution order (with repeats).

    Memoized per spec object (specs are immutable; the memo holds a reference to each spec, so
    an id is never reused while it is cached), for callers that predict one spec repeatedly."""
    memo_key = (id(spec), input_size)
    hit = _memo.get(memo_key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    decompose = DECOMPOSERS.find(spec.type)
    if decompose is None:
        raise ValueError(f"no latency decomposition for spec kind {spec.type!r} "
                         f"(known: {', '.join(sorted(DECOMPOSERS))})")
    keys = decompose(spec, input_size)
    _memo[memo_key] = (spec, keys)
    if len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return keys


def clear_memo() -> None:
    """Forget memoized decompositions (benchmarks time the cold path with it)."""
    _memo.clear()


# -- kernel graphs (for measuring) ---------------------------------------------------------------
KernelGraph = Callable[[dict], tuple[object, tuple[int, int]]]
"""fn(key data) -> (graph IR of the kernel alone, its input size)."""


def _layer_graph(data: dict):
    from archspec.compiler.graph import Graph
    from archspec.compiler.lowering import lower_layer
    from archspec.compiler.ops import Input

    block = _layer_block(data["block"])
    stride = data["stride"]
    layer = Layer("kernel", "kernel", block, data["in"], data["out"], stride, data["dilation"], 0,
                  int(stride == 2), 0, 0 if data["first"] else 1)
    graph = Graph("kernel")
    x = graph.add("input", Input(data["in"]), block="input", block_kind="input")
    graph.set_output("y", lower_layer(graph, layer, x))
    return graph, tuple(data["hw"])


def _layer_block(data: dict):
    """The block spec of a layer kernel: a stem max-pool or any registered block kind."""
    from archspec.blocks import MaxPoolLayer, validate_block

    return MaxPoolLayer.model_validate(data) if data.get("type") == "max_pool" else validate_block(data)


def _classifier_graph(data: dict):
    from archspec.compiler.graph import Graph
    from archspec.compiler.lowering import lower_classifier
    from archspec.compiler.ops import Input

    graph = Graph("kernel")
    x = graph.add("input", Input(data["in"]), block="input", block_kind="input")
    graph.set_output("y", lower_classifier(graph, x, data["classes"]))
    return graph, tuple(data["hw"])


KERNEL_GRAPHS: Registry[KernelGraph] = Registry("latency kernel graph")
KERNEL_GRAPHS.register("layer", _layer_graph)
KERNEL_GRAPHS.register("classifier", _classifier_graph)
"""Kernel kind -> builder of its one-kernel graph."""


def kernel_graph(key: KernelKey):
    """(graph IR, input size) of one kernel."""
    data = json.loads(key)
    try:
        build = KERNEL_GRAPHS[data["kind"]]
    except KeyError:
        raise ValueError(f"unknown kernel kind {data.get('kind')!r} in {key}") from None
    return build(data)


def describe(key: KernelKey) -> str:
    """A short human label: ``bottleneck 256->512 s2 @56x56``."""
    data = json.loads(key)
    h, w = data.get("hw", ("?", "?"))
    kind = data["kind"]
    if kind == "layer":
        block = data["block"]
        params = ",".join(f"{k}={v}" for k, v in sorted(block.items()) if k != "type")
        text = f"{block['type']}({params}) {data['in']}->{data['out']} s{data['stride']}"
        if data["dilation"] > 1:
            text += f" d{data['dilation']}"
        return text + ("" if data["first"] else " (repeat)") + f" @{h}x{w}"
    fields = " ".join(f"{k}={v}" for k, v in sorted(data.items()) if k not in ("kind", "hw"))
    return f"{kind} {fields} @{h}x{w}"


def stem_conv_key(in_channels: int, out_channels: int, kernel: int, activation: str, height: int,
                  width: int) -> KernelKey:
    """Key of a plain conv + BN + activation (SpineNet endpoints)."""
    block = _conv_block(kernel, activation)
    return layer_key(block, in_channels, out_channels, 1, 1, True, height, width)


@functools.lru_cache(maxsize=64)
def _conv_block(kernel: int, activation: str) -> ConvBlock:
    return ConvBlock(type="conv", kernel=kernel, activation=activation)


# -- channel variants (sampling the shape space beyond the kernels a search meets) -------------
VARIANT_FACTORS = (0.55, 1.45)
"""Channel counts of a uniform or on-block variant: the original's times a factor drawn uniformly
from this range (a narrow variant's: `NARROW_FACTORS`)."""
IMAGE_CHANNELS = 4
"""An input with at most this many channels is an image (a stem's first convolution): kept."""


def channel_variants(key: KernelKey, count: int = 1, seed: int = 0, block: int | None = None) -> list[KernelKey]:
    """`count` kernels like `key` at other channel counts (seeded by `seed` and the key itself).

    The kernel models learn each type from the kernels a search or table happened to measure;
    these rarely cover channel counts off ONNX Runtime's NCHWc block, which take a slower path
    (`model.CHANNEL_BLOCKS`). nn-Meter samples each kernel type's configuration space for its
    predictors (Zhang et al., MobiSys 2021, section 4.2); this draws around the measured kernels
    the same way. A block's inner width (`_BLOCK_VARIANT_FIELDS`) is redrawn with its input and
    output. A repeated block (``first`` false: input width = output width) and a max-pool keep
    their input and output equal; an image input keeps its channels. Variants whose graph cannot
    be built (a block with groups that do not divide the new width) are left out.

    Channel counts drawn at random fall off the block seven times in eight, and a block's inner
    width (a ResNet bottleneck's out / 4) more often still, so the fast path the searched
    architectures mostly run on would be thin in the table. With `block` (the machine's NCHWc
    block, `predictor.nchwc_block`), one variant in every `ON_BLOCK_EVERY` (rounded up; they come
    first) has every convolution on it (`_on_block_variants`; docs/latency.md, "On-block channel
    variants"). Then one in every `NARROW_EVERY` (rounded down) is narrower than the key in
    every redrawn width, by a factor drawn from `NARROW_FACTORS` (`NARROW_NOTE`), on the block
    where there is one. The others are the draws made without a block."""
    data = json.loads(key)
    fields = _VARIANT_FIELDS.get(data.get("kind"))
    if not fields:
        return []
    on_block = len(range(0, count, ON_BLOCK_EVERY)) if block else 0
    narrow = min(count // NARROW_EVERY, count - on_block)
    variants = _on_block_variants(data, key, on_block, seed, block) if on_block else []
    variants += _narrow_variants(data, key, narrow, seed, block) if narrow else []
    uniform = _uniform_variants(data, key, count - on_block - narrow, seed)
    return list(dict.fromkeys(variants + uniform))


ON_BLOCK_EVERY = 3
"""With a block, one channel variant in this many (rounded up) is on it (`channel_variants`)."""
ON_BLOCK_DRAWS = 4
"""Draws an on-block variant tries before it settles for the one with the fewest convolutions off."""


def _drawn_fields(data: dict) -> tuple[list[str], list[str]]:
    """(the kernel's own channel fields a variant redraws, its block's), in the order their factors
    are drawn: `_VARIANT_FIELDS` that hold a count (not an image input), then `_BLOCK_VARIANT_FIELDS`."""
    own = [name for name in _VARIANT_FIELDS[data["kind"]]
           if isinstance(data.get(name), int) and not (name == "in" and data[name] <= IMAGE_CHANNELS)]
    block = data.get("block")
    inner = ([name for name in _BLOCK_VARIANT_FIELDS if isinstance(block.get(name), int)]
             if data["kind"] == "layer" and isinstance(block, dict) else [])
    return own, inner


def _redrawn(data: dict, factors: dict[str, float], resize: Callable[[int, float], int]) -> dict:
    """`data` with its channel fields (`_drawn_fields`) resized by `resize(width, factor)` with
    their `factors`; an image input and equal input and output widths kept."""
    own, inner = _drawn_fields(data)
    new = dict(data) | {name: resize(data[name], factors[name]) for name in own}
    if data["kind"] == "layer" and _same_width(data):
        new["in"] = new["out"]
    if inner:
        new["block"] = data["block"] | {name: resize(data["block"][name], factors[name]) for name in inner}
    return new


def _uniform_variants(data: dict, key: KernelKey, count: int, seed: int) -> list[KernelKey]:
    """`count` variants with every channel count drawn from `VARIANT_FACTORS` around the key's."""
    import random

    rng = random.Random(f"{seed}:{key}")
    return _drawn_variants(data, key, count, lambda: rng.uniform(*VARIANT_FACTORS),
                           lambda width, factor: max(1, round(width * factor)))


def _drawn_variants(data: dict, key: KernelKey, count: int, factor: Callable[[], float],
                    resize: Callable[[int, float], int]) -> list[KernelKey]:
    """`count` distinct buildable variants other than `key`, each with one `factor()` per redrawn
    field (`_drawn_fields`, in that order: tables' variants keep their keys) applied by `resize`;
    at most four draws per variant."""
    own, inner = _drawn_fields(data)
    variants: list[KernelKey] = []
    for _ in range(4 * count):
        if len(variants) == count:
            break
        factors = {name: factor() for name in own + inner}
        variant = _key(_redrawn(data, factors, resize))
        if variant != key and variant not in variants and _buildable(variant):
            variants.append(variant)
    return variants


def _on_block_variants(data: dict, key: KernelKey, count: int, seed: int, block: int) -> list[KernelKey]:
    """`count` variants whose convolutions all have input and output widths on `block`, where
    the kernel allows (an image input never is): each draw's counts rounded to a multiple of the
    block, else of 2 or 4 blocks (a ResNet bottleneck's inner width is out / 4); of
    `ON_BLOCK_DRAWS` draws the first with none off the block, else the one with the fewest."""
    import random

    from archspec.compiler.latency.model import CHANNEL_BLOCKS, key_features

    if block not in CHANNEL_BLOCKS:
        raise ValueError(f"channel block {block}: the kernel features count convolutions off {CHANNEL_BLOCKS} only")
    rng = random.Random(f"onblock:{seed}:{key}")
    names = _VARIANT_FIELDS[data["kind"]] + _BLOCK_VARIANT_FIELDS
    variants: list[KernelKey] = []
    for _ in range(count):
        best = None
        for _ in range(ON_BLOCK_DRAWS):
            factors = {name: rng.uniform(*VARIANT_FACTORS) for name in names}
            for step in (block, 2 * block, 4 * block):
                variant = _key(_redrawn(data, factors,
                                        lambda width, f, step=step: max(step, round(width * f / step) * step)))
                if variant == key or variant in variants or not _buildable(variant):
                    continue
                off = key_features(variant)[f"convs_off_{block}"]
                if best is None or off < best[0]:
                    best = (off, variant)
                if off == 0:
                    break
            if best is not None and best[0] == 0:
                break
        if best is not None:
            variants.append(best[1])
    return variants


NARROW_EVERY = 3
"""One channel variant in this many (rounded down) is a narrow one (`NARROW_NOTE`)."""
NARROW_FACTORS = (0.25, 0.7)
"""A narrow variant's channel counts: the original's times a factor drawn log-uniformly from this range."""
NARROW_MIN_CHANNELS = 8
"""A narrow variant's counts are not drawn below this (nor below the block), unless the key's own are."""
NARROW_NOTE = """Variants drawn around the kernels of a few dozen design architectures reach x0.55
of their widths, and a search's kernels go beyond that. On the held-out predictor benchmark
(seed 24), 4% of the unseen kernels within x1.45 in every width of a training kernel of their
type, size and stride were predicted more than 20% off, and 15-21% of those farther than x1.8;
most of those errors were kernels narrower than their nearest training kernel. The worst were
MAE-DET-like k1kx blocks with 16-32 channels in and out and 8-16 bottleneck channels at 80x80,
predicted 45-95% high (0.30 ms measured, 0.58 predicted): no kernel of that width and size had
been timed, and the type's cost per convolution output pixel, fitted on wider kernels, was more
than the whole of their time. So one variant in `NARROW_EVERY` is narrower in every width it
redraws, by factors drawn log-uniformly from `NARROW_FACTORS` (x0.25-0.7), kept at or above
`NARROW_MIN_CHANNELS` and rounded to the block where there is one (a search's narrow widths are
multiples of 8 or 16, and those take the blocked fast path). It takes the place of a uniform
variant, so `--variants 3` measures as many kernels as before, and cheaper ones (narrow kernels
are the quick ones to time: about a fifth of a uniform variant's time). Three runs measured both mixes
(seeds 24, 28, 29; docs/latency.md, "Narrow channel variants"): held-out models within +/-10%
from predicted kernels 93.3, 96.7, 98.3% with two uniform variants, 95.0, 100, 96.7% with a
narrow and a uniform one. Kernels wider than their nearest training kernel were few among the
large errors: wide kernels are bound by their arithmetic, which the type's model extrapolates."""


def _narrow_variants(data: dict, key: KernelKey, count: int, seed: int, block: int | None) -> list[KernelKey]:
    """`count` variants narrower than the key in every redrawn width (`NARROW_NOTE`)."""
    import math
    import random

    rng = random.Random(f"narrow:{seed}:{key}")
    low, high = math.log(NARROW_FACTORS[0]), math.log(NARROW_FACTORS[1])
    return _drawn_variants(data, key, count, lambda: math.exp(rng.uniform(low, high)),
                           lambda width, factor: _narrowed(width, factor, block or 1))


def _narrowed(width: int, factor: float, step: int) -> int:
    """`width` times `factor` rounded to a multiple of `step`, at least `NARROW_MIN_CHANNELS` and
    `step`, never above `width` (a width already at that floor is kept)."""
    floor = max(NARROW_MIN_CHANNELS, step)
    if width <= floor:
        return width
    return min(width, max(floor, round(width * factor / step) * step))


def _buildable(key: KernelKey) -> bool:
    """Whether a variant's graph can be built (a block with groups that do not divide its new width cannot)."""
    from archspec.compiler.latency.model import key_features

    try:
        key_features(key)
    except (ValueError, KeyError, ZeroDivisionError):
        return False
    return True


def _same_width(data: dict) -> bool:
    """Whether a layer kernel must keep its input width equal to its output width."""
    return not data.get("first", True) or data.get("block", {}).get("type") == "max_pool"


_VARIANT_FIELDS = {"layer": ("in", "out"), "resample": ("in", "out", "width"), "merge": ("channels",),
                   "classifier": ("in",)}
"""Kernel kind -> the channel fields a variant redraws."""
_BLOCK_VARIANT_FIELDS = ("bottleneck_channels",)
"""Fields of a layer kernel's block a variant redraws too: a block's inner width shapes its cost as
much as its input and output do, and a table whose variants kept it fixed held only the inner
widths its specs happened to use. (In the seed-3 predictor benchmark this alone did not fix the
narrow MAE-DET blocks at high resolution that the models predict 15-24% low: no training kernel of
that type and size came near their input and output widths either.)"""

"""One-shot weight-sharing supernets (DetNAS, CR-NAS), compiled from a search config.

    supernet = build_supernet(config, base)          # a detector whose backbone holds every path
    supernet.select(genotype)                        # forward() now runs that path
    spec, state = supernet.subnet(genotype)          # the stand-alone detector spec and its weights

Nothing here is a hand-written network. A genotype is decoded by the search space into an
ordinary backbone spec (`space.decode`), whose resolved layers (`spec.layers()`) say which block
sits where. The supernet owns one compiled module per *slot*: a (layer name, block kind and
hyper-parameters, channels, stride) that some path of the space uses, built by lowering that one
layer to the graph IR and compiling it (`compiler.lowering.lower_layer`, `compiler.build`), so a
slot's module has exactly the structure and parameter names of the same layer in the stand-alone
model. A path is the list of slots its decoded spec's layers name; `subnet` copies their weights
under the stand-alone names, which is why the two compute the same function.

Weight sharing, per space:

* ``detnas``: every choice layer holds all its candidate blocks (one slot per layer and choice);
  a path takes one per layer. Stem, neck and head are shared by every path.
* ``crnas``: block b of stage s is one slot, whichever allocation uses it: the branches of a stage
  share their first blocks (a stage of depth 3 is the first 3 blocks of the deepest branch). The
  alternative, one independent branch per allowed depth, multiplies the stage's weights by the
  number of choices (10 for ResNet) and trains each branch with a tenth of the updates; sharing
  also makes the depth choice the only difference between two allocations, which is what
  step one of CR-NAS ranks. A block's dilation changes no weight (a k x k kernel dilated by d has
  the same k x k weights), so dilations are not slots: the path sets the dilation and padding of
  the slot's spatial convolutions before running it, as the graph IR of the layer at that dilation
  says; the dilation step adds no parameters.

The neck and head come from the search config's ``detector:`` template, the same definition
`best.yaml` and `archspec train` use. Every path of a supported space has the same output levels
and widths, so one neck and head serve all of them (checked when the supernet is built).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

import archspec
from archspec.registry import Registry
from archspec.compiler import build
from archspec.compiler.graph import Graph
from archspec.compiler.lowering import lower_layer
from archspec.compiler.ops import Conv, Input
from archspec.detection.model import Detector
from archspec.search.space import Genotype, Rejected, make_space, undecided_blocks

SUPERNET_KIND = "archspec.supernet/1"
"""Marks a checkpoint as a supernet's (its `spec` is then the base path's detector)."""

COVERINGS: Registry = Registry("supernet covering")
"""Space kind -> function(space) -> genotypes whose decoded specs together use every slot of the
space. A space kind without one has no supernet (MAE-DET and SpineNet change widths and wiring,
which weight sharing by slot does not cover)."""


@COVERINGS.register("detnas")
def _detnas_covering(space) -> list[Genotype]:
    """One all-same genotype per choice: every (layer, choice) pair appears once."""
    return [tuple([choice] * len(space.base)) for choice in range(len(space.choices))]


@COVERINGS.register("crnas")
def _crnas_covering(space) -> list[Genotype]:
    """Per stage, an allocation where that stage is deepest (dilation 1: dilations are no slots)."""
    dilations = (1,) * space.total
    deepest = [max(space.allocations, key=lambda a, s=s: (a[s], a)) for s in range(space.stage_count)]
    return [allocation + dilations for allocation in dict.fromkeys(deepest)]


class SupernetError(ValueError):
    """A supernet cannot be built or used as asked; the message names the file or field."""


@dataclass(frozen=True)
class Step:
    """One layer of a path: the slot that runs it and the dilation settings of its convolutions."""

    slot: str
    layer: str
    convs: tuple[tuple[nn.Conv2d, int, int], ...]
    """(conv module, dilation, padding) for each convolution whose dilation the path sets."""


@dataclass(frozen=True)
class Route:
    """A selected path: its steps in order and which layer ends each output."""

    genotype: Genotype
    spec: object
    steps: tuple[Step, ...]
    outputs: dict[str, str]
    """Output name (``C3``...) -> the layer whose result it is."""


def slot_key(layer) -> str:
    """The slot a resolved layer runs in: its name and everything about its block but dilation.
    (A `ModuleDict` key: no dots.)"""
    block = layer.block.model_dump(mode="json", exclude={"dilation"})
    identity = json.dumps([block, layer.in_channels, layer.out_channels, layer.stride], sort_keys=True)
    return f"{layer.name.replace('.', '_')}__{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def layer_graph(layer) -> Graph:
    """The graph IR of one layer alone (input: its input map; output ``out``)."""
    graph = Graph(layer.name)
    x = graph.add("input", Input(layer.in_channels), block="input", block_kind="input")
    graph.set_output("out", lower_layer(graph, layer, x))
    return graph


def _dilatable(layer) -> dict[str, tuple[int, int]]:
    """Conv node -> (dilation, padding) of the layer at its own dilation, checked to differ from
    the dilation-1 layer in nothing else (so the weights are the same)."""
    plain = {info.name: info.op for info in layer_graph(dataclasses.replace(layer, dilation=1)).nodes()}
    found = {}
    for info in layer_graph(layer).nodes():
        op = info.op
        if not isinstance(op, Conv):
            continue
        if dataclasses.replace(op, dilation=1) != plain.get(info.name):
            raise SupernetError(f"{layer.name}: dilation {layer.dilation} changes {info.name}'s weights; "
                                "a supernet shares one weight across dilations")
        found[info.name] = (op.dilation, op.padding)
    return found


class SupernetBackbone(nn.Module):
    """Every slot of a space as a compiled module; `forward` runs the selected path and returns
    the path's named outputs, like a compiled backbone."""

    def __init__(self, covering_specs: list):
        super().__init__()
        slots: dict[str, nn.Module] = {}
        for spec in covering_specs:
            for layer in spec.layers():
                key = slot_key(layer)
                if key not in slots:
                    slots[key] = build(layer_graph(dataclasses.replace(layer, dilation=1)))
        self.slots = nn.ModuleDict(slots)
        self.path: Route | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.path is None:
            raise RuntimeError("no path selected: call Supernet.select(genotype) first")
        wanted = {layer: name for name, layer in self.path.outputs.items()}
        found: dict[str, torch.Tensor] = {}
        for step in self.path.steps:
            for conv, dilation, padding in step.convs:
                conv.dilation, conv.padding = (dilation, dilation), (padding, padding)
            x = self.slots[step.slot](x)["out"]
            if step.layer in wanted:
                found[wanted[step.layer]] = x
        return {name: found[name] for name in self.path.outputs}


class Supernet(Detector):
    """A detector (neck and head from the config's ``detector:`` template) whose backbone is a
    `SupernetBackbone`; training, loss, decoding and evaluation treat it as any `Detector`."""

    def __init__(self, config, base, space=None):
        if config.detector is None:
            raise SupernetError("the search config has no detector: template; a supernet trains as a detector "
                                "(add detector: {neck, head, num_classes, input_size})")
        space = space if space is not None else make_space(config.space, base)
        covering = COVERINGS.find(config.space.type)
        if covering is None:
            raise SupernetError(f"space {config.space.type!r} has no supernet; supernets exist for "
                                f"{', '.join(sorted(COVERINGS.keys()))}")
        specs = [space.decode(g) for g in covering(space)]
        detectors = [config.detector.around(spec, name=f"{config.name}_supernet") for spec in specs]
        super().__init__(detectors[0])
        _check_same_levels(detectors)
        self.config, self.space = config, space
        self.fingerprint = supernet_fingerprint(config, base)
        self.backbone = SupernetBackbone(specs)
        self._paths: OrderedDict[Genotype, Route] = OrderedDict()
        self.select(space.base)

    # -- paths ------------------------------------------------------------------------------
    def path_spec(self, genotype: Genotype):
        """The backbone spec of a genotype; `SupernetError` naming the rule it breaks."""
        genotype = tuple(int(g) for g in genotype)
        try:
            self.space.check(genotype)
            undecided = undecided_blocks(self.space, genotype)
            if undecided:
                raise Rejected(f"blocks {list(undecided)} have no dilation yet (a partial architecture; a path "
                               "runs one dilation per block)")
            return self.space.decode(genotype)
        except Rejected as exc:
            raise SupernetError(f"genotype {list(genotype)} is outside the {self.config.space.type} space: "
                                f"{exc}") from None

    def select(self, genotype: Genotype) -> Route:
        """Make `forward` run this genotype's path (kept for the next few selections)."""
        genotype = tuple(int(g) for g in genotype)
        path = self._paths.get(genotype)
        if path is None:
            path = self._make_path(genotype)
            self._paths[genotype] = path
            if len(self._paths) > 64:
                self._paths.popitem(last=False)
        self.backbone.path = path
        return path

    def _make_path(self, genotype: Genotype) -> Route:
        spec = self.path_spec(genotype)
        steps = []
        for layer in spec.layers():
            key = slot_key(layer)
            if key not in self.backbone.slots:
                raise SupernetError(f"{layer.name}: no slot for this block in the supernet (a space change "
                                    "since the supernet was built?)")
            module = self.backbone.slots[key]
            convs = tuple((module.get_submodule(node), d, p) for node, (d, p) in _dilatable(layer).items())
            steps.append(Step(key, layer.name, convs))
        outputs = {name: spec.level_outputs()[name].name for name in spec.output_names()}
        return Route(genotype, spec, tuple(steps), outputs)

    def path_modules(self, genotype: Genotype) -> list[nn.Module]:
        """The slot modules a path runs (for BN recalibration)."""
        return [self.backbone.slots[step.slot] for step in self.select(genotype).steps]

    # -- extraction -------------------------------------------------------------------------
    def subnet(self, genotype: Genotype, name: str | None = None):
        """(stand-alone detector spec, its state dict): the path's weights under the names
        `detection.model.Detector` gives them, and the shared neck and head."""
        path = self.select(genotype)
        spec = self.config.detector.around(path.spec, name=name or f"{self.config.name}_subnet")
        state = {}
        for key, value in self.state_dict().items():
            if not key.startswith("backbone."):
                state[key] = value.detach().clone()
        for step in path.steps:
            for key, value in self.backbone.slots[step.slot].state_dict().items():
                state[f"backbone.{key}"] = value.detach().clone()
        return spec, state

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_supernet(config, base, space=None) -> Supernet:
    """The supernet of a search config (random initialisation: seed torch first)."""
    return Supernet(config, base, space)


def summarize_supernet(config, base) -> dict:
    """What `archspec supernet summary` prints: parameters (all, backbone, neck and head), slots,
    paths, and the backbone cost range of a path at the detector's input size."""
    torch.manual_seed(0)
    model = build_supernet(config, base)
    size = model.spec.image_size
    extremes = cost_extremes(model, size)
    neck_head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    return {"name": config.name, "space": config.space.type, "supernet": model.fingerprint,
            "params": model.parameter_count(), "backbone_params": model.parameter_count() - neck_head,
            "neck_head_params": neck_head, "slots": len(model.backbone.slots), "paths": path_count(model.space),
            "input_size": list(size),
            "path_backbone_params": list(extremes["params"]), "path_backbone_flops": list(extremes["flops"])}


def supernet_fingerprint(config, base) -> str:
    """What a supernet's weights depend on: base spec, space and detector template (not the
    strategy, budgets or evaluator, so one trained supernet serves searches that differ in those)."""
    data = {"base": archspec.fingerprint(base), "space": config.space.model_dump(mode="json"),
            "detector": config.detector.model_dump(mode="json") if config.detector else None}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_same_levels(detectors: list) -> None:
    from archspec.compiler.detector import plan_detector

    plans = [plan_detector(d) for d in detectors]
    first = plans[0].backbone_outputs
    for plan in plans[1:]:
        if plan.backbone_outputs != first:
            raise SupernetError(f"paths of this space differ in their outputs ({first} vs "
                                f"{plan.backbone_outputs}); one neck and head cannot serve them all")


def check_checkpoint(state: dict, supernet: Supernet, source: str) -> None:
    """`SupernetError` unless `state` is a checkpoint of this very supernet."""
    if state.get("kind") != SUPERNET_KIND:
        raise SupernetError(f"{source}: not a supernet checkpoint (a detector's? train one with "
                            "`archspec supernet train`)")
    if state.get("supernet") != supernet.fingerprint:
        raise SupernetError(f"{source}: belongs to another supernet (fingerprint {state.get('supernet')}; this "
                            f"config's base, space and detector give {supernet.fingerprint})")


def load_initial_backbone(supernet: Supernet, path) -> dict[str, int]:
    """Load pre-trained backbone weights (`--init`) into every slot that has them.

    `path` is a detector checkpoint (``best.pt``/``last.pt``, or an extracted ``weights.pt``)
    or a plain state dict, read with ``weights_only=True``. Keys are stand-alone backbone names
    (``stage1.block3.conv1.weight``, optionally under ``backbone.``); each goes to every slot of
    that layer whose tensor has the same shape (e.g. all four DetNAS choices of a layer take the
    1x1 convolutions they share in shape). Returns counts of loaded and unused tensors."""
    from archspec.detection.checkpoint import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable weights file: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict or a checkpoint with 'model'")
    weights = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    loaded, used = 0, set()
    for slot in supernet.backbone.slots.values():
        own = slot.state_dict()
        for key, tensor in own.items():
            source = weights.get(key)
            if isinstance(source, torch.Tensor) and source.shape == tensor.shape:
                tensor.copy_(source)
                loaded += 1
                used.add(key)
    if not loaded:
        raise CheckpointError(f"{path}: no tensor matches the supernet's backbone (names like "
                              "stage0.block0.conv1.weight expected)")
    return {"loaded": loaded, "unused": len([k for k in weights if k not in used])}


CANDIDATES_FOR_COSTS: Registry = Registry("supernet cost extremes")
"""Space kind -> function(space, measure) -> genotypes among which the cheapest and dearest
paths by `measure` (a genotype -> number function, additive over layers) are found exactly."""


@CANDIDATES_FOR_COSTS.register("detnas")
def _detnas_extremes(space, measure) -> list[Genotype]:
    """Costs add up over layers and a layer's cost depends on its own choice only: the extremes
    take, layer by layer, the cheapest (dearest) choice."""
    base = list(space.base)
    per_layer = []
    for i in range(len(base)):
        costs = [measure(tuple(base[:i] + [c] + base[i + 1:])) for c in range(len(space.choices))]
        per_layer.append((costs.index(min(costs)), costs.index(max(costs))))
    return [tuple(low for low, _ in per_layer), tuple(high for _, high in per_layer)]


@CANDIDATES_FOR_COSTS.register("crnas")
def _crnas_extremes(space, measure) -> list[Genotype]:
    """Dilations change neither params nor FLOPs: every allocation at dilation 1."""
    return [allocation + (1,) * space.total for allocation in space.allocations]


def path_count(space) -> int:
    """Number of distinct paths of a supported space."""
    if hasattr(space, "allocations"):
        return len(space.allocations) * len(space.config.dilations) ** space.total
    return len(space.choices) ** len(space.base)


def cost_extremes(supernet: Supernet, input_size) -> dict[str, tuple[float, float]]:
    """Exact smallest and largest backbone params and FLOPs over every path."""
    from archspec.compiler.fastcosts import fast_costs

    found = {}
    for key in ("params", "flops"):
        def measure(genotype, key=key):
            return getattr(fast_costs(supernet.path_spec(genotype), input_size), key)

        values = [measure(g) for g in CANDIDATES_FOR_COSTS.get(supernet.config.space.type)(supernet.space, measure)]
        found[key] = (min(values), max(values))
    return found

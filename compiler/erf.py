"""Effective receptive fields (Luo et al., "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016, section 2 and 4.1).

The theoretical receptive field of an output unit (`Graph.fields`) is every input pixel that can
influence it; Luo et al. show that the influence is far from uniform: it falls off like a Gaussian
and the *effective* field is a small fraction of the theoretical one. Following their section 4.1,
the effective field of an output level is measured as the gradient of the centre unit of its map
(summed over channels) with respect to the input image, in absolute value, summed over the input's
colour channels and averaged over N images.

What this module reports per output level: the normalised heat map (sums to 1), the centre of the
unit's field, and the radii that hold 50% and 90% of the gradient mass. The centre is the midpoint
of the pixels the unit depends on at all (the theoretical field, clipped by the image), which is
where its anchors sit. A radius r is the half-side of the square of side 2r + 1 around that centre
(Chebyshev distance), so 2r + 1 compares directly with the theoretical receptive field (one side,
pixels) and the level's anchor sides, which are squares too. The centre of gradient *mass* is
reported too: with trained or random weights it drifts off the field's centre by a pixel or so.
The anchor sides are RetinaNet's (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
section 4): side 4 * 2**k at level k, at scales 2**(0/3), 2**(1/3), 2**(2/3).

Networks run in eval mode: batch norm then uses its running statistics, so images in a batch do not
influence each other and one backward pass gives every image's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Normalisation of real images (the torchvision ImageNet statistics the backbones are trained with)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def anchor_sides(level: int) -> tuple[float, float, float]:
    """RetinaNet's anchor sides at level k (pixels): 4 * 2**k at scales 2**(i/3), i = 0, 1, 2."""
    return tuple(4 * 2 ** level * 2 ** (i / 3) for i in range(3))


@dataclass(frozen=True)
class LevelERF:
    """The effective receptive field of one output's centre unit."""

    name: str
    """Output name (``C3``...)."""
    level: int
    """log2 of the output's stride."""
    heatmap: np.ndarray
    """Mean absolute input gradient, (H, W) of the input, normalised to sum 1."""
    centre: tuple[float, float]
    """Centre of the unit's field (row, column), input pixels: the midpoint of the pixels with a
    non-zero gradient."""
    centroid: tuple[float, float]
    """Centre of gradient mass (row, column), input pixels."""
    radius50: float
    """Half-side of the square around `centre` holding 50% of the gradient mass (pixels)."""
    radius90: float
    """The same for 90%."""
    theoretical: int | None
    """Theoretical receptive field, one side in pixels (None: global)."""
    images: int
    """Images the gradient is averaged over."""

    @property
    def stride(self) -> int:
        return 2 ** self.level

    @property
    def anchors(self) -> tuple[float, float, float]:
        return anchor_sides(self.level)

    def as_dict(self) -> dict:
        """Everything but the heat map, JSON-ready (what `archspec erf --json` prints per level)."""
        return {"name": self.name, "level": self.level, "stride": self.stride,
                "radius50": round(self.radius50, 2), "radius90": round(self.radius90, 2),
                "side50": round(2 * self.radius50 + 1, 2), "side90": round(2 * self.radius90 + 1, 2),
                "theoretical_rf": self.theoretical, "anchor_sides": [round(a, 2) for a in self.anchors],
                "centre": [round(c, 2) for c in self.centre], "centroid": [round(c, 2) for c in self.centroid],
                "images": self.images}


def mass_radius(heatmap: np.ndarray, fraction: float, centre: tuple[float, float] | None = None) -> float:
    """Smallest half-side r of a square centred on `centre` (default: `field_centre`) whose
    pixels (those at Chebyshev distance <= r) hold `fraction` of the heat map's mass."""
    total = float(heatmap.sum())
    if total <= 0:
        raise ValueError("the gradient is zero everywhere: the output does not depend on the input")
    cy, cx = centre if centre is not None else field_centre(heatmap)
    rows, cols = np.indices(heatmap.shape)
    distance = np.maximum(np.abs(rows - cy), np.abs(cols - cx)).ravel()
    order = np.argsort(distance, kind="stable")
    cumulative = np.cumsum(heatmap.ravel()[order]) / total
    # a tolerance so that "all of the mass" is reached despite float rounding in the sum
    index = int(np.searchsorted(cumulative, fraction - 1e-9))
    return float(distance[order[min(index, len(order) - 1)]])


def field_centre(heatmap: np.ndarray) -> tuple[float, float]:
    """Midpoint (row, column) of the bounding box of the pixels with a non-zero gradient."""
    rows, cols = np.nonzero(heatmap > 0)
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def centroid(heatmap: np.ndarray) -> tuple[float, float]:
    total = float(heatmap.sum())
    rows, cols = np.indices(heatmap.shape)
    return float((rows * heatmap).sum() / total), float((cols * heatmap).sum() / total)


def centre_gradients(model: Callable[[torch.Tensor], dict], images: torch.Tensor,
                     outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Output name -> mean over images of |d centre unit / d input|, summed over input channels,
    (H, W). `model` maps a batch to a dict of (N, C, h, w) maps; one forward, one backward per output."""
    images = images.detach().clone().requires_grad_(True)
    maps = model(images)
    missing = [name for name in outputs if name not in maps]
    if missing:
        raise ValueError(f"the model has no output {missing[0]!r}; it has {', '.join(maps)}")
    found: dict[str, np.ndarray] = {}
    for i, name in enumerate(outputs):
        feature = maps[name]
        if feature.dim() != 4:
            raise ValueError(f"output {name!r} is not a feature map (shape {tuple(feature.shape)})")
        h, w = feature.shape[-2:]
        # every channel of the centre unit, every image: images are independent in eval mode
        centre = feature[:, :, h // 2, w // 2].sum()
        (grad,) = torch.autograd.grad(centre, images, retain_graph=i + 1 < len(outputs))
        found[name] = grad.abs().sum(dim=1).mean(dim=0).double().numpy()
    return found


def random_images(count: int, size: tuple[int, int], channels: int = 3, seed: int = 0) -> torch.Tensor:
    """`count` standard-normal images (what normalised natural images look like to a network's
    first layer, to first order), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, channels, *size, generator=generator)


def load_images(folder: str | Path, count: int, size: tuple[int, int]) -> torch.Tensor:
    """The first `count` images of `folder` (sorted by name), resized to `size` (height, width),
    RGB, normalised with the ImageNet statistics."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        batch.append((pixels - mean) / std)
    return torch.stack(batch)


def load_backbone_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load weights into a built backbone: a state dict, or a checkpoint holding one under
    ``model`` (an archspec detector checkpoint: its ``backbone.`` keys are used). Read with
    ``weights_only=True``; keys must match exactly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise ValueError(f"{path}: not a readable weights file ({str(exc).strip().splitlines()[0][:160]})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict")
    if any(key.startswith("backbone.") for key in state):
        state = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    wanted = set(module.state_dict())
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ValueError(f"{path}: the weights do not fit this spec ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys; {detail})")
    module.load_state_dict(state)


def effective_receptive_fields(spec, input_size: tuple[int, int], *, images: torch.Tensor | None = None,
                               count: int = 4, seed: int = 0, weights: str | Path | None = None,
                               outputs: Sequence[str] | None = None) -> list[LevelERF]:
    """The ERF of every feature-map output of a backbone spec (a detector's backbone for detector
    specs) at `input_size`: averaged over `images` when given, else over `count` seeded random
    images. Without `weights`, the network keeps its seeded random initialisation (Luo et al.
    study both: random weights already give the Gaussian-shaped ERF)."""
    from archspec.compiler import build
    from archspec.compiler.costs import receptive_fields
    from archspec.compiler.lowering import lower

    backbone = spec.backbone if spec.type == "detector" else spec
    graph = lower(backbone)
    torch.manual_seed(seed)
    model = build(graph)
    if weights is not None:
        load_backbone_weights(model, weights)
    model.eval()
    levels = {name: graph.nx.nodes[node]["level"] for name, node in graph.outputs.items()}
    names = list(outputs) if outputs is not None else [name for name in graph.outputs if name != "logits"]
    unknown = [name for name in names if name not in levels]
    if unknown:
        raise ValueError(f"{backbone.name} has no output {unknown[0]!r}; it has {', '.join(levels)}")
    if images is None:
        images = random_images(count, input_size, backbone.in_channels, seed)
    theoretical = receptive_fields(graph)
    grads = centre_gradients(model, images, names)
    found = []
    for name in names:
        heat = grads[name]
        total = heat.sum()
        if total <= 0:
            raise ValueError(f"{name}: the gradient is zero everywhere (dead network at this input?)")
        heat = heat / total
        centre = field_centre(heat)
        found.append(LevelERF(name, levels[name], heat, centre, centroid(heat), mass_radius(heat, 0.5, centre),
                              mass_radius(heat, 0.9, centre), theoretical.get(name), int(images.shape[0])))
    return found


def save_heatmap(erf: LevelERF, path, title: str = ""):
    """A PNG of the heat map (linear colour scale) with the 50%/90% squares, the theoretical
    field's square and the largest anchor, all around the field's centre."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(4.2, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(erf.heatmap, cmap="magma", interpolation="nearest")
    cy, cx = erf.centre
    squares = [(erf.radius50, "#4fc3f7", f"50% (r={erf.radius50:.1f})"),
               (erf.radius90, "#81c784", f"90% (r={erf.radius90:.1f})"),
               ((erf.anchors[-1] - 1) / 2, "#ffffff", f"anchor {erf.anchors[-1]:.0f}px")]
    if erf.theoretical is not None:
        squares.append(((erf.theoretical - 1) / 2, "#e57373", f"theoretical RF {erf.theoretical}px"))
    for radius, color, label in squares:
        ax.add_patch(Rectangle((cx - radius - 0.5, cy - radius - 0.5), 2 * radius + 1, 2 * radius + 1, fill=False,
                               edgecolor=color, linewidth=1.2, linestyle="--" if "anchor" in label else "-",
                               label=label))
    height, width = erf.heatmap.shape
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_title(title or f"{erf.name} (stride {erf.stride}), ERF over {erf.images} images", fontsize=9)
    ax.legend(loc="lower left", fontsize=6.5, framealpha=0.6)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    target = Path(path) if isinstance(path, (str, Path)) else path  # or a binary file object
    fig.savefig(target, dpi=110, format="png")
    return target


def erf_table(erfs: Sequence[LevelERF]) -> list[list[str]]:
    """Rows for people: output, stride, r50, r90, 2 r90 + 1, theoretical RF, anchor sides."""
    rows = []
    for erf in erfs:
        rf = "global" if erf.theoretical is None else str(erf.theoretical)
        rows.append([erf.name, str(erf.stride), f"{erf.radius50:.1f}", f"{erf.radius90:.1f}",
                     f"{2 * erf.radius90 + 1:.1f}", rf, " / ".join(f"{a:.0f}" for a in erf.anchors)])
    return rows


ERF_COLUMNS = ["output", "stride", "ERF r50 (px)", "ERF r90 (px)", "ERF side90 (px)", "theoretical RF (px)",
               "anchor sides (px)"]


def fraction_inside(heatmap: np.ndarray, radius: float, centre: tuple[float, float]) -> float:
    """Share of the mass at Chebyshev distance <= `radius` from `centre` (for checks)."""
    rows, cols = np.indices(heatmap.shape)
    inside = np.maximum(np.abs(rows - centre[0]), np.abs(cols - centre[1])) <= radius + 1e-9
    return float(heatmap[inside].sum() / heatmap.sum())


__all__ = ["ERF_COLUMNS", "LevelERF", "anchor_sides", "centre_gradients", "effective_receptive_fields",
           "erf_table", "field_centre", "fraction_inside", "load_backbone_weights", "load_images", "mass_radius",
           "random_images", "save_heatmap"]

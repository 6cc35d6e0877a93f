"""Effective receptive fields (compiler/erf.py, `archspec erf`) against cases with known answers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import archspec
from archspec.compiler import build
from archspec.compiler.erf import (anchor_sides, centre_gradients, effective_receptive_fields, fraction_inside,
                                   mass_radius, random_images)
from tests.conftest import ROOT, cli_in_process


def conv_stack(layers: int, kernel: int = 3, dilation: int = 1, *, linear: bool = False):
    """`layers` stride-1 k x k convolutions on a one-channel image, output C0. `linear`: no batch
    norm, no activation (the uniform-weight case of Luo et al., section 2.2)."""
    extra = {"activation": "identity", "norm": False} if linear else {}
    stem = [{"type": "conv", "out_channels": 1 if linear else 4, "kernel": kernel, "dilation": dilation, **extra}
            for _ in range(layers)]
    return archspec.validate({"type": "staged", "name": f"stack{layers}x{kernel}d{dilation}", "in_channels": 1,
                              "stem": stem, "outputs": ["C0"],
                              "stages": [{"block": {"type": "conv", "kernel": 1}, "depth": 1, "out_channels": 1}]})


def uniform_weights_file(spec, path):
    """A state dict of `spec`'s network with every convolution weight 1."""
    state = {key: torch.ones_like(value) if key.endswith(".weight") else value
             for key, value in build(spec).state_dict().items()}
    torch.save(state, path)
    return path


def binomial_field(layers: int, kernel: int = 3) -> np.ndarray:
    """The input gradient of the centre of `layers` all-ones k x k convolutions: the n-fold
    convolution of a k x k box, normalised (computed independently, with numpy)."""
    line = np.ones(1)
    for _ in range(layers):
        line = np.convolve(line, np.ones(kernel))
    field = np.outer(line, line)
    return field / field.sum()


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_single_conv_erf_lies_inside_its_window(kernel):
    size = 21
    (erf,) = effective_receptive_fields(conv_stack(1, kernel), (size, size), count=3, seed=1)
    centre, half = size // 2, kernel // 2
    support = np.argwhere(erf.heatmap > 0)
    assert support.size, "the centre unit must depend on some input pixel"
    assert support.min() >= centre - half and support.max() <= centre + half
    assert fraction_inside(erf.heatmap, half, (centre, centre)) == pytest.approx(1.0)
    assert erf.radius90 <= half and erf.theoretical == kernel
    assert erf.heatmap.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("layers", [1, 2, 4, 6])
def test_uniform_conv_stack_is_the_binomial_field_centred_inside_the_theoretical_one(layers, tmp_path):
    size = 4 * layers + 9  # odd: the centre unit sits on the middle pixel; the field never meets the border
    spec = conv_stack(layers, linear=True)
    weights = uniform_weights_file(spec, tmp_path / "ones.pt")
    (erf,) = effective_receptive_fields(spec, (size, size), count=2, weights=weights)
    middle = size // 2
    expected = np.zeros((size, size))
    expected[middle - layers:middle + layers + 1, middle - layers:middle + layers + 1] = binomial_field(layers)
    np.testing.assert_allclose(erf.heatmap, expected, atol=1e-12)
    assert erf.centroid == pytest.approx((middle, middle), abs=1e-9) and erf.centre == (middle, middle)
    assert erf.theoretical == 2 * layers + 1
    assert fraction_inside(erf.heatmap, layers, (middle, middle)) == pytest.approx(1.0)
    # the square of half-side r holds (1-D mass within r) ** 2 of a separable field
    line = binomial_field(layers).sum(axis=0)
    inside = [line[layers - r:layers + r + 1].sum() ** 2 for r in range(layers + 1)]
    assert erf.radius50 == next(r for r, mass in enumerate(inside) if mass >= 0.5 - 1e-9)
    assert erf.radius90 == next(r for r, mass in enumerate(inside) if mass >= 0.9 - 1e-9)
    if layers >= 6:  # the Gaussian shape: the ERF is a fraction of the field (Luo et al., section 2.2)
        assert erf.radius50 < layers / 2


def test_dilation_widens_the_erf(tmp_path):
    size = 41
    plain, dilated = conv_stack(3, dilation=1, linear=True), conv_stack(3, dilation=2, linear=True)
    erfs = [effective_receptive_fields(spec, (size, size), count=1, weights=uniform_weights_file(spec, tmp_path / f"{i}.pt"))[0]
            for i, spec in enumerate((plain, dilated))]
    # uniform weights: the dilated field is the plain one spread over every other pixel
    assert erfs[1].radius50 == 2 * erfs[0].radius50 and erfs[1].radius90 == 2 * erfs[0].radius90
    assert erfs[1].theoretical == 13 and erfs[0].theoretical == 7
    # random weights (batch norm, ReLU): still wider
    random = [effective_receptive_fields(conv_stack(3, dilation=d), (size, size), count=4, seed=3)[0] for d in (1, 2)]
    assert random[1].radius90 > random[0].radius90 and random[1].radius50 > random[0].radius50


def test_mass_radius_on_a_known_map():
    heat = np.zeros((9, 9))
    heat[4, 4] = 0.5
    heat[4, 6] = 0.4  # distance 2 (the centroid moves; pass the centre explicitly)
    heat[0, 0] = 0.1  # distance 4
    assert mass_radius(heat, 0.5, (4, 4)) == 0
    assert mass_radius(heat, 0.9, (4, 4)) == 2
    assert mass_radius(heat, 0.95, (4, 4)) == 4
    with pytest.raises(ValueError, match="zero everywhere"):
        mass_radius(np.zeros((3, 3)), 0.5)


def test_anchor_sides_are_retinanets():
    assert anchor_sides(3) == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))
    assert anchor_sides(5)[0] == 128


def test_centre_gradients_average_over_images():
    spec = conv_stack(2, linear=False)
    torch.manual_seed(0)
    model = build(spec).eval()
    images = random_images(3, (15, 15), channels=1, seed=5)
    together = centre_gradients(model, images, ["C0"])["C0"]
    apart = np.mean([centre_gradients(model, images[i:i + 1], ["C0"])["C0"] for i in range(3)], axis=0)
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_resnet50_against_cr_resnet50_deep_levels(capsys):
    """The deeper levels' ERF radii of ResNet-50 and CR-ResNet-50 (random weights, 2 noise images
    at 128x128: a cheap check; benchmarks/erf.py prints the 224x224 table)."""
    rows = {}
    for name in ("resnet50", "cr_resnet50"):
        spec = archspec.load(ROOT / "examples" / "backbones" / f"{name}.yaml")
        rows[name] = {e.name: e for e in effective_receptive_fields(spec, (128, 128), count=2,
                                                                     outputs=["C3", "C4", "C5"])}
    with capsys.disabled():
        print("\nERF radius90 (px) at 128x128, random weights, 2 images:",
              {name: {level: round(e.radius90, 1) for level, e in levels.items()} for name, levels in rows.items()})
    for name, levels in rows.items():
        for level, erf in levels.items():
            assert erf.radius90 < erf.theoretical / 2, (name, level)  # effective << theoretical
    # CR-ResNet-50 dilates its deep blocks: its C5 field is wider, theoretically and effectively
    assert rows["cr_resnet50"]["C5"].theoretical > rows["resnet50"]["C5"].theoretical
    assert rows["cr_resnet50"]["C5"].radius90 > rows["resnet50"]["C5"].radius90


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    """`archspec ARGS` through the CLI's entry point, in this process (tests/test_cli.py runs it as a process)."""
    return cli_in_process(*args, cwd=cwd)


def test_cli_erf_json_and_heatmaps(tmp_path):
    spec_path = tmp_path / "stack.yaml"
    archspec.save(conv_stack(3), spec_path)
    result = run("erf", str(spec_path), "--input-size", "25", "-n", "2", "--out", str(tmp_path / "maps"), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    (level,) = info["levels"]
    assert level["name"] == "C0" and level["theoretical_rf"] == 7 and level["images"] == 2
    assert 0 < level["radius50"] <= level["radius90"] <= 3
    from PIL import Image

    with Image.open(level["heatmap"]) as image:
        assert image.format == "PNG" and image.size[0] > 100
    table = run("erf", str(spec_path), "--input-size", "25", "-n", "1", "--out", str(tmp_path / "maps"))
    assert table.returncode == 0 and "theoretical RF" in table.stdout and "C0" in table.stdout


def test_cli_erf_real_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    spec_path = tmp_path / "stack.yaml"
    archspec.save(conv_stack(2).model_copy(update={"in_channels": 3}), spec_path)
    result = run("erf", str(spec_path), "--input-size", "21", "--images", str(folder), "-n", "5", "--json",
                 "--out", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["images"].startswith("2 images from") and info["levels"][0]["images"] == 2


@pytest.mark.parametrize("args, words", [
    (["--images", "no_such_folder"], "no_such_folder: no such image folder"),
    (["--weights", "WEIGHTS"], "not a readable weights file"),
    (["--weights", "OTHER"], "the weights do not fit this spec"),
    (["--input-size", "0"], "input size"),
])
def test_cli_erf_bad_input_is_one_line(tmp_path, args, words):
    spec_path = tmp_path / "stack.yaml"
    archspec.save(conv_stack(2), spec_path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "other.pt")
    args = [{"WEIGHTS": str(tmp_path / "junk.pt"), "OTHER": str(tmp_path / "other.pt")}.get(a, a) for a in args]
    result = run("erf", str(spec_path), "--input-size", "17", *args, "--out", str(tmp_path / "maps"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr

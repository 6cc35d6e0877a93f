"""Compile-time figures for the zoo and compiled-vs-hand-written ResNet-50 forward latency.

    python benchmarks/compile.py [--repeat 30] [--threads 2] [--input-size 224]

Prints, per zoo spec, the time to validate (load), lower to the graph IR, compute analytic costs
and build the torch module; then the eager forward latency of the compiled ResNet-50 against a
plain hand-written ResNet-50 (same weights, same input, same run, interleaved). Target: the
compiled model is no slower than hand-written code (ratio <= 1.03).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import archspec
from archspec import compiler

ROOT = Path(__file__).resolve().parent.parent


class Bottleneck(nn.Module):
    """torchvision-style bottleneck, written by hand."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        width = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class HandWrittenResNet50(nn.Module):
    """ResNet-50 feature extractor returning C2..C5, as one would write it by hand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, channels = [], 64
        for depth, width, stride in ((3, 256, 1), (4, 512, 2), (6, 1024, 2), (3, 2048, 2)):
            blocks = [Bottleneck(channels, width, stride)] + [Bottleneck(width, width, 1) for _ in range(depth - 1)]
            layers.append(nn.Sequential(*blocks))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"C2": c2, "C3": c3, "C4": c4, "C5": c5}


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Both modules register their tensors in the same order (conv, bn, ..., shortcut)."""
    source_state, target_state = source.state_dict(), target.state_dict()
    assert [v.shape for v in source_state.values()] == [v.shape for v in target_state.values()]
    target.load_state_dict(dict(zip(target_state, source_state.values())))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compile_table(size: tuple[int, int]) -> None:
    print(f"{'spec':24s} {'validate ms':>11s} {'lower ms':>9s} {'costs ms':>9s} {'build ms':>9s} "
          f"{'params':>12s} {'GMACs':>8s}")
    for path in sorted((ROOT / "examples" / "backbones").glob("*.yaml")):
        t_load = timed(lambda: archspec.load(path))
        spec = archspec.load(path)
        t_lower = timed(lambda: compiler.lower(spec))
        counts = None

        def cost():
            nonlocal counts
            counts = compiler.costs(spec, size)

        t_costs = timed(cost)
        t_build = timed(lambda: compiler.build(spec))
        print(f"{spec.name:24s} {t_load * 1e3:11.1f} {t_lower * 1e3:9.1f} {t_costs * 1e3:9.1f} "
              f"{t_build * 1e3:9.1f} {counts.params:12,d} {counts.macs / 1e9:8.3f}")


def latency_ratio(size: tuple[int, int], repeat: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    compiled = compiler.build(archspec.load(ROOT / "examples/backbones/resnet50.yaml")).eval()
    hand = HandWrittenResNet50().eval()
    copy_weights(compiled, hand)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        a, b = compiled(x), hand(x)
        for name in a:
            torch.testing.assert_close(a[name], b[name])
        for _ in range(3):
            compiled(x), hand(x)
        times = {"compiled": [], "hand-written": []}
        for i in range(repeat):
            # Interleave and alternate the order so drifting machine load hits both alike.
            order = [("compiled", compiled), ("hand-written", hand)][:: 1 if i % 2 == 0 else -1]
            for name, model in order:
                times[name].append(timed(lambda: model(x)))
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    mins = {k: min(v) * 1e3 for k, v in times.items()}
    print(f"\nResNet-50 forward at {size[0]}x{size[1]}, batch 1, {threads} threads, {repeat} interleaved runs "
          f"(outputs identical):")
    for name in times:
        print(f"  {name:13s} median {medians[name]:8.2f} ms   min {mins[name]:8.2f} ms")
    print(f"  ratio compiled / hand-written: median {medians['compiled'] / medians['hand-written']:.3f}, "
          f"min {mins['compiled'] / mins['hand-written']:.3f} (target <= 1.03)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", default="224")
    args = parser.parse_args()
    size = compiler.parse_input_size(args.input_size)
    compile_table(size)
    latency_ratio(size, args.repeat, args.threads)


if __name__ == "__main__":
    main()

"""Counting on a built module, independent of the analytic rules: used to check them."""

from __future__ import annotations

import torch
from torch import nn


def module_params(module: nn.Module) -> int:
    """`sum(p.numel())` over the module's parameters (each shared parameter once)."""
    return sum(p.numel() for p in module.parameters())


def module_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d and Linear call in one forward pass, measured with
    forward hooks on the real output shapes, for one image of the batch."""
    total = 0

    def conv_hook(layer: nn.Conv2d, args, output: torch.Tensor) -> None:
        nonlocal total
        batch, out_channels, height, width = output.shape
        kernel = layer.kernel_size[0] * layer.kernel_size[1]
        total += height * width * out_channels * (layer.in_channels // layer.groups) * kernel

    def linear_hook(layer: nn.Linear, args, output: torch.Tensor) -> None:
        nonlocal total
        per_image = output[0] if output.dim() > 1 else output
        total += per_image.numel() * layer.in_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total

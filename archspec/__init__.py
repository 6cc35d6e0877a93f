"""archspec: the spec language for detection backbones (no torch here).

    spec = archspec.load("examples/backbones/resnet50.yaml")

The compiler (`compiler.build`, `compiler.costs`) and the search (`search`) build on it.
"""

from archspec.backbones import ClassifierHead, Layer, Stage, StagedBackbone, StemConv, StemPool
from archspec.blocks import (BasicBlock, Block, BottleneckBlock, ConvBlock, InvertedResidualBlock, K1KXBlock,
                             K1KXK1Block, ShuffleNetV2Block, ShuffleXceptionBlock)
from archspec.errors import Issue, SpecError
from archspec.scale_permuted import PermutedBlock, ScalePermutedBackbone
from archspec.io import (AnySpec, canonical_json, dumps, fingerprint, json_schema, load, loads, save, to_data,
                         validate)

__all__ = [
    "AnySpec", "BasicBlock", "Block", "BottleneckBlock", "ClassifierHead", "ConvBlock", "InvertedResidualBlock",
    "Issue", "K1KXBlock", "K1KXK1Block", "Layer", "PermutedBlock", "ScalePermutedBackbone", "ShuffleNetV2Block",
    "ShuffleXceptionBlock", "SpecError",
    "Stage", "StagedBackbone", "StemConv", "StemPool", "canonical_json", "dumps", "fingerprint", "json_schema",
    "load", "loads", "save", "to_data", "validate",
]
__version__ = "0.1.0"

"""archspec: the spec language for detection backbones (no torch here).

    spec = archspec.load("examples/backbones/resnet50.yaml")

The compiler (`compiler.build`, `compiler.costs`) and the search (`search`) build on it.

The import name is shared with Spack's CPU-microarchitecture library (PyPI ``archspec``); this
project's distribution is ``archspec-nas``. The two cannot live in one environment: importing
this package warns once when the other is found (`ImportNameConflict`).
"""

import os as _os
import sys as _sys
import warnings as _warnings

from archspec.backbones import ClassifierHead, Layer, Stage, StagedBackbone, StemConv, StemPool
from archspec.blocks import (BasicBlock, Block, BottleneckBlock, ConvBlock, InvertedResidualBlock, K1KXBlock,
                             K1KXK1Block, ShuffleNetV2Block, ShuffleXceptionBlock)
from archspec.errors import Issue, SpecError
from archspec.scale_permuted import PermutedBlock, ScalePermutedBackbone
from archspec.io import (AnySpec, canonical_json, dumps, fingerprint, json_schema, load, load_document, loads, save,
                         to_data, validate, validate_document)

__all__ = [
    "AnySpec", "BasicBlock", "Block", "BottleneckBlock", "ClassifierHead", "ConvBlock", "InvertedResidualBlock",
    "Issue", "K1KXBlock", "K1KXK1Block", "Layer", "PermutedBlock", "ScalePermutedBackbone", "ShuffleNetV2Block",
    "ShuffleXceptionBlock", "SpecError",
    "Stage", "StagedBackbone", "StemConv", "StemPool", "canonical_json", "dumps", "fingerprint", "json_schema",
    "load", "loads", "save", "to_data", "validate", "ImportNameConflict", "load_document", "validate_document",
]
__version__ = "0.1.0"


class ImportNameConflict(UserWarning):
    """Spack's `archspec` (CPU microarchitectures) is installed beside this one."""


def _spack_archspec_locations() -> list[str]:
    """Folders holding Spack's `archspec` package, found by its `archspec/cpu/` subpackage in
    this package's own folder (pip installs both into one ``site-packages/archspec/``) or on
    `sys.path`: a few `stat` calls, no metadata scan, so every import can afford it."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    candidates = [here] + [_os.path.join(entry or ".", "archspec") for entry in _sys.path]
    found: list[str] = []
    for folder in dict.fromkeys(candidates):
        if _os.path.isfile(_os.path.join(folder, "cpu", "__init__.py")) and folder not in found:
            found.append(folder)
    return found


def _warn_on_import_name_conflict() -> None:
    found = _spack_archspec_locations()
    if found:
        _warnings.warn(
            f"another package named 'archspec' is installed ({', '.join(found)}): Spack's CPU-microarchitecture "
            "library (PyPI: archspec) uses the same import name as this project (PyPI: archspec-nas), and "
            "the two overwrite each other's files. Use separate virtual environments, or `pip uninstall "
            "archspec` if you do not need Spack's.", ImportNameConflict, stacklevel=3)


_warn_on_import_name_conflict()

"""The layer contracts, checked on the source: spec <- compiler <- detection <- search <- cli.

import-linter cannot see this layout (its graph builder walks one folder per root package, and
`archspec.compiler` lives in the top-level `compiler/` folder), so this is the equivalent checker:
every import statement in every library file, at any depth (function-level imports included), is
resolved to a project module and must point to the same layer or one below. Dynamic imports of
project modules by string are refused when they point upward: they are how upward dependencies used to hide.

Why detection sits below search (the architecture issue drew them as peers): the search's trained
evaluators (proxy training, the supernet) train and evaluate detectors, so search needs detection,
while detection never needs search.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> (import name, layer rank). A module may import modules of its own rank or lower.
PACKAGES = {
    "archspec": ("archspec", 0),
    "compiler": ("archspec.compiler", 1),
    "detection": ("archspec.detection", 2),
    "search": ("archspec.search", 3),
}
CLI = ("archspec.cli", 4)
ENTRY_POINTS = ("archspec.__main__",)
"""Modules that only start the command line (`python -m archspec`): they belong to the cli layer."""
LAYER_NAMES = {0: "spec", 1: "compiler", 2: "detection", 3: "search", 4: "cli"}
# third-party packages the torch-free spec layer must never import, at any depth
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "matplotlib", "pycocotools", "PIL")


def library_modules() -> dict[str, tuple[Path, int]]:
    """Every library module: dotted name -> (file, layer rank)."""
    modules: dict[str, tuple[Path, int]] = {}
    for folder, (name, rank) in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            dotted = ".".join([name, *parts])
            in_cli = dotted == CLI[0] or dotted.startswith(CLI[0] + ".") or dotted in ENTRY_POINTS
            layer = CLI[1] if in_cli else rank
            modules[dotted] = (path, layer)
    return modules


def rank_of(module: str) -> int | None:
    """The layer of a project module name, or None for third-party and standard-library names."""
    if module == CLI[0] or module.startswith(CLI[0] + "."):
        return CLI[1]
    best = None
    for name, rank in PACKAGES.values():
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[0])):
            best = (name, rank)
    return None if best is None else best[1]


def imports_of(path: Path, dotted: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from archspec import compiler" imports the subpackage, not a name of archspec
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names
                      if rank_of(f"{module}.{alias.name}") not in (None, rank_of(module))]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, "<dynamic>" + arg.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            target = node.value.split(":", 1)[0]
            if rank_of(target) is not None and target.replace(".", "").replace("_", "").isalnum():
                found.append((node.lineno, "<string>" + target))
    return found


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "__import__") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def violations(modules: dict[str, tuple[Path, int]] | None = None) -> list[str]:
    """Every upward or heavy import in `modules` (default: the library's)."""
    found = []
    for dotted, (path, layer) in (library_modules() if modules is None else modules).items():
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for line, module in imports_of(path, dotted):
            if module.startswith(("<dynamic>", "<string>")):
                name = module.split(">", 1)[1]
                if (rank_of(name) or 0) > layer:
                    found.append(f"{where}:{line}: imports {name!r} by string; import it as a module")
                continue
            target = rank_of(module)
            if target is not None and target > layer:
                found.append(f"{where}:{line}: {LAYER_NAMES[layer]} layer imports {module} "
                             f"({LAYER_NAMES[target]} layer)")
            if layer == 0 and module.split(".")[0] in HEAVY:
                found.append(f"{where}:{line}: the spec layer imports {module}; `import archspec` must stay torch-free")
    return found


def test_every_library_module_is_in_a_layer():
    modules = library_modules()
    assert "archspec.io" in modules and modules["archspec.io"][1] == 0
    assert modules["archspec.compiler.lowering"][1] == 1
    assert modules["archspec.cli"][1] == 4
    assert modules["archspec.search.run"][1] == 3


def test_layer_contracts_hold():
    assert violations() == []


@pytest.mark.parametrize("source, expected", [
    ("from archspec.search.run import run_search\n", "compiler layer imports archspec.search.run"),
    ("def f():\n    from archspec import cli\n", "compiler layer imports archspec.cli"),
    ("from ..detection import model\n", "compiler layer imports archspec.detection"),
    ("import importlib\nimportlib.import_module('archspec.detection.export')\n", "by string"),
    ("EXPORTERS = {'detector': 'archspec.detection.export:export_detector_spec'}\n", "by string"),
])
def test_checker_catches_upward_imports(tmp_path, source, expected):
    """The checker itself can fail: a planted upward import in a compiler module is reported.
    (Planted outside the source tree: a file planted there would be seen by tests running beside.)"""
    planted = tmp_path / "_planted_for_test.py"
    planted.write_text(source)
    found = violations({"archspec.compiler._planted_for_test": (planted, PACKAGES["compiler"][1])})
    assert any(expected in v for v in found), found


def test_checker_catches_torch_in_the_spec_layer(tmp_path):
    planted = tmp_path / "_planted_for_test.py"
    planted.write_text("def f():\n    import torch\n")
    found = violations({"archspec._planted_for_test": (planted, PACKAGES["archspec"][1])})
    assert any("torch-free" in v for v in found), found

"""`archspec space summary | sample`: what a search space holds, and concrete specs from it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click


@click.group()
def space() -> None:
    """Search spaces: a search config's space, or a template (a spec with choices) on its own."""


@space.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input-size", default="224", show_default=True, metavar="H[xW]", help="Size for FLOPs.")
@click.option("--samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Draws for the FLOPs/params range.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def summary(config: Path, input_size: str, samples: int, seed: int, as_json: bool) -> None:
    """Each decision with its path and options, the space's size, and the FLOPs/params range
    over the space (by sampling: the smallest and largest of the valid draws)."""
    from archspec.compiler import costs, parse_input_size
    from archspec.search.space import open_space, sample_space

    size = parse_input_size(input_size)
    found, base = open_space(config)
    specs, refused = sample_space(found, samples, seed)
    counts = [costs(spec, size) for spec in specs]
    info = {
        "file": str(config),
        "space": found.config.type,
        "kind": base.type,
        "decisions": _decisions(found),
        "size": found.size() if callable(getattr(found, "size", None)) else None,
        "input_size": list(size),
        "sampled": {"valid": len(specs), "refused": sum(refused.values()),
                    "reasons": dict(sorted(refused.items(), key=lambda item: -item[1])[:5])},
        "flops": [min(c.flops for c in counts), max(c.flops for c in counts)] if counts else None,
        "params": [min(c.params for c in counts), max(c.params for c in counts)] if counts else None,
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    _print_summary(info)


def _decisions(found) -> list[dict] | None:
    """The decisions of a template space (None for a hand-written genotype codec)."""
    if not hasattr(found, "decisions"):
        return None
    rows = []
    for decision in found.decisions:
        when = [f"{found.decisions[outer].path} = {found.decisions[outer].label(taken)}"
                for outer, taken in decision.conditions]
        rows.append({"path": decision.path, "options": [decision.label(i) for i in range(len(decision.values))],
                     "default": decision.label(decision.default), "name": decision.name, "when": when})
    return rows


def _print_summary(info: dict) -> None:
    click.echo(f"{info['file']}: {info['space']} space over {info['kind']} specs")
    if info["decisions"] is None:
        click.echo("  decisions: a hand-written genotype codec (see its space config)")
    else:
        click.echo(f"  {len(info['decisions'])} decisions:")
        for row in info["decisions"]:
            extra = (f"  [name {row['name']}]" if row["name"] else "") + \
                    (f"  (when {', '.join(row['when'])})" if row["when"] else "")
            click.echo(f"    {row['path']}: {' | '.join(row['options'])}{extra}")
    if info["size"] is not None:
        click.echo(f"  size: {info['size']:,} architectures (before constraints)")
    sampled = info["sampled"]
    h, w = info["input_size"]
    click.echo(f"  sampled {sampled['valid'] + sampled['refused']} draws: {sampled['valid']} valid, "
               f"{sampled['refused']} refused")
    for reason, count in sampled["reasons"].items():
        click.echo(f"    {count} x {reason}")
    if info["flops"]:
        (f_lo, f_hi), (p_lo, p_hi) = info["flops"], info["params"]
        click.echo(f"  FLOPs at {h}x{w} (2 x MACs), over the valid draws: {f_lo / 1e9:.3f} G .. {f_hi / 1e9:.3f} G")
        click.echo(f"  params over the valid draws: {p_lo / 1e6:.2f} M .. {p_hi / 1e6:.2f} M")


@space.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=1, max=100000), default=5, show_default=True,
              help="Specs to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write to.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
def sample(config: Path, count: int, out: Path, seed: int) -> None:
    """Write COUNT distinct valid concrete specs drawn from the space to OUT (sample_000.yaml,
    ...). Existing files are never overwritten."""
    import archspec
    from archspec.search.space import open_space, sample_space

    found, _ = open_space(config)
    specs, refused = sample_space(found, count, seed)
    targets = [out / f"sample_{i:03d}.yaml" for i in range(len(specs))]
    taken = [str(t) for t in targets if t.exists()]
    if taken:
        raise ValueError(f"{taken[0]} exists; choose another --out (files are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    for i, (spec, target) in enumerate(zip(specs, targets)):
        named = spec.model_copy(update={"name": f"{spec.name}_sample_{i:03d}",
                                        "description": f"drawn from {config.name} (seed {seed}), "
                                                       f"fingerprint {archspec.fingerprint(spec)}"})
        _write_new(target, archspec.dumps(named))
        click.echo(f"wrote {target}")
    if refused:
        click.echo(f"{sum(refused.values())} draws refused (e.g. {next(iter(refused))})", err=True)
    if len(specs) < count:
        raise ValueError(f"only {len(specs)} distinct valid specs found in {count * 50} draws")


def _write_new(path: Path, text: str) -> None:
    """Write atomically, and never over an existing file (one created meanwhile included)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.link(tmp, path)  # fails if the target exists
    finally:
        os.unlink(tmp)

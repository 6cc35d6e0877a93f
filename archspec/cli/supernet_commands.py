"""`archspec supernet summary | train | extract`: one-shot supernets of DetNAS and CR-NAS
search configs (search/supernet.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

DEVICE_CHOICES = click.Choice(["cpu", "cuda"])


@click.group()
def supernet() -> None:
    """Weight-sharing supernets: train one, then search with `evaluator: {type: supernet}`."""


@supernet.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def summary(config_file: Path, as_json: bool) -> None:
    """The supernet's parameters and the cost range of its paths."""
    from archspec.search.supernet import summarize_supernet
    from archspec.search_config import load_search_config

    config, base = load_search_config(config_file)
    info = summarize_supernet(config, base)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    low_p, high_p = info["path_backbone_params"]
    low_f, high_f = info["path_backbone_flops"]
    size = info["input_size"]
    click.echo(f"{config.name}: {config.space.type} supernet {info['supernet']}\n"
               f"  parameters: {info['params']:,} ({info['backbone_params']:,} in {info['slots']} backbone slots, "
               f"{info['neck_head_params']:,} in neck and head)\n"
               f"  paths: {info['paths']:,}\n"
               f"  a path's backbone: {low_p:,.0f} .. {high_p:,.0f} params, "
               f"{low_f / 1e6:,.1f} .. {high_f / 1e6:,.1f} MFLOPs at {size[0]}x{size[1]}")


@supernet.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="COCO-format folder (annotations/instances_{train,val}.json and the image folders).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--epochs", type=click.IntRange(1, 10000), default=12, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Peak AdamW learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds initialisation and path sampling.")
@click.option("--device", type=DEVICE_CHOICES, default="cpu", show_default=True,
              help="cuda trains with mixed precision.")
@click.option("--max-steps-per-epoch", type=click.IntRange(1), help="Cut epochs short (smoke runs).")
@click.option("--checkpoint-every", type=click.IntRange(1), help="Also write last.pt every N iterations.")
@click.option("--init", "init", type=click.Path(dir_okay=False, path_type=Path),
              help="Pre-trained backbone weights (a detector checkpoint or state dict) for every slot they fit.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
def train(config_file: Path, data_dir: Path, out: Path, epochs: int, batch_size: int, lr: float, seed: int,
          device: str, max_steps_per_epoch: int | None, checkpoint_every: int | None, init: Path | None,
          resume: bool) -> None:
    """Train the config's supernet as a detector, one uniformly sampled path per iteration (SPOS).
    Kill it at any time and rerun with --resume to continue exactly."""
    from archspec.detection.train import TrainOptions
    from archspec.search.supernet_train import train_supernet
    from archspec.search_config import load_search_config

    config, base = load_search_config(config_file)
    options = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed, device=device,
                           max_steps_per_epoch=max_steps_per_epoch)
    result = train_supernet(config, base, data_dir, out, options, resume=resume, init=init,
                            checkpoint_every=checkpoint_every)
    last = result.history[-1] if result.history else {}
    click.echo(f"trained the {config.name} supernet to epoch {len(result.history)} in {result.seconds:.0f} s "
               f"({result.images_per_second:.1f} images/s); last loss {last.get('loss', float('nan')):.4f} -> {out}")


@supernet.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.argument("genotype")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for spec.yaml and weights.pt (existing files are never overwritten).")
@click.option("--name", default=None, help="Name of the extracted detector.")
def extract(run: Path, genotype: str, out: Path, name: str | None) -> None:
    """Write a path of a trained supernet as a stand-alone detector. GENOTYPE is a list of
    integers ("0,2,1,...") or a spec file of the space (a search's best.yaml)."""
    from archspec.search.supernet_train import extract as extract_path

    spec_path, weights_path = extract_path(run, genotype, out, name=name)
    click.echo(f"wrote {spec_path} and {weights_path}; fine-tune with `archspec train {spec_path} --init "
               f"{weights_path} ...`, export with `archspec export {spec_path} --weights {weights_path} ...`")

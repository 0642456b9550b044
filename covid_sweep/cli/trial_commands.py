"""check-data, train, prefetch-weights."""

from __future__ import annotations

import time
from pathlib import Path

import click

from covid_sweep.cli.options import home_option, make_config, resolve_data, trial_options
from covid_sweep.core import paths
from covid_sweep.core.errors import UserError


@click.command("check-data")
@click.argument("data")
def check_data(data: str) -> None:
    """Validate DATA (competition layout); print counts, the groups splits keep together, and leakage."""
    from covid_sweep.data.layout import CLASS_NAMES, check_readable, check_two_classes, load_split
    from covid_sweep.data.leakage import leakage_report, report_lines

    data_dir = resolve_data(data)
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    for split in (train, test):
        check_readable(split)
    check_two_classes(train)
    counts = train.class_counts()
    click.echo(f"{data_dir}: layout OK, every image readable")
    click.echo(f"train: {len(train.ids)} images ({', '.join(f'{CLASS_NAMES[c]} {n}' for c, n in counts.items())})")
    click.echo(f"test:  {len(test.ids)} images (labels not in sample_submission.csv)")
    for line in report_lines(leakage_report(data_dir, train, test)):
        click.echo(line)


@click.command()
@click.option("--data", default=None, metavar="DATA",
              help="Data folder in the competition layout, or a data set name (ucsd-covid-ct); "
                   "default: data_dir of --config.")
@home_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifact folder to write (must not exist); default HOME/artifacts/train/<backbone>-<time>.")
@click.option("--wandb-mode", type=click.Choice(["online", "offline", "disabled"]), default=None,
              help="Default: online with an API key, else offline.")
@click.option("--project", default=None, help="W&B project (default $WANDB_PROJECT or covid-sweep).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@trial_options
def train(data, home, out, wandb_mode, project, quiet, config_file, trial_values) -> None:
    """Run one training trial from TrialConfig flags and print where its model artifact is."""
    from covid_sweep.tracking.tracker import Tracker
    from covid_sweep.training.trial import run_trial

    config = make_config(config_file, trial_values, resolve_data(data) if data else None)
    if config.data_dir is None:
        raise UserError("--data is required (or a data_dir in --config)")
    root = paths.home(home)
    name = f"{config.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out or paths.trial_artifact_dir(root, "train", name)
    tracker = Tracker.start(mode=wandb_mode, directory=root, config=config.model_dump(mode="json"),
                            project=project, name=name)
    try:
        result = run_trial(config, out, tracker, progress=not quiet, trial_name=name)
    except BaseException:
        tracker.finish(1)
        raise
    tracker.finish(0)
    best = ", ".join(f"{k}={v:.4f}" for k, v in result.best.items() if k.startswith("val_"))
    click.echo(f"{result.state} after {result.epochs_run} epochs; best epoch {result.best_epoch}: {best}")
    click.echo(f"validation split: {result.split}")
    click.echo(f"decision threshold (chosen on validation): {result.threshold:.4f}")
    click.echo(f"artifact: {result.artifact}")


@click.command("prefetch-weights")
@click.option("--backbone", "backbones", multiple=True, help="Backbone name, repeatable, or 'all'. Default all.")
def prefetch_weights(backbones) -> None:
    """Download torchvision ImageNet weights into TORCH_HOME (for images and offline boxes)."""
    from covid_sweep.model.networks import BACKBONES, prefetch_weights as fetch

    names = [n.strip() for b in backbones for n in b.split(",") if n.strip()] or ["all"]
    names = list(BACKBONES) if "all" in names else names
    for name in fetch(names):
        click.echo(f"cached ImageNet weights for {name}")

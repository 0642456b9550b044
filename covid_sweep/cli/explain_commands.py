"""explain: Grad-CAM overlays."""

from __future__ import annotations

from pathlib import Path

import click

from covid_sweep.cli.options import resolve_data


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model artifact folder (a trial's, or export-best's DIR/model).")
@click.option("--data", required=True, metavar="DATA", help="Data folder or data set name.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the PNGs.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labels of the test images (default DATA/test_labels.csv).")
@click.option("-n", "count", type=click.IntRange(min=1), default=4, show_default=True,
              help="How many right and how many wrong predictions.")
def explain(model_dir, data, out, labels, count) -> None:
    """Grad-CAM overlays of the most confident right and wrong test predictions."""
    from covid_sweep.core.errors import UserError
    from covid_sweep.data.layout import labels_for, load_split
    from covid_sweep.inference.explain import explain as run
    from covid_sweep.model.artifact import load_artifact

    data_dir = resolve_data(data)
    labels = labels or data_dir / "test_labels.csv"
    if not labels.is_file():
        raise UserError(f"{labels}: no labels for the test images; pass --labels FILE (file_name,COVID)")
    split = load_split(data_dir, "test")
    written = run(load_artifact(model_dir), split, labels_for(split, labels), out, count)
    for item in written:
        click.echo(f"{'right' if item.correct else 'WRONG'}  p={item.prob:.3f}  label={item.label}  {item.path}")

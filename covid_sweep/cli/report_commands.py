"""report: one self-contained HTML file about a sweep (embedded store or W&B)."""

from __future__ import annotations

from pathlib import Path

import click

from covid_sweep.cli.options import home_option, store_option


@click.command()
@click.argument("sweep_id", required=False)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML file to write (self-contained: opens offline); refused when it exists, unless --force.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The folder `export-best` wrote: adds the test score, confusion matrix, ROC curve and Grad-CAM overlays.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Data folder holding test_labels.csv (default the promoted model's recorded data folder).")
@home_option
@store_option
def report(sweep_id, out, export_dir, data_dir, home, store, force) -> None:
    """Write an HTML report of SWEEP_ID (default the latest sweep; entity/project/id for a W&B sweep): trial table,
    parallel coordinates, metric curves, parameter importance, timing and the promoted model."""
    from covid_sweep.core.files import ExistsError, write_text_atomically

    if (out.exists() or out.is_symlink()) and not force:  # before any work; the write refuses one made meanwhile too
        raise ExistsError(f"{out}: already exists; pass --force to overwrite it")
    # plotly and sklearn load here, not when the CLI starts
    from covid_sweep.sweep.views.report_data import from_store, from_wandb
    from covid_sweep.sweep.views.report_html import render
    from covid_sweep.sweep.views.report_model import promoted_model
    from covid_sweep.tracking import wandb_api

    if sweep_id and wandb_api.is_wandb_path(sweep_id):
        record = from_wandb(wandb_api.connect(), sweep_id)
    else:
        from covid_sweep.sweep.store import open_store

        opened = open_store(store, home, create=False)
        try:
            record = from_store(opened, sweep_id or opened.latest_sweep().id)
        finally:
            opened.close()
    written = write_text_atomically(out, render(record, promoted_model(record, export_dir, data_dir)), force=force)
    click.echo(f"{written}: report of sweep {record.id} ({len(record.trials)} trials)")

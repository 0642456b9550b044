"""report: one self-contained HTML file about a sweep (embedded store or W&B)."""

from __future__ import annotations

from pathlib import Path

import click

from covid_sweep.cli.options import home_option, store_option


@click.command()
@click.argument("sweep_id", required=False)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML file to write (self-contained: opens offline).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The folder `export-best` wrote: adds the test score, confusion matrix, ROC curve and Grad-CAM overlays.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Data folder holding test_labels.csv (default the promoted model's recorded data folder).")
@home_option
@store_option
def report(sweep_id, out, export_dir, data_dir, home, store) -> None:
    """Write an HTML report of SWEEP_ID (default the latest sweep; entity/project/id for a W&B sweep): trial table,
    parallel coordinates, metric curves, parameter importance, timing and the promoted model."""
    # plotly and sklearn load here, not when the CLI starts
    from covid_sweep.sweep.views.report_data import from_store, from_wandb
    from covid_sweep.sweep.views.report_html import write_report
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
    written = write_report(record, promoted_model(record, export_dir, data_dir), out)
    click.echo(f"{written}: report of sweep {record.id} ({len(record.trials)} trials)")

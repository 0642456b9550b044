"""fetch-data: parsing only; covid_sweep.data.fetch does the work."""

from __future__ import annotations

from pathlib import Path

import click

from covid_sweep.data.fetch import BASE_URL_ENV, DATASETS, DEFAULT_BASE_URL, FetchError, fetch, summary


@click.command("fetch-data")
@click.argument("name", type=click.Choice(sorted(DATASETS)))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-url", metavar="URL", default=None,
              help=f"Where the repository's raw files are (default ${BASE_URL_ENV}, else {DEFAULT_BASE_URL}).")
@click.option("--from-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Read a local copy laid out like the repository (Images-processed/*.zip, Data-split/) "
                   "instead of downloading.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the shuffle that numbers the files (same seed, same files).")
@click.option("--force", is_flag=True, help="Replace DEST if it exists and is not empty.")
def fetch_data(name: str, dest: Path, base_url: str | None, from_dir: Path | None, seed: int, force: bool) -> None:
    """Fetch public data set NAME and write it to DEST in the competition layout.

    DEST gets train/ + train.csv (official train + val), test/ + sample_submission.csv + test_labels.csv
    (official test), manifest.csv and SOURCE.md (origin, citation, licence).
    """
    try:
        written = fetch(name, dest, base_url=base_url, from_dir=from_dir, seed=seed, force=force)
    except FetchError as err:
        raise click.ClickException(str(err)) from None
    click.echo(summary(written))

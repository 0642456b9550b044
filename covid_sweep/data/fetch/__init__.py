"""Public data sets, fetched once and written in the competition layout (see source.py for what the UCSD set is).

source: the data set and its files; download: mirroring them into the cache; repository: reading split lists,
zips and meta files; convert: images to PNG; write: the layout, staged and swapped in; lock: one fetch at a time.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

from covid_sweep.core.paths import cache_root
from covid_sweep.data.fetch.download import download_repo
from covid_sweep.data.fetch.lock import locked
from covid_sweep.data.fetch.repository import checked_from_dir, collect_items, with_patient_ids
from covid_sweep.data.fetch.source import BASE_URL_ENV, DATASETS, DEFAULT_BASE_URL, REPO_URL, SOURCE_FILES, UCSD, FetchError
from covid_sweep.data.fetch.write import MARKER, refuse_non_empty, write_dataset

__all__ = ["BASE_URL_ENV", "DATASETS", "DEFAULT_BASE_URL", "MARKER", "SOURCE_FILES", "UCSD", "FetchError", "cache_root",
           "fetch", "resolve_data", "summary"]


def resolve_data(value: str | os.PathLike) -> Path:
    """An existing folder as is; a known data set name fetched once into the cache; anything else an error."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    name = str(value)
    if name not in DATASETS:
        raise FetchError(f"{value}: no such data folder, and not a known data set name "
                         f"(known: {', '.join(DATASETS)})")
    target = cache_root() / "datasets" / name
    with locked(target.parent / f".{name}.lock"):
        # a cache fetched before groups.csv existed would silently split patients: fetch it again
        if not (target / MARKER).is_file() or not (target / "groups.csv").is_file():
            # force: a folder without the marker is debris of something else, never a finished fetch
            fetch(name, target, force=True)
    return target


def fetch(name: str, dest: str | os.PathLike, *, base_url: str | None = None,
          from_dir: str | os.PathLike | None = None, seed: int = 0, force: bool = False) -> Path:
    """Download (or read from from_dir) data set `name` and write it to dest in the competition layout."""
    if name not in DATASETS:
        raise FetchError(f"{name}: unknown data set (known: {', '.join(DATASETS)})")
    if base_url and from_dir:
        raise FetchError("--base-url and --from-dir exclude each other: --from-dir downloads nothing")
    dest = Path(dest).expanduser().absolute()
    refuse_non_empty(dest, force)  # before a long download, not after it
    if from_dir is not None:
        source = checked_from_dir(Path(from_dir).expanduser().absolute())
        origin = f"local copy at {source} of {REPO_URL}"
    else:
        base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        source = download_repo(base_url, cache_root() / "downloads" / name)
        origin = base_url
    items = with_patient_ids(collect_items(source), source)
    write_dataset(items, dest, seed=seed, origin=origin, force=force)
    return dest


def summary(dest: Path) -> str:
    """One line per output split with class counts, from the manifest fetch wrote."""
    with (dest / "manifest.csv").open(newline="") as fh:
        counts = Counter((row["split"], int(row["COVID"])) for row in csv.DictReader(fh))
    lines = [f"wrote {dest}"]
    for split in ("train", "test"):
        pos, neg = counts[(split, 1)], counts[(split, 0)]
        lines.append(f"  {split}: {pos + neg} images ({pos} COVID, {neg} non-COVID)")
    return "\n".join(lines)

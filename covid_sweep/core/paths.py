"""Where covid-sweep keeps its state: the embedded store, trial artifacts, W&B offline runs."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "COVID_SWEEP_HOME"
CACHE_ENV = "COVID_SWEEP_CACHE"


def home(explicit: str | Path | None = None) -> Path:
    """--home, else $COVID_SWEEP_HOME, else ./.covid_sweep (beside the sweep you run, like ./wandb)."""
    return Path(explicit or os.environ.get(HOME_ENV) or ".covid_sweep").absolute()


def store_path(root: Path) -> Path:
    return root / "sweeps.db"


def trial_artifact_dir(root: Path, sweep_id: str, trial_name: str, artifacts: Path | None = None) -> Path:
    """ARTIFACTS/SWEEP/TRIAL: the --artifacts folder (shared by the boxes of a sweep), else HOME/artifacts."""
    return Path(artifacts or root / "artifacts") / sweep_id / trial_name


def cache_root() -> Path:
    """$COVID_SWEEP_CACHE (an empty value counts as unset; ~ expanded), else ~/.cache/covid-sweep.

    Decoded images and fetched data sets both live under it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "covid-sweep").expanduser()

"""Which train data each trial was trained on, for a sweep whose train/ may change while it runs.

A trial records the content fingerprint of train/ in its artifact's metadata.json. Trials trained on
different images are not comparable (their validation scores measure different data), and a model
trained on images that have since been replaced is not a model of the data the user has now. So the
controller says so, once per new version, as soon as a trial trained on another version finishes, and
export-best promotes only among trials trained on the train/ it is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from covid_sweep.data.layout import fingerprint, load_split

T = TypeVar("T")


def recorded_fingerprint(artifact: str | Path | None) -> str | None:
    """The train-data fingerprint an artifact records; None where it records none or cannot be read here."""
    if artifact is None:
        return None
    try:
        value = json.loads((Path(artifact) / "metadata.json").read_text()).get("data_fingerprint")
    except (OSError, ValueError, AttributeError):  # unreachable from this box, or not a JSON object
        return None
    return value if isinstance(value, str) else None


def current_fingerprint(data_dir: str | Path) -> str | None:
    """The fingerprint of DATA/train as it is now (remembered per file names, sizes and mtimes); None where
    DATA holds no train.csv (a prediction needs only test/: there is nothing to compare with then)."""
    if not (Path(data_dir) / "train.csv").is_file():
        return None
    return fingerprint(load_split(Path(data_dir), "train"))


def split_by_data(items: Iterable[T], fingerprint_of: Callable[[T], str | None],
                  current: str | None) -> tuple[list[T], list[T]]:
    """(items trained on `current` or on data they do not record, items known to be trained on other data)."""
    same, other = [], []
    for item in items:
        recorded = fingerprint_of(item)
        (other if None not in (recorded, current) and recorded != current else same).append(item)
    return same, other


def left_out_note(names: list[str], data_dir: str | Path) -> str:
    """The sentence export-best adds when trials were trained on other train data than DATA's."""
    return (f"{len(names)} finished trial(s) trained on other train images than {Path(data_dir) / 'train'} now holds "
            f"were left out (train/ changed during or after the sweep): {', '.join(names)}")


class DataVersions:
    """The train-data versions a sweep's trials were trained on, each with the first trial that used it."""

    def __init__(self) -> None:
        self.first_trial: dict[str, str] = {}  # fingerprint -> first trial trained on it, in the order seen

    def add(self, trial: str, recorded: str | None) -> str | None:
        """Record one finished trial's fingerprint; a warning line when it is a version not seen before in
        this sweep (the first version is the reference and says nothing)."""
        if recorded is None or recorded in self.first_trial:
            return None
        self.first_trial[recorded] = trial
        if len(self.first_trial) == 1:
            return None
        reference, first = next(iter(self.first_trial.items()))
        return (f"warning: trial {trial} was trained on other train images than trial {first} (data fingerprint "
                f"{recorded[:12]}, not {reference[:12]}): train/ changed during the sweep. Their scores are not "
                f"comparable; export-best promotes only trials trained on the train/ it is given")

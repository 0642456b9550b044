"""An artifact's files as files: the manifest that vouches for them, and what a trial recorded (metrics,
metadata, validation predictions), read without torch: status, the live view and the selection replay read
many artifacts and load no model.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from covid_sweep.core.errors import UserError
from covid_sweep.model.val_predictions import VAL_PREDICTIONS, ValPredictions, load

WEIGHTS = "model.safetensors"
FILES = (WEIGHTS, "config.json", "metrics.json", "metadata.json")
OPTIONAL_FILES = (VAL_PREDICTIONS,)  # listed in the manifest when the artifact has them
MANIFEST = "manifest.json"  # sha256 of each of FILES (and OPTIONAL_FILES present), written last
# The first covid-sweep version that writes a manifest with every artifact (metadata.json records the version that
# wrote it, as `covid_sweep_version`). An artifact of this version or a later one without a manifest lost it, and
# nothing vouches for its files any more: it is refused. Only one that records no version, or an earlier one, loads
# without. (Development builds before manifests also called themselves 0.1.0: retrain or re-export those.)
MANIFEST_SINCE = (0, 1, 0)


class ArtifactError(UserError, ValueError):
    """A model artifact directory is missing or incomplete."""


def dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Written last: the sha256 of every file, so a load can tell a whole artifact from an edited one."""
    names = FILES + tuple(name for name in OPTIONAL_FILES if (folder / name).is_file())
    dump_json(folder / MANIFEST, {"sha256": {name: sha256_of(folder / name) for name in names}})


def written_with_manifest(metadata: dict) -> bool:
    """Whether the covid-sweep that wrote this artifact (metadata.json's covid_sweep_version) gave it a manifest.
    A version that does not read as numbers counts as one that did: only a known older version excuses a
    missing manifest."""
    version = metadata.get("covid_sweep_version")
    if version is None:
        return False
    numbers = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if numbers is None:
        return True
    return tuple(int(n or 0) for n in numbers.groups()) >= MANIFEST_SINCE


def check_manifest_not_due(path: Path, metadata: dict) -> None:
    """For an artifact without manifest.json: it loads only if the covid-sweep that wrote it wrote none."""
    if not written_with_manifest(metadata):
        return
    raise ArtifactError(f"{path / MANIFEST}: missing, but covid-sweep {metadata['covid_sweep_version']} (which wrote "
                        f"this artifact, says {path / 'metadata.json'}) writes one with every artifact: its files "
                        "cannot be vouched for; retrain, or re-export from an intact copy")


def listed_files(path: Path) -> tuple[str, ...]:
    """The files the manifest vouches for: FILES and the optional ones the artifact was written with."""
    listed = read_json(path / MANIFEST).get("sha256")
    if not isinstance(listed, dict) or not set(FILES) <= set(listed) or not set(listed) <= {*FILES, *OPTIONAL_FILES}:
        raise ArtifactError(f"{path / MANIFEST}: not a manifest of {', '.join(FILES)} (and optionally "
                            f"{', '.join(OPTIONAL_FILES)})")
    return tuple(listed)


def verify_manifest(path: Path) -> None:
    """Every file as it was written, else a one-line error naming the first that differs."""
    listed = read_json(path / MANIFEST)["sha256"]
    names = listed_files(path)
    unlisted = [name for name in OPTIONAL_FILES if name not in listed and (path / name).exists()]
    if unlisted:
        raise ArtifactError(f"{path / unlisted[0]}: not in {MANIFEST}; it was added after the artifact was written")
    for name in names:
        if not (path / name).is_file():
            raise ArtifactError(f"{path / name}: missing, but listed in {MANIFEST}")
        if sha256_of(path / name) != listed[name]:
            raise ArtifactError(f"{path / name}: changed since the artifact was written (sha256 differs from "
                                f"{MANIFEST}); re-export or retrain rather than edit an artifact")


@dataclass(frozen=True)
class ArtifactRecord:
    """What an artifact recorded about its training, read without loading (or hashing) its weights."""

    path: Path
    metrics: dict
    metadata: dict
    val_predictions: ValPredictions | None  # None: written before trials kept them

    @property
    def best_epoch(self) -> int | None:
        return self.metrics.get("best_epoch")


def read_record(path: Path) -> ArtifactRecord:
    """metrics.json, metadata.json and val_predictions.npz of an artifact, each checked against its manifest
    (where it has one): the weights, the big file, are neither read nor hashed."""
    path = Path(path)
    listed = read_json(path / MANIFEST).get("sha256", {}) if (path / MANIFEST).is_file() else {}
    for name in ("metrics.json", "metadata.json", VAL_PREDICTIONS):
        if name in listed and (not (path / name).is_file() or sha256_of(path / name) != listed[name]):
            raise ArtifactError(f"{path / name}: changed or missing since the artifact was written (sha256 differs "
                                f"from {MANIFEST})")
    predictions = path / VAL_PREDICTIONS
    return ArtifactRecord(path=path, metrics=read_json(path / "metrics.json"),
                          metadata=read_json(path / "metadata.json"),
                          val_predictions=load(predictions) if VAL_PREDICTIONS in listed else None)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return value


def update_metadata(folder: Path, extra: dict) -> None:
    """Add keys to an artifact's metadata.json and re-vouch for it in the manifest (an export records what was
    learned about its model after training, e.g. the selection-corrected estimate)."""
    metadata = read_json(folder / "metadata.json")
    dump_json(folder / "metadata.json", {**metadata, **extra})
    if not (folder / MANIFEST).is_file():  # an artifact from before manifests: nothing vouches for it
        return
    manifest = read_json(folder / MANIFEST)
    manifest["sha256"]["metadata.json"] = sha256_of(folder / "metadata.json")
    dump_json(folder / MANIFEST, manifest)

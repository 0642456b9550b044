"""Reading what an artifact's validation numbers were measured on, without the splitting code (and
its sklearn import): `status` shows it for every trial."""

from __future__ import annotations

PRE_GROUPED = "ungrouped (recorded before grouped splits)"


def recorded_split_kind(metadata: dict) -> str:
    """The split kind an artifact's metadata.json records; artifacts from before grouped splits record none."""
    return metadata.get("validation", {}).get("split", PRE_GROUPED)

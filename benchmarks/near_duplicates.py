"""How well near-duplicate clusters stand in for patient ids: the measurement behind groups.NEAR_DUPLICATE_R.

For each threshold on the Pearson r of 32x32 gray thumbnails, over every pair of train images of a data
set that has groups.csv (patient ids): how many pairs pass, the share of them that are one patient
(precision), the share of same-patient pairs they find (recall), and the clusters that connected
components make of them (count, largest). Run: python benchmarks/near_duplicates.py [--data DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from covid_sweep.data.groups import GROUPS_CSV, components, read_groups_csv, split_thumbnails
from covid_sweep.data.layout import fingerprint, load_split

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"
THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def measure(data: Path, thresholds=THRESHOLDS) -> list[dict]:
    train = load_split(data, "train")
    patients = np.asarray(read_groups_csv(data / GROUPS_CSV, train))
    thumbs = split_thumbnails(train, fingerprint(train))
    r = thumbs @ thumbs.T
    upper = np.triu_indices(len(patients), k=1)
    same = patients[upper[0]] == patients[upper[1]]
    rows = []
    for threshold in thresholds:
        passed = r[upper] > threshold
        pairs = np.stack([upper[0][passed], upper[1][passed]], axis=1)
        sizes = np.bincount(components(len(patients), pairs))
        rows.append({"threshold": threshold, "pairs": int(passed.sum()),
                     "precision": float(same[passed].mean()) if passed.any() else float("nan"),
                     "recall": float(same[passed].sum() / same.sum()), "clusters": int((sizes > 1).sum()),
                     "largest": int(sizes.max())})
    rows.append({"threshold": "patient ids", "pairs": int(same.sum()), "precision": 1.0, "recall": 1.0,
                 "clusters": int((np.unique(patients, return_counts=True)[1] > 1).sum()),
                 "largest": int(np.unique(patients, return_counts=True)[1].max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    print(f"{args.data}: pairs of train images, 32x32 thumbnail r above a threshold vs same patient (groups.csv)")
    print(f"{'r >':>12} {'pairs':>6} {'precision':>9} {'recall':>7} {'clusters':>8} {'largest':>7}")
    for row in measure(args.data):
        print(f"{row['threshold']!s:>12} {row['pairs']:>6} {row['precision']:>9.3f} {row['recall']:>7.3f} "
              f"{row['clusters']:>8} {row['largest']:>7}")


if __name__ == "__main__":
    main()

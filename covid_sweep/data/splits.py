"""A trial's (train, val) index pairs: stratified by class, and grouped, so that no group (one patient,
one cluster of near-identical slices) ever has images on both sides.

Fold i is ensemble member i; the artifact also records the validation file names of every fold, so a
saved model's validation images can be rebuilt, and its split re-checked, by anyone.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from covid_sweep.data.groups import Groups
from covid_sweep.data.layout import DataError

Pairs = list[tuple[np.ndarray, np.ndarray]]


def stratified_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ungrouped holdout (train, val), stratified by class, the same for the same labels, fraction and seed."""
    index = np.arange(len(labels))
    if min(list(labels).count(0), list(labels).count(1)) < 2:
        raise DataError("train.csv: each class needs at least 2 images for a stratified validation split")
    try:
        train_idx, val_idx = train_test_split(index, test_size=val_fraction, stratify=list(labels), random_state=seed)
    except ValueError as err:
        raise DataError(f"train.csv: cannot split {len(labels)} images with val_fraction={val_fraction}: {err}") from None
    return np.sort(train_idx), np.sort(val_idx)


def stratified_folds(labels, folds: int, seed: int) -> Pairs:
    """Ungrouped K folds; every image is in exactly one val fold; same seed, same folds."""
    counts = [list(labels).count(c) for c in (0, 1)]
    if min(counts) < folds:
        raise DataError(f"train.csv: {folds}-fold cross-validation needs at least {folds} images of each class (has {counts})")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), list(labels)))


def grouped_folds(labels, groups, folds: int, seed: int) -> Pairs:
    """K folds with every group inside one val fold, class balance kept close to the data's."""
    labels = np.asarray(labels)
    for c in (0, 1):
        n = len(set(np.asarray(groups)[labels == c]))
        if n < folds:
            raise DataError(f"train.csv: {folds} grouped folds need at least {folds} groups holding class {c} (has {n})")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    pairs = [(np.sort(t), np.sort(v)) for t, v in splitter.split(np.zeros(len(labels)), labels, groups)]
    for i, (_, val) in enumerate(pairs):
        if len(set(labels[val].tolist())) < 2:
            raise DataError(f"train.csv: grouped fold {i} of {folds} holds one class only; use fewer folds "
                            f"or a larger val_fraction")
    return pairs


def holdout_folds(val_fraction: float) -> int:
    """A grouped holdout is fold 0 of round(1 / val_fraction) grouped folds: val is about val_fraction."""
    return max(2, round(1 / val_fraction))


def trial_splits(labels, groups: Groups, folds: int, val_fraction: float, seed: int) -> Pairs:
    """K folds, or one holdout when folds is 1; grouped unless the groups are 'none'."""
    if groups.source == "none":
        return stratified_folds(labels, folds, seed) if folds > 1 else [stratified_split(labels, val_fraction, seed)]
    if folds > 1:
        return grouped_folds(labels, groups.labels, folds, seed)
    return grouped_folds(labels, groups.labels, holdout_folds(val_fraction), seed)[:1]


def split_kind(source: str, folds: int) -> str:
    """What a validation number was measured on, in a few words (status, model card, W&B summary)."""
    shape = f"{folds}-fold CV" if folds > 1 else "holdout"
    if source == "none":
        return f"ungrouped {shape}"
    return f"grouped {shape} ({'patients + near-duplicates' if source == 'groups.csv' else 'near-duplicates only'})"


def shared_groups(pairs: Pairs, groups) -> set[str]:
    """Groups with images on both sides of any pair: empty for an honest split."""
    groups = np.asarray(groups)
    return {g for train, val in pairs for g in set(groups[train].tolist()) & set(groups[val].tolist())}

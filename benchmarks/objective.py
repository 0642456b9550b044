"""Which sweep objective picks better recipes: a grouped holdout or grouped K-fold cross-validation?

Measured on train/ alone (the test labels are never read): its patients are split once into an inner
part (where each recipe is scored by both objectives, as a sweep would) and an outer part of unseen
patients (grouped, ~1/4), which stands in for the test set. For each recipe:

- holdout: one trial with folds=1 (grouped holdout, val_fraction 0.2) -> best val AUC;
- K-fold: one trial with folds=K (grouped) -> mean-over-folds val AUC (the sweep metric);
- outer AUC: the mean over those 1 + K models of their AUC on the outer patients, i.e. how good the
  recipe is on people it never saw, independent of the objective being judged.

Printed: each recipe's three numbers, the Spearman rank correlation of each objective with the outer
AUC, the outer AUC of the recipe each objective picks, and each objective's mean |val - outer| gap.
All trials are real `run_trial` calls (W&B disabled). Run (CPU, ~30-40 min at the defaults):

    python benchmarks/objective.py [--data DIR] [--recipes 8] [--folds 3] [--epochs 20] [--size 128] [--json F]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"


def sample_recipes(n: int, seed: int) -> list[dict]:
    """Random recipes from the space of sweeps/cpu-accuracy.yaml (resnet18 only, to fit a CPU)."""
    rng = random.Random(seed)
    recipes = []
    for _ in range(n):
        recipes.append({"backbone": "resnet18", "lr": 10 ** rng.uniform(np.log10(3e-4), np.log10(3e-3)),
                        "weight_decay": 10 ** rng.uniform(-4, np.log10(5e-2)), "hflip": True, "rotate": True,
                        "brightness_contrast": True, "warmup_epochs": 2,
                        "random_resized_crop": rng.random() < 0.5, "label_smoothing": rng.choice([0.0, 0.1]),
                        "mixup": rng.choice([0.0, 0.5])})
    return recipes


def write_inner_outer(data: Path, root: Path, seed: int) -> tuple[Path, np.ndarray]:
    """root/inner: a data set of the inner patients whose test/ holds the outer ones; returns outer labels."""
    from covid_sweep.data.groups import GROUPS_CSV, read_groups_csv
    from covid_sweep.data.layout import load_split
    from covid_sweep.data.splits import grouped_folds

    train = load_split(data, "train")
    groups = read_groups_csv(data / GROUPS_CSV, train)
    inner, outer = grouped_folds(train.labels, groups, 4, seed)[0]
    out = root / "inner"
    (out / "train").mkdir(parents=True)
    (out / "test").mkdir()

    def rows(index):
        return [(train.ids[i], train.labels[i], groups[i]) for i in index]

    for folder, index in (("train", inner), ("test", outer)):
        for name, _, _ in rows(index):
            shutil.copyfile(train.folder / name, out / folder / name)  # a symlink would "escape" its folder
    for name, header, index, cols in (("train.csv", ["file_name", "COVID"], inner, (0, 1)),
                                      (GROUPS_CSV, ["file_name", "group"], inner, (0, 2)),
                                      ("sample_submission.csv", ["file_name", "COVID"], outer, (0, None))):
        with (out / name).open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows((r[cols[0]], 0 if cols[1] is None else r[cols[1]]) for r in rows(index))
    return out, np.asarray([train.labels[i] for i in outer])


def outer_aucs(artifact_dir: Path, data: Path, outer_labels: np.ndarray) -> list[float]:
    """AUC on the outer patients of each single model in the artifact (the members of an ensemble)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from covid_sweep.data.layout import decode_resized, load_split
    from covid_sweep.inference.predict import predict_images
    from covid_sweep.model.artifact import load_artifact
    from covid_sweep.model.networks import Ensemble

    artifact = load_artifact(artifact_dir, device=torch.device("cpu"))
    images = decode_resized(load_split(data, "test"), artifact.config.input_size)
    models = list(artifact.model.members) if isinstance(artifact.model, Ensemble) else [artifact.model]
    return [float(roc_auc_score(outer_labels, predict_images(m, images, 64, torch.device("cpu")))) for m in models]


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--recipes", type=int, default=8)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")

    from covid_sweep.core.config import build_config
    from covid_sweep.training.trial import run_trial

    work = Path(tempfile.mkdtemp(prefix="objective-"))
    inner, outer_labels = write_inner_outer(args.data, work, args.seed + 100)
    print(f"inner patients: {sum(1 for _ in open(inner / 'train.csv')) - 1} images; outer (unseen patients): "
          f"{len(outer_labels)} images; {args.recipes} recipes, {args.size} px, {args.epochs} epochs", flush=True)
    print(f"{'recipe':<6} {'holdout val':>11} {f'{args.folds}-fold CV':>10} {'outer AUC':>9}  params", flush=True)
    rows = []
    for i, recipe in enumerate(sample_recipes(args.recipes, args.seed)):
        base = {**recipe, "input_size": args.size, "epochs": args.epochs, "patience": args.epochs,
                "batch_size": 32, "data_dir": str(inner), "seed": args.seed}
        started = time.perf_counter()
        holdout = run_trial(build_config({**base, "folds": 1}), work / f"r{i}-holdout", progress=False)
        kfold = run_trial(build_config({**base, "folds": args.folds}), work / f"r{i}-kfold", progress=False)
        outer = outer_aucs(holdout.artifact, inner, outer_labels) + outer_aucs(kfold.artifact, inner, outer_labels)
        row = {"recipe": recipe, "holdout_val_auc": holdout.best["val_auc"], "kfold_val_auc": kfold.best["val_auc"],
               "outer_auc": float(np.mean(outer)), "outer_aucs": outer, "seconds": time.perf_counter() - started}
        rows.append(row)
        short = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in recipe.items()
                 if k in ("lr", "weight_decay", "random_resized_crop", "label_smoothing", "mixup")}
        print(f"{i:<6} {row['holdout_val_auc']:>11.3f} {row['kfold_val_auc']:>10.3f} {row['outer_auc']:>9.3f}  {short}",
              flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    outer = [r["outer_auc"] for r in rows]
    print(f"best possible pick: outer AUC {max(outer):.3f}; mean over recipes {np.mean(outer):.3f}")
    for key, name in (("holdout_val_auc", "grouped holdout"), ("kfold_val_auc", f"grouped {args.folds}-fold CV")):
        values = [r[key] for r in rows]
        pick = int(np.argmax(values))
        gap = np.mean([abs(r[key] - r["outer_auc"]) for r in rows])
        print(f"{name:<22}: Spearman with outer AUC {spearman(values, outer):+.2f}; picks recipe {pick} "
              f"(outer AUC {outer[pick]:.3f}); mean |val - outer| {gap:.3f}")


if __name__ == "__main__":
    main()

"""One trial: TrialConfig + data -> trained model artifact (+ W&B run when a Tracker is given)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from covid_sweep.core.config import ConfigError, TrialConfig
from covid_sweep.core.metrics import binary_metrics, choose_threshold
from covid_sweep.core.phases import PhaseTimer
from covid_sweep.core.states import TrialState
from covid_sweep.data.groups import Groups, train_groups
from covid_sweep.data.layout import cached_images, fingerprint, load_split
from covid_sweep.data.splits import split_kind, trial_splits
from covid_sweep.model.artifact import write_artifact
from covid_sweep.model.networks import build_model
from covid_sweep.model.preprocessing import preprocessing_spec
from covid_sweep.model.runtime import pick_device
from covid_sweep.model.val_predictions import ValPredictions
from covid_sweep.tracking.tracker import Tracker
from covid_sweep.training.train import fit_folds

DATA_ENV = "COVID_SWEEP_DATA"


@dataclass
class TrialResult:
    state: TrialState  # FINISHED or STOPPED
    artifact: Path | None
    best: dict
    best_epoch: int
    epochs_run: int
    threshold: float
    split: str  # what the validation numbers were measured on


def data_dir_for(config: TrialConfig) -> Path:
    """The sweep parameter data_dir wins; else $COVID_SWEEP_DATA (how docker and agents find the data)."""
    value = config.data_dir or os.environ.get(DATA_ENV)
    if not value:
        raise ConfigError(f"data_dir: not set; pass --data DATA, set a data_dir parameter, or export {DATA_ENV}")
    return Path(os.path.abspath(value))  # absolute and without '..': valid from any working directory


def run_trial(
    config: TrialConfig,
    artifact_dir: Path,
    tracker: Tracker | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = True,
    trial_name: str | None = None,
    artifact_name: str | None = None,
    timer: PhaseTimer | None = None,
) -> TrialResult:
    """artifact_name: the W&B model artifact's name; one name per sweep keeps all its trials' models as
    versions of one collection, where the alias `best` can move between them. timer: collects the seconds
    of each phase (data_fingerprint, cache_load, grouping, model_build, warmup, fit, artifact_write, wandb_log)."""
    timer = timer or PhaseTimer()
    data_dir = data_dir_for(config)
    # the artifact records where its data came from, also when it came from the environment
    config = config.model_copy(update={"data_dir": data_dir})
    with timer.phase("data_fingerprint"):
        train = load_split(data_dir, "train")
        data_fingerprint = fingerprint(train)  # content hash, remembered per data set (names, sizes, mtimes)
    with timer.phase("cache_load"):
        images = cached_images(train, config.input_size, key=data_fingerprint)
        labels = np.asarray(train.labels)
    with timer.phase("grouping"):
        groups = train_groups(data_dir, train, config.grouping, key=data_fingerprint)
        index_pairs = trial_splits(labels, groups, config.folds, config.val_fraction, config.seed)
        splits = [(images[t], labels[t], images[v], labels[v]) for t, v in index_pairs]
    with timer.phase("model_build"):
        device = pick_device(config.device)
        models = [build_model(config.backbone, config.pretrained, device) for _ in splits]

    def epoch_done(record: dict) -> None:
        if tracker:
            tracker.log_epoch(record)
        if on_epoch:
            on_epoch(record)

    result = fit_folds(config, models, splits, on_epoch=epoch_done, should_stop=should_stop, progress=progress,
                       timer=timer)
    state = TrialState.STOPPED if result.stopped else TrialState.FINISHED
    if not result.history:
        return TrialResult(state=state, artifact=None, best={}, best_epoch=0, epochs_run=0, threshold=0.5,
                           split=split_kind(groups.source, config.folds))

    threshold = choose_threshold(result.val_labels, result.val_probs)
    at_threshold = {f"val_{k}_at_threshold": v for k, v in binary_metrics(result.val_labels, result.val_probs, threshold).items()
                    if k != "auc"}  # AUC does not depend on the cut
    metrics = {"monitor": config.monitor, "goal": config.monitor_goal, "best_epoch": result.best_epoch,
               "best": result.best, "threshold": threshold, **at_threshold, "state": state, "history": result.history}
    predictions = val_predictions(result, groups, index_pairs, train.ids)
    metadata = {"trial": trial_name, "preprocessing": preprocessing_spec(config.input_size),
                "data_fingerprint": data_fingerprint, "data_dir": str(data_dir),
                "validation": {**validation_record(config, groups, index_pairs, train.ids),
                               "split_key": predictions.split_key}}
    with timer.phase("artifact_write"):
        path = write_artifact(Path(artifact_dir), result.best_state, config, metrics, metadata, predictions)
    if tracker:
        with timer.phase("wandb_log"):
            tracker.summarize(result.best, config.monitor, {"threshold": threshold, "epochs_run": len(result.history),
                                                            "split": metadata["validation"]["split"],
                                                            "split_key": predictions.split_key,
                                                            "data_fingerprint": data_fingerprint})
            tracker.log_evaluation(result.val_labels, result.val_probs, threshold)
            tracker.log_model(path, name=artifact_name or f"model-{trial_name or tracker.run.id}",
                              metadata={"config": config.model_dump(mode="json"), "metrics": result.best,
                                        "threshold": threshold, **metadata})
    return TrialResult(state=state, artifact=path, best=result.best, best_epoch=result.best_epoch,
                       epochs_run=len(result.history), threshold=threshold, split=metadata["validation"]["split"])


def val_predictions(result, groups: Groups, index_pairs, ids) -> ValPredictions:
    """Every scored epoch's probability of every validation image, with what a replay of the sweep's selection
    needs beside it: file name, label, fold and group (fit_folds orders images fold by fold, as index_pairs)."""
    val = np.concatenate([v for _, v in index_pairs])
    folds = np.concatenate([np.full(len(v), k) for k, (_, v) in enumerate(index_pairs)])
    return ValPredictions.build(files=[ids[i] for i in val], labels=result.val_labels, folds=folds,
                                groups=np.asarray(groups.labels)[val], epochs=[h["epoch"] for h in result.history],
                                probs=result.epoch_probs)


def validation_record(config: TrialConfig, groups: Groups, index_pairs, ids) -> dict:
    """How the validation numbers were measured, with every fold's file names so anyone can re-check it."""
    return {"split": split_kind(groups.source, config.folds), "groups": groups.describe(),
            "grouping": groups.source, "n_groups": groups.count, "folds": config.folds,
            "val_fraction": None if config.folds > 1 else round(len(index_pairs[0][1]) / len(ids), 4),
            "seed": config.seed, "n_val": int(sum(len(v) for _, v in index_pairs)),
            "threshold_from": "out-of-fold predictions" if config.folds > 1 else "holdout",
            "val_files": [[ids[i] for i in val] for _, val in index_pairs]}

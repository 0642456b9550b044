"""Promotion: the best *finished* trial of a sweep becomes `best`, and export-best runs its prediction job.

Embedded sweeps (a bare id): the store's alias `best` moves to the winner. A sweep run on several boxes
keeps its artifacts in a shared folder (`--artifacts DIR`); each box may mount it elsewhere, so a
recorded artifact path that is not here is looked up as DIR/SWEEP/TRIAL.
W&B sweeps (entity/project/sweep_id): alias `best` on the winner's model artifact (taken off the
sweep's other model artifacts) and a link into a registry collection; all through `wandb_api`.
Running, failed, stopped or interrupted trials are never promoted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from covid_sweep.core import paths
from covid_sweep.core.errors import UserError
from covid_sweep.core.goals import rank_key
from covid_sweep.inference.export import ExportResult, Provenance, check_out_dir, export_bundle
from covid_sweep.inference.predict import NO_TTA, check_views
from covid_sweep.inference.selection import DEFAULT_SAMPLES
from covid_sweep.inference.sweep_estimate import FinishedTrial
from covid_sweep.model.artifact import load_artifact
from covid_sweep.model.artifact_files import read_json
from covid_sweep.model.runtime import pick_device
from covid_sweep.sweep.control.choice import Choice, choose
from covid_sweep.sweep.control.data_versions import current_fingerprint, left_out_note, recorded_fingerprint, split_by_data
from covid_sweep.sweep.store import Store, Sweep, Trial, best_finished, finished
from covid_sweep.sweep.store.location import resolve_location
from covid_sweep.tracking import wandb_api

BEST = "best"


class PromotionError(UserError, LookupError):
    """No trial of the sweep can be promoted (none finished, no metric, artifact gone)."""


@dataclass
class ExportBestResult:
    export: ExportResult
    provenance: Provenance
    choice: Choice
    previous: str | None = None  # the trial/artifact that held `best` before, where known
    recorded: list[str] = field(default_factory=list)


def best_finished_trial(store: Store, sweep: Sweep, artifacts: Path | None = None,
                        left_out: frozenset[str] = frozenset()) -> Trial:
    """The finished trial with the best value of the sweep's metric (ties: the earlier trial), its
    artifact as found from this box. left_out: names of trials not to promote (trained on other data)."""
    if not sweep.metric:
        raise PromotionError(f"sweep {sweep.id}: has no metric; cannot tell the best trial")
    trials = store.trials(sweep.id)
    best = best_finished([t for t in trials if t.name not in left_out], sweep.goal)
    if best is None:
        states = ", ".join(f"{n} {s}" for s, n in sorted(Counter(t.state for t in trials).items())) or "no trials"
        raise PromotionError(f"sweep {sweep.id}: no finished trial with a {sweep.metric} value to promote ({states})")
    return replace(best, artifact=str(locate_artifact(sweep, best, artifacts)))


def trained_on_this_data(sweep_id: str, finished_trials: list[FinishedTrial], data_dir: Path
                         ) -> tuple[list[FinishedTrial], list[str]]:
    """(the finished trials that may be promoted for DATA, names of those trained on other train images).
    A trial whose artifact records no fingerprint (or is not reachable here) is kept: nothing says otherwise."""
    same, other = split_by_data(finished_trials, lambda t: recorded_fingerprint(t.artifact),
                                current_fingerprint(data_dir))
    if other and not any(t.artifact for t in same):
        raise PromotionError(f"sweep {sweep_id}: every finished trial was trained on other train images than "
                             f"{Path(data_dir) / 'train'} holds now ({', '.join(t.name for t in other)}): train/ "
                             "changed after they ran. Pass --data with the images they were trained on, or run "
                             "trials on the current images (covid-sweep sweep ... --resume)")
    return same, [t.name for t in other]


def locate_artifact(sweep: Sweep, trial: Trial, artifacts: Path | None) -> Path:
    """The trial's artifact folder where it was written, else under this box's mount of the shared folder."""
    recorded = Path(trial.artifact) if trial.artifact else None
    if recorded is not None and recorded.is_dir():
        return recorded
    if artifacts is not None:
        mounted = paths.trial_artifact_dir(Path(), sweep.id, trial.name, Path(artifacts))
        if mounted.is_dir():
            return mounted
        raise PromotionError(f"sweep {sweep.id}: best finished trial {trial.name}: its model artifact is not "
                             f"reachable from this box: not at {recorded or 'an unrecorded path'} (where it was "
                             f"written) nor at {mounted} (under --artifacts)")
    hint = "; if it was written on another box, pass --artifacts DIR (this box's mount of the shared folder)"
    raise PromotionError(f"sweep {sweep.id}: best finished trial {trial.name} has no model artifact "
                         f"(expected at {recorded or 'an unrecorded path'}){hint if recorded else ''}")


def promote_in_store(store: Store, sweep: Sweep, trial: Trial) -> str | None:
    """Move alias `best` to `trial`; returns the name of the other trial that held it before, if any."""
    previous = store.alias(sweep.id, BEST)
    store.set_alias(sweep.id, BEST, trial.id)
    return store.trial(previous).name if previous is not None and previous != trial.id else None


def open_existing_store(home: Path, store: str | None = None) -> Store:
    """--store (or $COVID_SWEEP_STORE) if given, else HOME's SQLite file, which must exist."""
    location = resolve_location(store, home)
    if location.kind == "sqlite" and not Path(location.address).is_file():
        raise PromotionError(f"{location.address}: no embedded sweep store here; pass --home (or set "
                             "$COVID_SWEEP_HOME) to where `covid-sweep sweep` ran, its --store URL, or a W&B sweep "
                             "as entity/project/sweep_id")
    return Store(location, create=False)


def export_best(sweep: str, data_dir: Path, out_dir: Path, *, home: Path | None = None, registry: str | None = None,
                views: Sequence[str] = NO_TTA, force: bool = False, api=None,
                device: str | None = None, store: str | None = None,
                artifacts: Path | None = None, ensemble: bool = False,
                samples: int = DEFAULT_SAMPLES) -> ExportBestResult:
    """Pick the best finished trial (with ensemble: or the greedy ensemble, where its selection-corrected estimate
    is better), build the export (validated submission, model, card) beside OUT, record the promotion, then
    move the export into OUT. Any error before the move leaves OUT and the promotion as they were."""
    check_out_dir(Path(out_dir), force)
    views = check_views(views)
    root = paths.home(home)
    if wandb_api.is_wandb_path(sweep):
        return _export_best_wandb(sweep, data_dir, out_dir, root, registry, views, force, api, device, ensemble,
                                  samples)
    if registry:
        raise PromotionError(f"--registry links a W&B model artifact; sweep {sweep!r} is an embedded one "
                             "(give a W&B sweep as entity/project/sweep_id)")
    return _export_best_local(sweep, data_dir, out_dir, root, views, force, device, store, artifacts, ensemble,
                              samples)


def _finished_here(sweep: Sweep, trials: list[Trial], artifacts: Path | None) -> list[FinishedTrial]:
    """The sweep's finished trials with their artifacts as found from this box (None where not reachable)."""
    found = []
    for trial in finished(trials):
        try:
            found.append(FinishedTrial(trial.name, locate_artifact(sweep, trial, artifacts)))
        except PromotionError:
            found.append(FinishedTrial(trial.name, None))
    return found


def _export_best_local(sweep_id, data_dir, out_dir, root, views, force, device, store_url, artifacts, ensemble,
                       samples) -> ExportBestResult:
    store = open_existing_store(root, store_url)
    try:
        sweep = store.sweep(sweep_id)
        finished_trials, other_data = trained_on_this_data(sweep.id, _finished_here(sweep, store.trials(sweep.id),
                                                                                     artifacts), data_dir)
        trial = best_finished_trial(store, sweep, artifacts, left_out=frozenset(other_data))
        choice = choose(finished_trials, FinishedTrial(trial.name, Path(trial.artifact)), sweep.metric, sweep.goal,
                        ensemble, paths.trial_artifact_dir(root, sweep.id, "", artifacts), samples)
        if other_data:
            choice = replace(choice, note=f"{choice.note}; {left_out_note(other_data, data_dir)}")
        artifact = load_artifact(choice.artifact_dir, device=pick_device(device))
        provenance = Provenance(sweep_id=sweep.id, trial_id=choice.name, source=f"embedded store {store.path}",
                                artifact=str(choice.artifact_dir), metric=sweep.metric, goal=sweep.goal,
                                value=_promoted_value(choice, trial.name, trial.best),
                                promotion=f"alias '{BEST}' of sweep {sweep.id} in {store.path}: the best single trial",
                                selection=choice.selection, choice=choice.note)
        result = ExportBestResult(export=None, provenance=provenance, choice=choice)  # type: ignore[arg-type]

        def record() -> None:
            result.previous = promote_in_store(store, sweep, trial)
            result.recorded.append(f"alias '{BEST}' -> trial {trial.name} in {store.path}")

        result.export = export_bundle(artifact, data_dir, out_dir, provenance, views, force,
                                      before_install=record)
        return result
    finally:
        store.close()


def _promoted_value(choice: Choice, best: str, best_value: float | None) -> float | None:
    """The promoted model's value of the sweep metric on validation (the ensemble's own, for an ensemble)."""
    if choice.kind == "ensemble":
        return choice.selection["ensemble"]["selected_value"]
    if choice.trial != best:  # greedy selection settled on one trial alone
        return read_json(choice.artifact_dir / "metrics.json").get("best", {}).get(choice.selection["single"]["metric"])
    return best_value


def _export_best_wandb(sweep_path, data_dir, out_dir, root, registry, views, force, api, device, ensemble,
                       samples) -> ExportBestResult:
    sweep_path = wandb_api.check_sweep_path(sweep_path)
    if registry:
        registry = wandb_api.registry_path(registry)
    api = api if api is not None else wandb_api.connect()
    run = wandb_api.best_finished_run(api, sweep_path)
    current = current_fingerprint(data_dir)
    same, other = split_by_data(wandb_api.finished_runs(api, sweep_path), lambda r: r.data_fingerprint, current)
    if other:
        run = _best_run_on_this_data(sweep_path, run, same, other, current, data_dir)
    model = wandb_api.model_artifact(api, run.path)
    downloads = root / "artifacts" / "wandb"
    runs = {r.id: r for r in same}
    models = {run_id: wandb_api.model_artifact(api, r.path) for run_id, r in runs.items()}
    records = [FinishedTrial(run_id, wandb_api.download_record(api, info.name, downloads / "records" / _local(info.name)))
               for run_id, info in models.items()]

    def whole(run_id: str) -> Path:
        name = models[run_id].name if run_id in models else model.name
        return wandb_api.download_artifact(api, name, downloads / name.replace(":", "-"))

    choice = choose(records, FinishedTrial(run.id, None), run.metric, run.goal, ensemble,
                    downloads / "ensembles" / _local(sweep_path), samples, whole=whole)
    if other:
        choice = replace(choice, note=f"{choice.note}; {left_out_note([r.id for r in other], data_dir)}")
    artifact = load_artifact(choice.artifact_dir, device=pick_device(device))
    provenance = Provenance(sweep_id=sweep_path, trial_id=choice.name,
                            source=f"W&B run {run.path} ({run.name})",
                            artifact=model.name if choice.trial == run.id else str(choice.artifact_dir),
                            metric=run.metric, goal=run.goal, value=_promoted_value(choice, run.id, run.value),
                            promotion=f"alias '{BEST}' on {model.name}" + (f"; linked into {registry}" if registry else ""),
                            selection=choice.selection, choice=choice.note)
    result = ExportBestResult(export=None, provenance=provenance, choice=choice)  # type: ignore[arg-type]

    def record() -> None:
        result.recorded.extend(wandb_api.promote_artifact(api, model.name, BEST, registry,
                                                          metadata={"selection_estimate": choice.selection}))
        removed = wandb_api.demote_others(api, sweep_path, keep=model.name, alias=BEST)
        result.previous = ", ".join(removed) or None
        result.recorded.extend(f"alias '{BEST}' removed from {name}" for name in removed)

    result.export = export_bundle(artifact, data_dir, out_dir, provenance, views, force, before_install=record)
    return result


def _best_run_on_this_data(sweep_path: str, best: wandb_api.RunInfo, same: list[wandb_api.RunInfo],
                           other: list[wandb_api.RunInfo], current: str | None, data_dir: Path) -> wandb_api.RunInfo:
    """The best of the runs trained on DATA's current train images (the first listed wins a tie)."""
    if best.data_fingerprint in (None, current):
        return best
    if not same:
        raise PromotionError(f"W&B sweep {sweep_path}: every finished run was trained on other train images than "
                             f"{Path(data_dir) / 'train'} holds now ({', '.join(r.id for r in other)}): train/ "
                             "changed after they ran. Pass --data with the images they were trained on")
    return min(same, key=lambda r: rank_key(r.value, r.goal))


def _local(name: str) -> str:
    """A W&B name (entity/project/model-x:v3) as one folder name."""
    return name.replace("/", "_").replace(":", "-")

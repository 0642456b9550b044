"""export-best, predict, score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from covid_sweep.cli.options import artifacts_option, data_option, home_option, resolve_data, store_option


def tta_options(command):
    command = click.option("--tta-views", metavar="LIST", default=None,
                           help="Comma list of TTA views to average instead: identity, hflip, vflip, "
                                "zoom_in, zoom_out (a centred 10% zoom).")(command)
    return click.option("--tta", is_flag=True,
                        help="Test-time augmentation: mean P(COVID) over the image and its horizontal flip.")(command)


force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")


def _summary(prediction) -> str:
    positives = int(prediction.labels.sum())
    return (f"{len(prediction.ids)} test images, {positives} predicted COVID at threshold {prediction.threshold:.4f} "
            f"(chosen on validation); views: {' + '.join(prediction.views)}")


@click.command("export-best")
@click.argument("sweep")
@data_option
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Export folder (refused when not empty, unless --force).")
@click.option("--registry", default=None, metavar="COLLECTION",
              help="W&B registry collection to link the winner into, e.g. wandb-registry-model/covid-ct (W&B sweeps).")
@home_option
@store_option
@artifacts_option
@tta_options
@force_option
@click.option("--ensemble", is_flag=True, help="Also try greedy ensemble selection over the sweep's comparable "
              "finished trials; it is promoted only when its selection-corrected estimate beats the best trial's.")
@click.option("--samples", type=click.IntRange(min=50), default=2000, show_default=True,
              help="Bootstrap samples of the selection-corrected estimate.")
@click.option("--json", "as_json", is_flag=True, help="Print what was promoted, its estimate and scores as JSON.")
def export_best(sweep, data, out, registry, home, store, artifacts, tta, tta_views, force, ensemble, samples,
                as_json) -> None:
    """Promote the best finished trial of SWEEP (or, with --ensemble, the greedy ensemble of its trials where
    that is better on validation) and export it: submission, model, model card.

    SWEEP is an embedded sweep id (see `covid-sweep status`) or a W&B sweep as entity/project/sweep_id.
    """
    from covid_sweep.inference.predict import views_for
    from covid_sweep.sweep.control.promote import export_best as run_export

    _check_store_writable(sweep, home, store)
    result = run_export(sweep, resolve_data(data), out, home=home, registry=registry, views=views_for(tta, tta_views),
                        force=force, store=store, artifacts=artifacts, ensemble=ensemble, samples=samples)
    if as_json:
        click.echo(json.dumps(_export_json(result), indent=2, default=str))
        return
    p = result.provenance
    value = f"{p.value:.4f}" if isinstance(p.value, float) else p.value
    what = "promoted" if result.choice.kind == "ensemble" else "best finished trial"
    click.echo(f"{what} of sweep {p.sweep_id}: {p.trial_id} ({p.metric}={value}, {p.goal}) · "
               f"{result.choice.estimate_text}")
    click.echo(f"why: {result.choice.note}")
    for line in result.recorded:
        click.echo(f"promoted: {line}")
    if result.previous:
        click.echo(f"previous best: {result.previous}")
    click.echo(f"predicted {_summary(result.export.prediction)}")
    click.echo(f"wrote {result.export.out_dir}: {', '.join(result.export.files)}")
    estimate = result.export.estimate
    if estimate.test is not None:
        val, test = estimate.validation.get("auc", float("nan")), estimate.test["auc"]
        click.echo(f"validation AUC {val:.3f} ({estimate.split}) vs test AUC {test:.3f} (test_labels.csv, scored once "
                   f"after the choice): gap {val - test:+.3f}")


def _check_store_writable(sweep: str, home: Path | None, store: str | None) -> None:
    """An embedded sweep's promotion is recorded in its store: one this process cannot write (a read-only HOME)
    is refused now, not after the prediction."""
    from covid_sweep.core import paths
    from covid_sweep.sweep.store.location import resolve_location
    from covid_sweep.sweep.store.sqlite import not_writable, writable
    from covid_sweep.tracking.wandb_api import is_wandb_path

    if is_wandb_path(sweep):
        return
    location = resolve_location(store, paths.home(home))
    db = Path(location.address)
    if location.kind == "sqlite" and db.is_file() and not writable(db):
        raise not_writable(db, needed_for=": export-best records the promoted trial in it")


def _export_json(result) -> dict:
    """export-best --json: stable keys for scripts."""
    p, export, choice = result.provenance, result.export, result.choice
    prediction = export.prediction
    return {"sweep": p.sweep_id, "metric": p.metric, "goal": p.goal,
            "promoted": {"kind": choice.kind, "name": choice.name, "trial": choice.trial,
                         "members": choice.selection.get("members") if choice.kind == "ensemble" else None,
                         "validation_value": p.value, "artifact": str(choice.artifact_dir)},
            "why": choice.note, "selection_estimate": choice.selection,
            "recorded": result.recorded, "previous": result.previous,
            "prediction": {"images": len(prediction.ids), "predicted_covid": int(prediction.labels.sum()),
                           "threshold": prediction.threshold, "views": list(prediction.views)},
            "validation": {"split": export.estimate.split, **export.estimate.validation},
            "test": export.estimate.test, "out": str(export.out_dir), "files": list(export.files)}


@click.command()
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), required=True, metavar="ARTIFACT",
              help="Model artifact directory (model.safetensors, config.json, metrics.json, metadata.json).")
@data_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="FILE",
              help="Submission CSV to write; probabilities go beside it as <stem>.probabilities.csv.")
@tta_options
@force_option
def predict(model_dir, data, out, tta, tta_views, force) -> None:
    """Predict the test split of DATA with a model artifact: a validated submission in sample_submission order."""
    from covid_sweep.inference.predict import run_predict

    prediction, submission, probs = run_predict(model_dir, resolve_data(data), out, tta=tta, views=tta_views,
                                                force=force)
    click.echo(f"predicted {_summary(prediction)}")
    click.echo(f"wrote {submission} and {probs}")


@click.command("tta-report")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), required=True, metavar="ARTIFACT",
              help="Model artifact directory (a single model or a K-fold ensemble).")
@click.option("--data", default=None, metavar="DATA",
              help="The data it was trained on (default: data_dir in its config.json).")
@click.option("--views", "view_sets", multiple=True, metavar="LIST",
              help="A comma list of views to score; repeat for several (default: identity; +hflip; "
                   "+zoom_in,zoom_out; all four).")
def tta_report(model_dir, data, view_sets) -> None:
    """Score TTA view sets on the artifact's own validation images (out-of-fold for an ensemble),
    so --tta-views is chosen without touching test labels."""
    from covid_sweep.inference.predict import views_for
    from covid_sweep.inference.tta_report import DEFAULT_VIEW_SETS, score_view_sets
    from covid_sweep.model.artifact import load_artifact

    artifact = load_artifact(model_dir)
    config = getattr(artifact, "config", None)  # a single trial's; an ensemble's members share data and split
    data_dir = resolve_data(data) if data else (artifact.metadata.get("data_dir") or getattr(config, "data_dir", None))
    if data_dir is None:
        raise click.UsageError("--data: not given and the artifact records no data_dir")
    sets = [views_for(True, views) for views in view_sets] or list(DEFAULT_VIEW_SETS)
    scores = score_view_sets(artifact, data_dir, sets)
    folds = artifact.metadata.get("validation", {}).get("folds") or getattr(config, "folds", 1)
    kind = "out-of-fold" if folds > 1 else "holdout"
    click.echo(f"{model_dir}: {scores[0].n} {kind} validation images, accuracy at the artifact's threshold "
               f"{artifact.threshold:.4f} (chosen on the same images without TTA)")
    click.echo(f"{'views':<40} {'acc':>7} {'auc':>7} {'f1':>7}")
    for s in scores:
        m = s.metrics
        click.echo(f"{' + '.join(s.views):<40} {_fmt(m['acc']):>7} {_fmt(m['auc']):>7} {_fmt(m['f1']):>7}")


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


@click.command()
@click.argument("submission", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--probs", "probs", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="file_name,prob CSV (e.g. probabilities.csv of an export) for AUC.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def score(submission, labels, probs, as_json) -> None:
    """Score SUBMISSION (file_name,COVID[,prob]) against LABELS (file_name,COVID, e.g. test_labels.csv)."""
    from covid_sweep.inference.submission import score as run_score

    result = run_score(submission, labels, probs)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    (tn, fp), (fn, tp) = result.confusion
    click.echo(f"{submission}: {result.n} images scored against {labels}")
    click.echo(f"accuracy     {_fmt(result.accuracy)}")
    click.echo(f"F1           {_fmt(result.f1)}")
    click.echo(f"sensitivity  {_fmt(result.sensitivity)}")
    click.echo(f"specificity  {_fmt(result.specificity)}")
    if result.auc is not None:
        click.echo(f"AUC          {_fmt(result.auc)}  (from {result.auc_source})")
    else:
        beside = [p for p in (submission.with_name("probabilities.csv"),
                              submission.with_name(f"{submission.stem}.probabilities.csv")) if p.is_file()]
        hint = f"; add --probs {beside[0]}" if beside else "; give --probs FILE or a prob column"
        click.echo(f"AUC          -  (no probabilities{hint})")
    click.echo("confusion matrix (rows: true, columns: predicted)")
    click.echo("              pred 0  pred 1")
    click.echo(f"  true 0    {tn:8d}{fp:8d}")
    click.echo(f"  true 1    {fn:8d}{tp:8d}")

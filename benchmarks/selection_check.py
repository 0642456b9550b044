"""Does the selection-corrected estimate tell the truth? One finished sweep, scored on held-out test labels.

    python benchmarks/selection_check.py SWEEP_ID --home HOME --data DATA [--samples 2000] [--json OUT]

For the sweep's promoted trial (its best finished trial) and for the greedy ensemble of its comparable
finished trials, it prints side by side: the value the sweep reports on validation, the selection-corrected
estimate with its 95 % interval (BBC-CV, inference/selection.py), and the test AUC and accuracy from
DATA/test_labels.csv. Every trial's own test AUC is printed too (their mean against the winner's shows how
lucky the shared validation fold was). Test labels are read here, after every choice was made, and never
feed back into one: this is a measurement of the tool, not part of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covid_sweep.core import paths  # noqa: E402
from covid_sweep.core.metrics import binary_metrics  # noqa: E402
from covid_sweep.data.layout import labels_for, load_split  # noqa: E402
from covid_sweep.inference.predict import predict_split  # noqa: E402
from covid_sweep.inference.sweep_estimate import FinishedTrial, estimate  # noqa: E402
from covid_sweep.model.artifact import load_artifact  # noqa: E402
from covid_sweep.sweep.control.choice import build_ensemble  # noqa: E402
from covid_sweep.sweep.store import Store, best_finished, finished  # noqa: E402


def test_scores(artifact, data: Path, labels: np.ndarray) -> dict:
    prediction = predict_split(artifact, data)
    scores = binary_metrics(labels, prediction.probs, prediction.threshold)
    return {"auc": scores["auc"], "acc": scores["acc"]}


def torchscript_parity(ensemble, data: Path) -> float:
    """max |P(COVID) of the exported TorchScript ensemble - predict's| over the test images."""
    import torch

    from covid_sweep.data.layout import decode_resized
    from covid_sweep.inference.export.torchscript import export_torchscript

    target = export_torchscript(ensemble, Path(tempfile.mkdtemp()) / "model.pt")
    scripted = torch.jit.load(str(target))
    split = load_split(data, "test")
    with torch.no_grad():
        got = scripted([torch.from_numpy(decode_resized(split, size)) for size in ensemble.input_sizes]).numpy()
    return float(np.abs(got - predict_split(ensemble, data).probs).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    store = Store(paths.store_path(args.home), create=False)
    sweep = store.sweep(args.sweep)
    trials = store.trials(sweep.id)
    best = best_finished(trials, sweep.goal)
    done = [FinishedTrial(t.name, Path(t.artifact)) for t in finished(trials)]
    started = time.perf_counter()
    result = estimate(done, best.name, sweep.metric, sweep.goal, samples=args.samples, ensemble=True)
    replay_s = time.perf_counter() - started
    test = load_split(args.data, "test")
    labels = labels_for(test, args.data / "test_labels.csv")

    per_trial = {t.name: test_scores(load_artifact(t.artifact), args.data, labels) for t in done}
    single = result.single
    rows = [("best single trial " + best.name, single, per_trial[best.name])]
    parity = None
    if len(result.members) > 1:
        folder = build_ensemble({n: Path(next(t.artifact for t in done if t.name == n)) for n in result.members},
                                result, sweep.metric, sweep.goal, Path(tempfile.mkdtemp()))
        ensemble = load_artifact(folder)
        rows.append(("greedy ensemble " + ", ".join(f"{n} {w:.2f}" for n, w in result.members.items()),
                     result.ensemble, test_scores(ensemble, args.data, labels)))
        parity = torchscript_parity(ensemble, args.data)
    else:
        rows.append((f"greedy ensemble = {next(iter(result.members))} alone", result.ensemble,
                     per_trial[next(iter(result.members))]))

    print(f"sweep {sweep.id} ({sweep.name}): {len(done)} finished trials compared ({len(result.left_out)} left out), "
          f"{single.images} validation images in {single.groups} groups, {single.samples} samples "
          f"(replay {replay_s:.1f} s)")
    print(f"{'model':<48} {'val ' + sweep.metric:>12} {'corrected':>10} {'95% interval':>17} {'width':>6} "
          f"{'test AUC':>9} {'inside':>7} {'|est-test|':>10} {'test acc':>9}")
    out = {"sweep": sweep.id, "name": sweep.name, "trials": len(done), "images": single.images,
           "groups": single.groups, "samples": single.samples, "replay_s": replay_s, "rows": [],
           "per_trial_test": per_trial, "ensemble_wins_on_validation": result.ensemble_wins}
    for label, est, scores in rows:
        inside = est.low <= scores["auc"] <= est.high
        print(f"{label[:48]:<48} {est.selected:>12.3f} {est.point:>10.3f} [{est.low:.3f}, {est.high:.3f}] "
              f"{est.high - est.low:>6.3f} {scores['auc']:>9.3f} {str(inside):>7} {abs(est.point - scores['auc']):>10.3f} "
              f"{scores['acc']:>9.3f}")
        out["rows"].append({"model": label, **est.as_dict(), "test_auc": scores["auc"], "test_acc": scores["acc"],
                            "inside": inside})
    if parity is not None:
        print(f"ensemble: TorchScript vs predict on {len(labels)} test images: max |diff| {parity:.2e}")
        out["torchscript_max_abs_diff"] = parity
    aucs = [s["auc"] for s in per_trial.values()]
    print(f"every trial's test AUC: mean {np.mean(aucs):.3f} (min {min(aucs):.3f}, max {max(aucs):.3f}); "
          f"greedy ensemble wins on validation: {result.ensemble_wins}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()

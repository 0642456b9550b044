"""The report's plots (plotly figures), each built from the plain sweep records: nothing here reads a store."""

from __future__ import annotations

import math

from covid_sweep.core.states import TrialState
from covid_sweep.sweep.views.importance import ImportanceResult
from covid_sweep.sweep.views.report_data import SweepRecord, TrialRecord
from covid_sweep.sweep.views.report_model import PromotedModel

LOG_DISTRIBUTIONS = ("log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
                     "inv_log_uniform_values")
HEIGHT = 420
MARGIN = {"t": 30, "b": 40}  # plotly's default top margin (100 px) leaves a gap under every section title


def _go():
    import plotly.graph_objects as go

    return go


def varying(record: SweepRecord) -> list[str]:
    return [n for n in record.param_order if len({repr(t.params.get(n)) for t in record.trials}) > 1]


def _dimension(name: str, trials: list[TrialRecord], parameters: dict) -> dict:
    """One axis of the parallel coordinates: numbers as they are (log10 for a log-distributed parameter, as
    W&B's sweep page draws them), any other value as the index of its category, labelled with the value."""
    values = [t.params.get(name) for t in trials]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        if parameters.get(name, {}).get("distribution") in LOG_DISTRIBUTIONS and all(v > 0 for v in values):
            return {"label": f"{name} (log10)", "values": [math.log10(v) for v in values]}
        return {"label": name, "values": values}
    categories = sorted({repr(v) for v in values})
    labels = [str(next(v for v in values if repr(v) == c)) for c in categories]
    return {"label": name, "values": [categories.index(repr(v)) for v in values],
            "tickvals": list(range(len(categories))), "ticktext": labels}


def parallel_coordinates(record: SweepRecord):
    """Parameters -> metric, one line per scored trial, coloured by the metric."""
    go = _go()
    scored = [t for t in record.trials if t.best is not None]
    if not scored:
        return None
    dims = [_dimension(n, scored, record.parameters) for n in varying(record)]
    dims.append({"label": record.metric or "metric", "values": [t.best for t in scored]})
    line = {"color": [t.best for t in scored], "colorscale": "Viridis", "showscale": True,
            "reversescale": record.goal == "minimize"}
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims))
    fig.update_layout(height=HEIGHT, margin={"l": 60, "r": 60, "t": 60, "b": 30})
    return fig


def metric_curves(record: SweepRecord):
    """The sweep metric against the epoch for every trial: a hyperband stop shows as a short curve."""
    go = _go()
    fig = go.Figure()
    for trial in record.trials:
        rows = [r for r in trial.history if isinstance(r.get(record.metric), (int, float)) and "epoch" in r]
        if not rows:
            continue
        dash = "dot" if trial.state == TrialState.STOPPED else "solid"
        fig.add_trace(go.Scatter(x=[r["epoch"] for r in rows], y=[r[record.metric] for r in rows], mode="lines+markers",
                                 name=f"{trial.id} ({trial.state})", line={"dash": dash, "width": 3 if trial.promoted else 1.5}))
    if not fig.data:
        return None
    fig.update_layout(height=HEIGHT, xaxis_title="epoch", yaxis_title=record.metric, legend_title="trial (dotted: stopped)",
                      margin=MARGIN)
    return fig


def importance_bars(result: ImportanceResult, metric: str):
    """Importance per feature, coloured by the sign of its correlation with the metric."""
    go = _go()
    if not result.rows:
        return None
    rows = list(reversed(result.rows))  # most important on top
    colors = ["#999999" if r.correlation is None else ("#2a9d4a" if r.correlation > 0 else "#d1495b") for r in rows]
    text = ["r n/a" if r.correlation is None else f"r = {r.correlation:+.2f}" for r in rows]
    fig = go.Figure(go.Bar(x=[r.importance for r in rows], y=[r.feature for r in rows], orientation="h",
                           marker_color=colors, text=text, textposition="outside", cliponaxis=False))
    fig.update_layout(height=max(220, 80 + 28 * len(rows)), xaxis_title=f"importance for {metric}",
                      margin={**MARGIN, "l": 200, "r": 80},
                      title={"text": "green: higher value, better metric; red: higher value, worse metric (Pearson r)",
                             "font": {"size": 12}})
    return fig


def time_bars(record: SweepRecord):
    """Where each trial's wall time went: its recorded phases; a trial without them shows its epochs' summed
    `epoch_time` from its history and the rest of its wall time, labelled as such."""
    go = _go()
    trials = [t for t in record.trials if t.phases or t.seconds]
    if not trials:
        return None
    names = list(dict.fromkeys(p for t in trials for p in t.phases))
    derived = {t.id: _derived_split(t) for t in trials if not t.phases}
    fig = go.Figure()
    ids = [t.id for t in trials]
    # a trial records up to 12 phases; plotly's default 10 colours would give two phases one colour
    from plotly.colors import qualitative

    for phase, colour in zip(names, qualitative.Dark24 * 2):
        fig.add_trace(go.Bar(name=phase, y=ids, x=[t.phases.get(phase, 0) for t in trials], orientation="h",
                             marker_color=colour))
    if any(derived.values()):
        for i, label in enumerate(("epochs (history's epoch_time, phases not recorded)", "rest of wall time")):
            fig.add_trace(go.Bar(name=label, y=ids, x=[(derived.get(t.id) or (0, 0))[i] for t in trials],
                                 orientation="h"))
    # one labelled bar per trial: plotly hides category labels that would overlap
    fig.update_layout(barmode="stack", height=120 + 32 * len(trials), xaxis_title="seconds", margin={**MARGIN, "l": 140},
                      yaxis={"type": "category", "dtick": 1, "autorange": "reversed"})
    return fig if fig.data else None


def _derived_split(trial: TrialRecord) -> tuple[float, float] | None:
    epochs = sum(r["epoch_time"] for r in trial.history if isinstance(r.get("epoch_time"), (int, float)))
    if not epochs or not trial.seconds:
        return None
    return epochs, max(0.0, trial.seconds - epochs)


def confusion_heatmap(model: PromotedModel):
    go = _go()
    if model.confusion is None:
        return None
    z = model.confusion
    fig = go.Figure(go.Heatmap(z=z, x=["predicted 0", "predicted 1"], y=["true 0", "true 1"], colorscale="Blues",
                               text=[[str(v) for v in row] for row in z], texttemplate="%{text}", showscale=False))
    fig.update_layout(height=320, width=380, title="test confusion matrix (at the model's threshold)",
                      yaxis={"autorange": "reversed"})
    return fig


def roc_figure(model: PromotedModel):
    go = _go()
    if model.roc is None:
        return None
    fpr, tpr = model.roc
    auc = (model.test or {}).get("auc")
    fig = go.Figure(go.Scatter(x=fpr, y=tpr, mode="lines", name="ROC"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#999"}, name="chance"))
    fig.update_layout(height=320, width=420, title=f"test ROC (AUC {auc:.3f})" if auc is not None else "test ROC",
                      xaxis_title="false positive rate", yaxis_title="true positive rate")
    return fig

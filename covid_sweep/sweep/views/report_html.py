"""One self-contained HTML file about a sweep: plotly's JavaScript and every image are inlined, so it opens
offline, from a file, with no server (`covid-sweep report`)."""

from __future__ import annotations

import html
import time
from pathlib import Path

from covid_sweep.core.files import write_text_atomically
from covid_sweep.sweep.views import report_figures as figures
from covid_sweep.sweep.views.importance import parameter_importance
from covid_sweep.sweep.views.report_data import SweepRecord
from covid_sweep.sweep.views.report_model import PromotedModel
from covid_sweep.sweep.views.selection import interval_text
from covid_sweep.sweep.views.status import fmt_duration, fmt_value

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.note { color: #555; font-size: 13px; max-width: 1000px; }
table.trials { border-collapse: collapse; font-size: 12px; }
table.trials th, table.trials td { border: 1px solid #ddd; padding: 3px 6px; white-space: nowrap; }
table.trials th { background: #f3f3f3; cursor: pointer; position: sticky; top: 0; }
table.trials tr.promoted td { background: #fff6d5; }
.scroll { overflow-x: auto; max-height: 520px; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figure img { width: 256px; } figcaption { font-size: 12px; }
"""

# click a header to sort by it; a number sorts as a number, a second click reverses
SORT_SCRIPT = """
document.querySelectorAll('table.trials th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


class _Figures:
    """Turns plotly figures into HTML fragments; plotly.js is inlined once, with the first figure."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig) -> str:
        import plotly.io as pio

        fragment = pio.to_html(fig, full_html=False, include_plotlyjs=self.count == 0,
                               config={"displaylogo": False, "responsive": True})
        self.count += 1
        return f'<div class="plot">{fragment}</div>'


def _e(value) -> str:
    return html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _cell(value, sort=None) -> str:
    shown = "-" if value is None else fmt_value(value)
    key = "" if sort is None and value is None else (sort if sort is not None else value)
    return f'<td data-sort="{_e(key)}">{_e(shown)}</td>'


def trial_table(record: SweepRecord) -> str:
    """Every trial with its full id, state, best metric, epochs, wall time and every parameter; sortable."""
    # "epochs run": the epochs it logged, beside an `epochs` parameter (its budget) when the sweep has one
    headers = ["trial", "state", f"best {record.metric or 'metric'}", "best epoch", "epochs run", "time",
               *record.param_order]
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    rows = []
    for t in record.trials:
        cells = [_cell(t.id + (" [best]" if t.promoted else ""), sort=t.id), _cell(t.state), _cell(t.best),
                 _cell(t.best_epoch), _cell(t.epochs), f'<td data-sort="{_e(t.seconds or "")}">{fmt_duration(t.seconds)}</td>',
                 *(_cell(t.params.get(n)) for n in record.param_order)]
        rows.append(f'<tr{" class=promoted" if t.promoted else ""}>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="trials"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _section(title: str, *parts: str) -> str:
    return f"<h2>{_e(title)}</h2>" + "".join(parts)


def _plot_or(fig, plot: _Figures, missing: str) -> str:
    return plot(fig) if fig is not None else _note(missing)


def _busy(record: SweepRecord) -> str:
    """GPU/CPU busy fractions where a trial's history recorded them (keys naming gpu or cpu and busy or util)."""
    found = []
    for t in record.trials:
        keys = sorted({k for r in t.history for k in r
                       if any(d in k.lower() for d in ("gpu", "cpu")) and any(w in k.lower() for w in ("busy", "util"))})
        for key in keys:
            values = [r[key] for r in t.history if isinstance(r.get(key), (int, float))]
            if values:
                found.append(f"{t.id}: mean {key} {sum(values) / len(values):.3g}")
    return _note("GPU/CPU busy: " + ("; ".join(found) if found else "not recorded by these trials."))


def _timing(record: SweepRecord, plot: _Figures) -> str:
    missing = [t.id for t in record.trials if not t.phases]
    note = ("Per-trial phases as each trial recorded them (seconds)." if len(missing) < len(record.trials) else "")
    if missing:
        note += (f" Phases not recorded for: {', '.join(missing)}; for those the bar splits the wall time into the "
                 "epochs' summed epoch_time (from the trial's history) and the rest (start-up, data, saving).")
    fig = figures.time_bars(record)
    return _section("Where the time went", _note(note.strip()), _plot_or(fig, plot, "No timing recorded."),
                    _busy(record))


def _metrics_table(model: PromotedModel) -> str:
    rows = [f"<tr><td>{_e(k)}</td><td>{v:.4f}</td></tr>" for k, v in model.validation.items()]
    validation = f'<table class="trials"><thead><tr><th>validation metric</th><th>value</th></tr></thead>' \
                 f'<tbody>{"".join(rows)}</tbody></table>'
    if not model.test:
        return validation
    test_rows = [f"<tr><td>{_e(k)}</td><td>{_e(fmt_value(v))}</td></tr>" for k, v in model.test.items()]
    test = (f'<table class="trials"><thead><tr><th>test metric (test_labels.csv, after the choice)</th><th>value</th>'
            f'</tr></thead><tbody>{"".join(test_rows)}</tbody></table>')
    return f'<div class="row">{validation}{test}</div>'


def _promoted(model: PromotedModel | None, plot: _Figures) -> str:
    if model is None:
        return _section("Promoted model", _note("No trial of this sweep is promoted yet "
                                                "(`covid-sweep export-best SWEEP --data DATA --out DIR` promotes one)."))
    what = (f"Weighted ensemble of {', '.join(f'{t} ({w:.2f})' for t, w in model.members.items())}"
            if model.members else f"Trial {model.trial_id}; best epoch {model.best_epoch}")
    facts = (f"{what}; validation split: {model.split}; "
             f"decision threshold {fmt_value(model.threshold) if model.threshold is not None else 'not recorded'}; "
             f"artifact {model.artifact}.")
    if model.choice:
        facts += f" Why: {model.choice}."
    if model.selection:
        corrected = interval_text(model.selection, "ensemble" if model.members else "single")
        facts += f" {corrected} (95% interval)." if corrected else ""
    plots = [plot(f) for f in (figures.confusion_heatmap(model), figures.roc_figure(model)) if f is not None]
    cams = "".join(f'<figure><img src="{src}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
                   for caption, src in model.gradcam)
    parts = [_note(facts), _metrics_table(model), *(_note(n) for n in model.notes)]
    if plots:
        parts.append(f'<div class="row">{"".join(plots)}</div>')
    if cams:
        parts.append("<h3>Grad-CAM: most confident right and wrong test predictions</h3>"
                     f'<div class="row">{cams}</div>')
    return _section("Promoted model", *parts)


def _best_line(record: SweepRecord) -> str:
    """The best value beside what it is worth: the selection-corrected estimate, or why there is none."""
    if "unavailable" in record.selection:
        return f"Selection-corrected estimate: not available ({record.selection['unavailable']})."
    single = record.selection["single"]
    return (f"Best {record.metric} {single['selected_value']:.3f} ({record.selection['promoted']}) · "
            f"{interval_text(record.selection)} (95% interval): the sweep's choice among {single['trials']} "
            f"comparable finished trial(s), replayed on {single['samples']} bootstrap samples of "
            f"{single['groups']} validation groups and scored on the groups left out.")


def render(record: SweepRecord, model: PromotedModel | None) -> str:
    """The whole page."""
    plot = _Figures()
    metric = record.metric or "metric"
    importance = parameter_importance([t.params for t in record.trials], [t.best for t in record.trials],
                                      record.param_order, metric)
    states = ", ".join(f"{sum(1 for t in record.trials if t.state == s)} {s}"
                       for s in sorted({t.state for t in record.trials}))
    header = (f"<h1>Sweep {_e(record.id)} ({_e(record.name)}, {_e(record.method)})</h1>"
              + _note(f"{len(record.trials)}{f'/{record.run_cap}' if record.run_cap else ''} trials: {states}. "
                      f"Metric {metric} ({record.goal}), measured on: {record.objective_split}. Source: {record.source}. "
                      f"Report written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
              + _note(_best_line(record)))
    body = [
        header,
        _section("Parameters → metric (parallel coordinates)",
                 _note("One line per scored trial, coloured by its best metric; drag along an axis to filter. "
                       "Only parameters that differ among the trials get an axis."),
                 _plot_or(figures.parallel_coordinates(record), plot, "No scored trial yet.")),
        _section(f"{metric} per epoch", _plot_or(figures.metric_curves(record), plot, "No epoch logged yet.")),
        _section("Parameter importance", _note(importance.note),
                 _plot_or(figures.importance_bars(importance, metric), plot, "")),
        _timing(record, plot),
        _promoted(model, plot),
        _section("Trials (click a column to sort)", trial_table(record)),
    ]
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>sweep {_e(record.id)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SORT_SCRIPT}</script></body></html>")


def write_report(record: SweepRecord, model: PromotedModel | None, out: Path) -> Path:
    return write_text_atomically(Path(out), render(record, model), force=True)

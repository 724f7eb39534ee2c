"""An HTML report of an evaluation: the data, the anomaly scores and the recommendations.

:func:`write_report` takes the results of a prequential evaluation, the JSON document that
``anomrec evaluate anomalies`` or ``anomrec evaluate recommendations`` writes together with the
per-event scores behind it, and writes ``report.html``, one self-contained page (every figure
embedded as a base64 PNG, the style inline, no code to run, no link out of the page), and each
figure as ``<name>.png`` next to it. It re-runs nothing: every figure and number comes from the results.

Sections, by HTML id:

``data-overview``
    Rows, labelled share, the feature profile and its features (as the processor computes them),
    and the distribution of each feature for normal and labelled-anomalous events.
``anomaly-scores``
    The metrics of each detector and the ensemble; each one's score distribution against the
    threshold; ROC and precision-recall curves; alerts over event time; the top alerts and their
    reasons (the processor's own, from its recent normal events).
``recommendations``
    The metrics of each model; Recall@k over the stream; the most similar item pairs.

Machine-checkable: every number in a table carries ``data-metric`` (and ``data-model`` where it
belongs to one) and ``data-value``, the value as the evaluate JSON holds it, and the evaluate
documents are embedded as they are in ``<script type="application/json">`` blocks with the ids
``anomaly-evaluation`` and ``recommendation-evaluation``. The metrics are shown to the five decimals
the JSON keeps, so that the page and the JSON agree to the digit (the console table rounds to four).

The figures are drawn on matplotlib's Agg canvas (no window, no pyplot state). The same results
give the same bytes: the page holds no timestamp unless one is passed in.
"""

from __future__ import annotations

import html
import io
import math
from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
import orjson
from anomrec.batch.evaluate import StreamScores
from anomrec.batch.evaluate_reco import RecoMetrics
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.exceptions import ConfigError, DeliveryError
from anomrec.streaming.features import build_profile
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
from sklearn.metrics import precision_recall_curve, roc_curve

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: Alerts listed in the top-alerts table, and item pairs in the similar-items table.
TOP_ALERTS = 15
TOP_PAIRS = 20

DPI = 100
NORMAL, ANOMALOUS = "#4e79a7", "#e15759"
COLOURS = {
    "hst": "#59a14f",
    "iforest": "#b07aa1",
    "lof": "#f28e2b",
    "ensemble": "#222222",
    "hybrid": "#222222",
    "popularity": "#edc948",
    "itemitem": "#59a14f",
    "bpr": "#b07aa1",
    "isgd": "#f28e2b",
    "biased-mf": "#76b7b2",
}
DETECTOR_NAMES = {"hst": "HalfSpaceTrees", "iforest": "IsolationForest", "lof": "LOF"}
STYLE: dict[RcKeyType, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "savefig.dpi": DPI,
}


@dataclass(frozen=True, slots=True)
class AnomalyResults:
    """One run of ``anomrec evaluate anomalies``, as the report reads it.

    Parameters
    ----------
    doc
        The document the command writes (``--json-out``); the metrics shown are its figures.
    scores
        The per-event scores, alerts, times and feature vectors of the same run
        (:func:`~anomrec.batch.evaluate.run_prequential`).
    config
        The processor settings of the run.
    time_unit
        ``"seconds"`` when the event times are epoch seconds, ``"row"`` when they are row numbers.
    """

    doc: Mapping[str, Any]
    scores: StreamScores
    config: ProcessorConfig
    time_unit: str = "seconds"


@dataclass(frozen=True, slots=True)
class RecoResults:
    """One run of ``anomrec evaluate recommendations``, as the report reads it.

    Parameters
    ----------
    doc
        The document the command writes (``--json-out``).
    results
        The same run's results, traced (:func:`~anomrec.batch.evaluate_reco.evaluate` with
        ``trace=True``), in the document's order.
    item_names
        Readable names of item ids, where the data has them (film titles).
    """

    doc: Mapping[str, Any]
    results: Sequence[RecoMetrics]
    item_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReportFigure:
    """One figure: written as ``<name>.png`` and embedded in the page."""

    name: str
    png: bytes
    alt: str
    caption: str


@dataclass(frozen=True, slots=True)
class Report:
    """The page and its figures, before anything is written."""

    html: str
    figures: tuple[ReportFigure, ...]


def write_report(
    out: Path | str,
    *,
    anomalies: AnomalyResults | None = None,
    recommendations: RecoResults | None = None,
    title: str = "anomrec evaluation report",
    generated: str | None = None,
) -> Path:
    """Write ``out/report.html`` and ``out/<figure>.png``; return the page's path.

    Raises :class:`~anomrec.streaming.exceptions.DeliveryError` when the folder cannot be written.
    """
    report = render_report(
        anomalies=anomalies, recommendations=recommendations, title=title, generated=generated
    )
    folder = Path(out)
    page = folder / "report.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for fig in report.figures:
            (folder / f"{fig.name}.png").write_bytes(fig.png)
        page.write_text(report.html, encoding="utf-8")
    except OSError as exc:
        raise DeliveryError(
            f"cannot write the report to {str(folder)!r}: {exc.strerror or exc}; pass another folder"
        ) from None
    return page


def render_report(
    *,
    anomalies: AnomalyResults | None = None,
    recommendations: RecoResults | None = None,
    title: str = "anomrec evaluation report",
    generated: str | None = None,
) -> Report:
    """The page and its figures for the given results (at least one of the two).

    Examples
    --------
    >>> render_report()
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: a report needs results: anomaly results, recommendation ...
    """
    if anomalies is None and recommendations is None:
        raise ConfigError("a report needs results: anomaly results, recommendation results or both")
    figures: list[ReportFigure] = []
    sections: list[tuple[str, str, str]] = []
    blocks: list[str] = []
    sources: list[str] = []
    with mpl.rc_context(STYLE):
        if anomalies is not None:
            sources.append(f"anomalies: {anomalies.doc['source']}")
            sections.append(("data-overview", "Data overview", _data_overview(anomalies, figures)))
            sections.append(("anomaly-scores", "Anomaly scores", _anomaly_scores(anomalies, figures)))
            blocks.append(_json_block("anomaly-evaluation", anomalies.doc))
        if recommendations is not None:
            sources.append(f"recommendations: {recommendations.doc['source']}")
            sections.append(
                ("recommendations", "Recommendations", _recommendations(recommendations, figures))
            )
            blocks.append(_json_block("recommendation-evaluation", recommendations.doc))
    lede = "; ".join(sources) + (f". Generated {generated}." if generated else ".")
    nav = " · ".join(f'<a href="#{_e(sid)}">{_e(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{_e(sid)}">\n<h2>{_e(name)}</h2>\n{content}\n</section>'
        for sid, name, content in sections
    )
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header>\n<h1>{_e(title)}</h1>\n<p class="lede">{_e(lede)}</p>\n<nav>{nav}</nav>\n</header>\n'
        f"<main>\n{body}\n</main>\n" + "\n".join(blocks) + "\n</body>\n</html>\n"
    )
    return Report(page, tuple(figures))


# -- data overview ---------------------------------------------------------------------------


def _data_overview(run: AnomalyResults, figures: list[ReportFigure]) -> str:
    doc, scores, config = run.doc, run.scores, run.config
    labels = scores.labels
    events, labelled = int(doc["events"]), int(doc["labelled_anomalies"])
    facts: list[tuple[str, Any, str]] = [
        ("source", None, str(doc["source"])),
        ("events", events, f"{events:,}"),
        ("labelled_anomalies", labelled, f"{labelled:,}"),
        ("labelled_share", round(labelled / events, 6) if events else None, _percent(labelled / events)),
    ]
    if len(scores.times):
        first, last = float(scores.times.min()), float(scores.times.max())
        facts.append(
            ("time_span", [first, last], f"{_when(first, run.time_unit)} to {_when(last, run.time_unit)}")
        )
    profile = build_profile(config)
    summary = (type(profile).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    names = scores.feature_names or profile.feature_names
    parts = [
        _facts_table(facts, "Rows"),
        "<h3>Preprocessing</h3>",
        f"<p>Feature profile <code>{_e(profile.name)}</code>: {_e(summary)} Each event becomes a vector "
        f"of {len(names)} features, computed from the event and its entity's state before it (at most "
        f"{config.max_entities:,} entities; an entity idle for {_duration(config.entity_ttl_seconds)} of "
        "event time starts afresh):</p>",
        '<p class="features">' + ", ".join(f"<code>{_e(n)}</code>" for n in names) + "</p>",
        "<p>Inside the detectors, HalfSpaceTrees scales each feature to [0, 1] with a running min-max "
        "scaler, LOF with a robust scaler (median and interquartile range) fitted with each model, and "
        "IsolationForest takes the features as they are.</p>",
    ]
    if scores.vectors.size:
        parts.append(_feature_table(scores.vectors, labels, names))
        figures.append(_feature_figure(scores.vectors, labels, names))
        parts.append(_figure_html(figures[-1]))
    return "\n".join(parts)


def _feature_table(X: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> str:
    normal, anomalous = X[labels == 0], X[labels == 1]
    head = "<tr><th>feature</th><th>normal: median</th><th>normal: 5th–95th percentile</th>"
    head += "<th>labelled anomalies: median</th></tr>" if len(anomalous) else "</tr>"
    rows = []
    for j, name in enumerate(names):
        cells = [f"<th>{_e(name)}</th>"]
        if len(normal):
            lo, med, hi = np.quantile(normal[:, j], [0.05, 0.5, 0.95]).tolist()
            cells.append(_cell(med, _sig(med), metric="normal_median", feature=name))
            cells.append(_cell([lo, hi], f"{_sig(lo)} to {_sig(hi)}", metric="normal_p5_p95", feature=name))
        else:
            cells += ["<td>–</td>", "<td>–</td>"]
        if len(anomalous):
            med = float(np.median(anomalous[:, j]))
            cells.append(_cell(med, _sig(med), metric="anomalous_median", feature=name))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="numbers" id="feature-summary">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )


def _feature_figure(X: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> ReportFigure:
    d = len(names)
    cols = 4 if d > 4 else d
    rows = math.ceil(d / cols)
    fig = _figure(12, 2.1 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for j, name in enumerate(names):
        ax = axes[j]
        col = X[:, j]
        lo, hi = float(col.min()), float(col.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        ax.hist(col[labels == 0], bins=bins, color=NORMAL, alpha=0.75, label="normal")
        if (labels == 1).any():
            ax.hist(col[labels == 1], bins=bins, color=ANOMALOUS, alpha=0.85, label="labelled anomaly")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        ax.set_title(name, loc="left")
        ax.tick_params(labelsize=7)
    for ax in axes[d:]:
        ax.set_axis_off()
    axes[0].set_ylabel("events (log)")
    handles, texts = axes[0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="outside upper right", ncols=2)
    return ReportFigure(
        "feature-distributions",
        _png(fig),
        "Histograms of each feature, normal events and labelled anomalies",
        "Each feature as the processor computed it, over the whole stream: events per bin (log scale) "
        "for normal events and for labelled anomalies, over the feature's full range.",
    )


# -- anomaly scores --------------------------------------------------------------------------

_ANOMALY_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("scored", "scored", lambda v: f"{v:,}"),
    ("roc_auc", "ROC-AUC", lambda v: f"{v:.5f}"),
    ("average_precision", "AP", lambda v: f"{v:.5f}"),
    ("precision_at_k", "P@k", lambda v: f"{v:.5f}"),
    ("k", "k", lambda v: f"{v:,}"),
    ("recall_at_threshold", "recall at threshold", lambda v: f"{v:.5f}"),
    ("alerts_per_1000", "alerts / 1,000", lambda v: f"{v:.5f}"),
    ("false_alerts_per_1000_normal", "false alerts / 1,000 normal", lambda v: f"{v:.5f}"),
)


def _anomaly_scores(run: AnomalyResults, figures: list[ReportFigure]) -> str:
    doc, scores, config = run.doc, run.scores, run.config
    metrics: Mapping[str, Mapping[str, Any]] = doc["metrics"]
    alerted = scores.alerted
    live = np.arange(len(alerted)) >= scores.warmup_events
    true_alerts = int((alerted & (scores.labels == 1)).sum())
    weights = "by agreement (auto)" if config.weights == "auto" else config.weights
    mode = (
        "the combined score itself"
        if config.threshold_mode == "fixed"
        else "the combined score's percentile among the recent combined scores"
    )
    intro = (
        f"<p>Detectors <code>{_e(', '.join(config.detectors))}</code> score each event before learning "
        f"from it. Each raw score becomes its percentile among that detector's last "
        f"{config.calibration_window:,} scores; the percentiles combine by "
        f"<code>{_e(config.combine)}</code>, "
        f"weights {_e(weights)}. An event alerts when {_e(mode)} is at least {config.threshold:g} "
        f"(<code>threshold_mode {_e(config.threshold_mode)}</code>), never in the first "
        f"{config.warmup_events:,} events. A detector's own alerts, for its recall and alert rate, "
        f"compare its percentile with the same threshold. Ranking metrics use each detector's raw "
        f"score over the events it could score.</p>"
    )
    facts = [
        ("alerts", int(alerted.sum()), f"{int(alerted.sum()):,}"),
        ("alerts_on_labelled_anomalies", true_alerts, f"{true_alerts:,}"),
        ("events_after_warmup", int(live.sum()), f"{int(live.sum()):,}"),
        (
            "labelled_anomalies_after_warmup",
            int(scores.labels[live].sum()),
            f"{int(scores.labels[live].sum()):,}",
        ),
    ]
    parts = [
        intro,
        _metrics_table("anomaly-metrics", "detector", metrics, _ANOMALY_COLUMNS, DETECTOR_NAMES),
        _facts_table(facts, "Alerts"),
    ]
    for make in (_score_figure, _curves_figure, _alerts_figure):
        figures.append(make(run))
        parts.append(_figure_html(figures[-1]))
    parts.append(_top_alerts(run))
    return "\n".join(parts)


def _columns(scores: StreamScores) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, ranking score, thresholded score) for each detector, then the ensemble."""
    out = [(name, raw, scores.calibrated[name]) for name, raw in scores.raw.items()]
    out.append(("ensemble", scores.combined, scores.combined))
    return out


def _score_figure(run: AnomalyResults) -> ReportFigure:
    scores, config = run.scores, run.config
    columns = _columns(scores)
    fig = _figure(12, 3.0)
    axes = fig.subplots(1, len(columns), squeeze=False, sharey=True).ravel()
    scored = [~np.isnan(c) for _, _, c in columns]
    tails = [1.0 - c[ok] for (_, _, c), ok in zip(columns, scored, strict=True)]
    smallest = min((float(t[t > 0].min()) for t in tails if (t > 0).any()), default=1e-4)
    floor = max(smallest, 1e-9) / 1.5
    bins = np.logspace(math.log10(floor), 0, 50)
    ticks = [10.0**-i for i in range(math.floor(-math.log10(floor)) + 1)]  # scores 0, 0.9, 0.99, ...
    threshold_tail = 1.0 - config.threshold
    for ax, (name, _, _), unclipped, ok in zip(axes, columns, tails, scored, strict=True):
        labels = scores.labels[ok]
        tail = np.clip(unclipped, floor, 1.0)  # a score that rounds to 1 stays in the plot
        ax.hist(tail[labels == 0], bins=bins, color=NORMAL, alpha=0.75, label="normal")
        ax.hist(tail[labels == 1], bins=bins, color=ANOMALOUS, alpha=0.85, label="labelled anomaly")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1.0, floor)  # reversed: more anomalous to the right
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(_tail_label))
        ax.xaxis.set_minor_locator(NullLocator())
        if name != "ensemble" or config.threshold_mode == "fixed":
            ax.axvline(
                threshold_tail,
                color="#222222",
                linestyle="--",
                linewidth=1,
                label=f"threshold {config.threshold:g}",
            )
        ax.set_title(DETECTOR_NAMES.get(name, name), loc="left")
        ax.set_xlabel("percentile" if name != "ensemble" else "combined score")
    axes[0].set_ylabel("events (log)")
    handles, texts = axes[0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="outside upper right", ncols=3)
    note = (
        ""
        if config.threshold_mode == "fixed"
        else " The ensemble's alerts compare the percentile of its score among recent scores, so no line "
        "is drawn on it."
    )
    return ReportFigure(
        "score-distributions",
        _png(fig),
        "Score distributions of each detector and the ensemble, normal against labelled anomalies",
        "Each detector's calibrated score (its percentile among its recent scores) and the ensemble's "
        "combined score, on a log scale of 1 − score so that the top of the range spreads out (0.9, "
        "0.99, 0.999, ...): further right is more anomalous. Events per bin (log scale), normal and "
        f"labelled anomalies; the dashed line is the threshold {config.threshold:g}.{note}",
    )


def _curves_figure(run: AnomalyResults) -> ReportFigure:
    scores, metrics = run.scores, run.doc["metrics"]
    fig = _figure(12, 4.2)
    roc_ax, pr_ax = fig.subplots(1, 2)
    for name, ranking, _ in _columns(scores):
        ok = ~np.isnan(ranking)
        y, s = scores.labels[ok], ranking[ok]
        if not 0 < y.sum() < len(y):
            continue
        m = metrics[name]
        label = DETECTOR_NAMES.get(name, name)
        width = 2.0 if name == "ensemble" else 1.3
        colour = COLOURS.get(name)
        fpr, tpr, _ = roc_curve(y, s)
        roc_ax.plot(fpr, tpr, color=colour, linewidth=width, label=f"{label}  AUC {_or_dash(m['roc_auc'])}")
        precision, recall, _ = precision_recall_curve(y, s)
        pr_ax.step(
            recall,
            precision,
            where="post",
            color=colour,
            linewidth=width,
            label=f"{label}  AP {_or_dash(m['average_precision'])}",
        )
    roc_ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    roc_ax.set_title("ROC", loc="left")
    roc_ax.legend(loc="lower right")
    share = float(scores.labels.mean()) if len(scores.labels) else 0.0
    pr_ax.axhline(share, color="#999999", linestyle=":", linewidth=1, label=f"labelled share {share:.2%}")
    pr_ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.set_title("Precision-recall", loc="left")
    pr_ax.legend(loc="lower left")
    return ReportFigure(
        "roc-pr",
        _png(fig),
        "ROC and precision-recall curves of each detector and the ensemble",
        "ROC and precision-recall curves over the events each could score (raw score for a detector, "
        "combined score for the ensemble); the legend gives ROC-AUC and average precision as in the table.",
    )


def _alerts_figure(run: AnomalyResults) -> ReportFigure:
    scores = run.scores
    times, labels, alerted = scores.times, scores.labels, scores.alerted
    seconds = run.time_unit == "seconds"
    x = times / 86400.0 if seconds else times  # matplotlib dates are days since 1970-01-01
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, 61)
    caught = np.histogram(x[alerted & (labels == 1)], bins=edges)[0]
    false = np.histogram(x[alerted & (labels == 0)], bins=edges)[0]
    positives = np.histogram(x[labels == 1], bins=edges)[0]
    fig = _figure(12, 3.4)
    ax = fig.subplots()
    width = np.diff(edges)
    ax.bar(
        edges[:-1], caught, width=width, align="edge", color=ANOMALOUS, label="alerts on labelled anomalies"
    )
    ax.bar(
        edges[:-1],
        false,
        width=width,
        align="edge",
        bottom=caught,
        color=NORMAL,
        label="alerts on normal events",
    )
    ax.step(
        edges,
        np.append(positives, positives[-1]),
        where="post",
        color="#222222",
        linewidth=1.2,
        label="labelled anomalies",
    )
    if 0 < scores.warmup_events < len(x):
        ax.axvline(
            float(x[scores.warmup_events]),
            color="#777777",
            linestyle="--",
            linewidth=1,
            label="end of warm-up",
        )
    ax.set_ylabel("events per bucket")
    ax.set_xlim(lo, hi)
    if seconds:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("event time (UTC)")
        bucket = _duration((hi - lo) * 86400 / (len(edges) - 1)) + " of event time"
    else:
        ax.set_xlabel("row")
        bucket = f"{(hi - lo) / (len(edges) - 1):,.0f} rows"
    handles, texts = ax.get_legend_handles_labels()
    fig.legend(handles, texts, loc="outside upper right", ncols=4)
    return ReportFigure(
        "alerts-over-time",
        _png(fig),
        "Alerts per time bucket, split by label, with the labelled anomalies",
        f"Alerts per bucket of {bucket}, stacked: on labelled anomalies and on normal "
        "events; the line counts the labelled anomalies in each bucket, alerted or not.",
    )


def _top_alerts(run: AnomalyResults) -> str:
    scores = run.scores
    positions = np.flatnonzero(scores.alerted)
    if len(positions) != len(scores.alerts):  # never, for a run of run_prequential
        raise ValueError(f"{len(scores.alerts)} alerts for {len(positions)} alerted events")
    order = sorted(range(len(scores.alerts)), key=lambda i: (-scores.alerts[i].score, i))[:TOP_ALERTS]
    head = (
        "<tr><th>#</th><th>event</th><th>entity</th><th>event time</th><th>score</th><th>label</th>"
        "<th>detector percentiles</th><th>reasons: feature = value (typical range; deviation)</th></tr>"
    )
    rows = []
    for rank, i in enumerate(order, 1):
        alert, row = scores.alerts[i], int(positions[i])
        label = int(scores.labels[row])
        views = "<br>".join(
            _e(name) + " " + _cell_span(v.calibrated, _share(v.calibrated), metric="calibrated", model=name)
            for name, v in alert.detectors.items()
        )
        reasons = (
            "<br>".join(
                f"<code>{_e(r.feature)}</code> = "
                + _cell_span(r.value, _sig(r.value), metric="value", feature=r.feature)
                + f" (typical {_sig(r.typical_low)} to {_sig(r.typical_high)}; "
                + f"{r.deviation:+.1f})".replace("-", "−")
                for r in alert.reasons
            )
            or "–"
        )
        rows.append(
            f'<tr data-event="{_e(alert.event_id)}"><td>{rank}</td><td>{_e(alert.event_id)}</td>'
            f"<td>{_e(alert.entity)}</td><td>{_e(_when(alert.event_time, run.time_unit))}</td>"
            f"{_cell(alert.score, _share(alert.score), metric='score')}"
            f'<td class="{"anomaly" if label else "normal"}" data-metric="label" data-value="{label}">'
            f"{'anomaly' if label else 'normal'}</td><td>{views}</td><td>{reasons}</td></tr>"
        )
    note = (
        f"<p>The {min(TOP_ALERTS, len(order))} alerts with the highest combined score, of "
        f"{len(scores.alerts):,}. The reasons are the processor's: the features furthest from the "
        "typical range (5th to 95th percentile) of the recent events that did not alert, with the "
        "deviation in units that read like a z-score.</p>"
    )
    if not rows:
        return "<h3>Top alerts</h3>\n<p>No event alerted.</p>"
    return (
        "<h3>Top alerts</h3>\n" + note + '\n<table class="numbers alerts" id="top-alerts">\n'
        f"<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
    )


# -- recommendations -------------------------------------------------------------------------


def _recommendations(run: RecoResults, figures: list[ReportFigure]) -> str:
    doc = run.doc
    k = int(doc["k"])
    facts = [
        ("source", None, str(doc["source"])),
        ("interactions", doc["interactions"], f"{doc['interactions']:,}"),
        ("users", doc["users"], f"{doc['users']:,}"),
        ("items", doc["items"], f"{doc['items']:,}"),
        ("warmup_events", doc["warmup_events"], f"{doc['warmup_events']:,}"),
        ("k", k, str(k)),
    ]
    columns: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
        (f"recall_at_{k}", f"Recall@{k}", lambda v: f"{v:.5f}"),
        (f"ndcg_at_{k}", f"NDCG@{k}", lambda v: f"{v:.5f}"),
        ("coverage", "coverage", lambda v: f"{v:.5f}"),
        ("scored", "tests", lambda v: f"{v:,}"),
        ("hits", "hits", lambda v: f"{v:,}"),
        ("items_recommended", "items recommended", lambda v: f"{v:,}"),
    )
    intro = (
        f"<p>Each model, built fresh, streams the positive interactions in time order. The first "
        f"{doc['warmup_events']:,} are learned without testing; after that each interaction of a known "
        f"user with an item new to them is first a test (is the item in the user's top {k}, among the "
        "items they have not had?) and then learned. Popularity, item-item and BPR alone are the "
        "baselines of the hybrid.</p>"
    )
    parts = [
        intro,
        _facts_table(facts, "Data"),
        _metrics_table("recommendation-metrics", "model", doc["metrics"], columns, {}),
    ]
    traced = [m for m in run.results if m.trace is not None]
    if traced:
        figures.append(_recall_figure(traced, doc))
        parts.append(_figure_html(figures[-1]))
    parts.append(_pairs_table(run, traced))
    return "\n".join(parts)


def _recall_figure(results: Sequence[RecoMetrics], doc: Mapping[str, Any]) -> ReportFigure:
    k = int(doc["k"])
    fig = _figure(12, 3.8)
    total_ax, window_ax = fig.subplots(1, 2, sharey=True)
    longest = max(len(m.trace.hits) for m in results if m.trace is not None)
    window = max(100, longest // 20)
    settled = min(window, longest)  # before this many tests one hit swings the share a lot
    top = 0.0
    for m in results:
        assert m.trace is not None
        hits = m.trace.hits.astype(np.float64)
        if not len(hits):
            continue
        x = m.trace.tests
        colour = COLOURS.get(m.name)
        width = 2.0 if m.name == "hybrid" else 1.3
        value = doc["metrics"][m.name][f"recall_at_{k}"]
        cumulative = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        total_ax.plot(x, cumulative, color=colour, linewidth=width, label=f"{m.name}  {_or_dash(value)}")
        top = max(top, float(cumulative[settled - 1 :].max()) if len(cumulative) >= settled else 0.0)
        if len(hits) >= window:
            sums = np.cumsum(np.concatenate(([0.0], hits)))
            windowed = (sums[window:] - sums[:-window]) / window
            window_ax.plot(x[window - 1 :], windowed, color=colour, linewidth=width, label=m.name)
            top = max(top, float(windowed.max()))
    total_ax.set(xlabel="interactions streamed", ylabel=f"Recall@{k}")
    total_ax.set_title(f"Cumulative Recall@{k}", loc="left")
    total_ax.legend(loc="upper right", ncols=2)
    window_ax.set(xlabel="interactions streamed")
    window_ax.set_title(f"Recall@{k} over the last {window:,} tests", loc="left")
    total_ax.set_ylim(0, min(1.0, 1.2 * top) if top > 0 else 1.0)
    return ReportFigure(
        "recall-over-stream",
        _png(fig),
        f"Recall@{k} of each model over the stream",
        f"Left: Recall@{k} of all tests so far, at each test's position in the stream; its last value is "
        f"the table's (over the first {settled:,} tests, where one hit moves it a lot, it may run off the "
        f"top). Right: Recall@{k} over a sliding window of the last {window:,} tests, which shows drift "
        "that the cumulative figure smooths away.",
    )


def _pairs_table(run: RecoResults, traced: Sequence[RecoMetrics]) -> str:
    source = next((m for m in traced if m.trace is not None and m.trace.similar), None)
    if source is None or source.trace is None:
        return "<h3>Most similar items</h3>\n<p>No model with item neighbours was evaluated.</p>"
    names = run.item_names
    rows = []
    for rank, pair in enumerate(source.trace.similar[:TOP_PAIRS], 1):
        rows.append(
            f"<tr><td>{rank}</td><td>{_e(pair.first)}</td><td>{_e(names.get(pair.first, ''))}</td>"
            f"<td>{_e(pair.second)}</td><td>{_e(names.get(pair.second, ''))}</td>"
            f"{_cell(round(pair.similarity, 6), f'{pair.similarity:.3f}', metric='similarity')}"
            f"{_cell(pair.counts[0], f'{pair.counts[0]:,.0f}', metric='count_first')}"
            f"{_cell(pair.counts[1], f'{pair.counts[1]:,.0f}', metric='count_second')}</tr>"
        )
    return (
        "<h3>Most similar items</h3>\n"
        f"<p>The {len(rows)} most similar pairs of items in the <code>{_e(source.name)}</code> model at the "
        "end of the stream: each item's nearest neighbours, as the processor publishes them to the "
        "similar-items topic, among items with at least 5 interactions each.</p>\n"
        '<table class="numbers" id="similar-items">\n<thead><tr><th>#</th><th>item</th><th>name</th>'
        "<th>item</th><th>name</th><th>similarity</th><th>interactions</th><th>interactions</th></tr></thead>\n"
        "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
    )


# -- HTML and figure helpers -----------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _value(value: object) -> str:
    """A value as the JSON holds it, for ``data-value``."""
    return _e(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode())


def _attrs(value: object, metric: str, model: str | None, feature: str | None) -> str:
    attrs = f' data-metric="{_e(metric)}" data-value="{_value(value)}"'
    if model is not None:
        attrs = f' data-model="{_e(model)}"' + attrs
    if feature is not None:
        attrs = f' data-feature="{_e(feature)}"' + attrs
    return attrs


def _cell(
    value: object, text: str, *, metric: str, model: str | None = None, feature: str | None = None
) -> str:
    return f"<td{_attrs(value, metric, model, feature)}>{_e(text)}</td>"


def _cell_span(
    value: object, text: str, *, metric: str, model: str | None = None, feature: str | None = None
) -> str:
    return f"<span{_attrs(value, metric, model, feature)}>{_e(text)}</span>"


_FACT_LABELS = {
    "events_after_warmup": "events after the warm-up",
    "labelled_anomalies_after_warmup": "labelled anomalies after the warm-up",
    "warmup_events": "learned in the warm-up",
    "k": "list length k",
}


def _facts_table(facts: Sequence[tuple[str, Any, str]], caption: str) -> str:
    rows = []
    for metric, value, text in facts:
        label = _FACT_LABELS.get(metric, metric.replace("_", " "))
        cell = f"<td>{_e(text)}</td>" if value is None else _cell(value, text, metric=metric)
        rows.append(f"<tr><th>{_e(label)}</th>{cell}</tr>")
    return f'<table class="facts"><caption>{_e(caption)}</caption>\n' + "\n".join(rows) + "\n</table>"


def _metrics_table(
    table_id: str,
    what: str,
    metrics: Mapping[str, Mapping[str, Any]],
    columns: Sequence[tuple[str, str, Callable[[Any], str]]],
    long_names: Mapping[str, str],
) -> str:
    head = f"<tr><th>{_e(what)}</th>" + "".join(f"<th>{_e(title)}</th>" for _, title, _ in columns) + "</tr>"
    rows = []
    for name, values in metrics.items():
        shown = long_names.get(name, name)
        cells = [f'<th data-model="{_e(name)}">{_e(shown)}</th>']
        for key, _, fmt in columns:
            value = values.get(key)
            cells.append(_cell(value, "–" if value is None else fmt(value), metric=key, model=name))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="numbers" id="{_e(table_id)}">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )


def _figure_html(fig: ReportFigure) -> str:
    width, height = png_size(fig.png)
    data = b64encode(fig.png).decode("ascii")
    return (
        f'<figure id="figure-{_e(fig.name)}">\n'
        f'<img src="data:image/png;base64,{data}" alt="{_e(fig.alt)}" width="{width}" height="{height}" '
        f'data-png="{_e(fig.name)}.png">\n'
        f"<figcaption>{_e(fig.caption)}</figcaption>\n</figure>"
    )


def _json_block(block_id: str, doc: Mapping[str, Any]) -> str:
    # "<" cannot end the block when escaped; \u003c reads back as "<" in JSON.
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    text = text.replace("<", "\\u003c")
    return f'<script type="application/json" id="{_e(block_id)}">\n{text}\n</script>'


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its header.

    Examples
    --------
    >>> header = b"\\x89PNG\\r\\n\\x1a\\n" + bytes(4) + b"IHDR"
    >>> png_size(header + (640).to_bytes(4, "big") + (480).to_bytes(4, "big"))
    (640, 480)
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, explicitly: no window, whatever the backend setting
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _or_dash(value: float | None, fmt: str = "{:.5f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _share(value: float | None) -> str:
    """A score in [0, 1) to four decimals, or more when four would round it up to 1.

    Examples
    --------
    >>> _share(0.97), _share(0.99996), _share(None)
    ('0.9700', '0.99996', '–')
    """
    if value is None or math.isnan(value):
        return "–"
    digits = 4
    while digits < 8 and round(value, digits) >= 1.0 > value:
        digits += 1
    return f"{value:.{digits}f}"


def _sig(value: float) -> str:
    """Four significant digits, with a true minus sign; 0 for what is 0 but for rounding.

    Examples
    --------
    >>> _sig(-1.23456), _sig(1234567.0), _sig(1.6e-71)
    ('−1.235', '1.235e+06', '0')
    """
    return "0" if abs(value) < 1e-9 else f"{value:.4g}".replace("-", "−")


def _percent(share: float) -> str:
    return f"{share:.2%}"


def _when(t: float, unit: str) -> str:
    if unit == "seconds":
        return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"row {t:,.0f}"


def _duration(seconds: float) -> str:
    """A length of time in the unit that reads best.

    Examples
    --------
    >>> _duration(42), _duration(600), _duration(43_200), _duration(30 * 86400)
    ('42 s', '10 min', '12 h', '30 days')
    """
    for unit, size, limit in (("s", 1, 120), ("min", 60, 120 * 60), ("h", 3600, 72 * 3600)):
        if seconds < limit:
            return f"{seconds / size:,.3g} {unit}"
    return f"{seconds / 86400:,.3g} days"


def _tail_label(tail: float, _: object) -> str:
    """The score at a tick of the 1 − score axis: 0.1 is 0.9, 0.001 is 0.999."""
    digits = max(0, round(-math.log10(tail))) if tail > 0 else 0
    return "0" if digits == 0 else f"{1 - tail:.{digits}f}"


CSS = """
:root { color-scheme: light; --ink: #222; --muted: #666; --rule: #ddd; --zebra: #f6f6f6;
  --normal: #4e79a7; --anomaly: #e15759; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); background: #fff; }
header, main { max-width: 1240px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--rule); }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid var(--ink); }
h3 { font-size: 17px; margin: 24px 0 6px; }
.lede { color: var(--muted); margin: 0 0 8px; }
nav { margin-bottom: 12px; }
nav a { color: var(--normal); }
p { max-width: 980px; }
code { font-size: 13px; background: var(--zebra); padding: 0 3px; border-radius: 3px; }
.features code { display: inline-block; margin: 1px 0; }
table { border-collapse: collapse; margin: 12px 0 18px; font-size: 13.5px; }
caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid var(--ink); font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
td[data-value] { text-align: right; font-variant-numeric: tabular-nums; }
table.facts td, table.alerts td { text-align: left; }
table.facts th { font-weight: 500; color: var(--muted); }
table.facts td { font-variant-numeric: tabular-nums; }
td.anomaly { color: var(--anomaly); font-weight: 600; }
td.normal { color: var(--normal); }
figure { margin: 16px 0 24px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13.5px; max-width: 980px; margin-top: 4px; }
"""

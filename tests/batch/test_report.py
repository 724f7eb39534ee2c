"""The HTML report (``anomrec report``, ``--report`` on the evaluate commands).

Each command runs once per module, on small streams; the checks then read the page as a browser
would not: every section and figure is there, every image is a real PNG equal to the file next to
the page, nothing points outside the page, and every number in a table is the evaluate JSON's.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from anomrec.batch import evaluate as ev
from anomrec.batch import evaluate_reco as er
from anomrec.batch.report import AnomalyResults, RecoResults, png_size, render_report
from anomrec.streaming.config import ProcessorConfig

from anomrec.cli import main

# Short warm-ups so that a few thousand events are mostly scored (as in test_evaluate.py).
FAST = [
    "--window-size", "250", "--first-fit-after", "500", "--refit-every", "1000", "--swap-delay", "200",
    "--calibration-window", "3000", "--warmup-events", "800", "--refresh-every", "250",
]  # fmt: skip

SECTIONS = {
    "data-overview": {"feature-distributions"},
    "anomaly-scores": {"score-distributions", "roc-pr", "alerts-over-time"},
    "recommendations": {"recall-over-stream"},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ANOMALY_FORMATS = {
    "scored": "{:,}",
    "roc_auc": "{:.5f}",
    "average_precision": "{:.5f}",
    "precision_at_k": "{:.5f}",
    "k": "{:,}",
    "recall_at_threshold": "{:.5f}",
    "alerts_per_1000": "{:.5f}",
    "false_alerts_per_1000_normal": "{:.5f}",
}


@dataclass
class Cell:
    section: str | None
    attrs: dict[str, str]
    text: str = ""

    @property
    def value(self) -> Any:
        return json.loads(self.attrs["data-value"])


class Page(HTMLParser):
    """What the checks need from a report page, read with the standard library's parser."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[tuple[str | None, dict[str, str]]] = []
        self.cells: list[Cell] = []
        self.scripts: dict[str, str] = {}
        self.references: list[tuple[str, str]] = []
        self.tags: set[str] = set()
        self._section: str | None = None
        self._open: list[Cell] = []
        self._script: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        self.tags.add(tag)
        for name in ("href", "src", "action"):
            if name in attrs:
                self.references.append((tag, attrs[name]))
        if tag == "section":
            self._section = attrs.get("id")
            self.sections.append(attrs.get("id", ""))
        elif tag == "img":
            self.images.append((self._section, attrs))
        elif tag == "script":
            self._script = (f"{attrs.get('type')}#{attrs.get('id')}", [])
        if "data-metric" in attrs:
            cell = Cell(self._section, attrs)
            self.cells.append(cell)
            self._open.append(cell)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "script" and self._script is not None:
            self.scripts[self._script[0]] = "".join(self._script[1])
            self._script = None
        elif tag in ("td", "span") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script[1].append(data)
        for cell in self._open:
            cell.text += data

    def find(self, section: str, metric: str, model: str | None = None) -> list[Cell]:
        return [
            c
            for c in self.cells
            if c.section == section
            and c.attrs["data-metric"] == metric
            and c.attrs.get("data-model") == model
        ]

    def one(self, section: str, metric: str, model: str | None = None) -> Cell:
        found = self.find(section, metric, model)
        assert len(found) == 1, f"{len(found)} cells for {metric!r} of {model!r} in {section!r}"
        return found[0]


def read_page(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def check_report(
    folder: Path, html_text: str, *, anomalies: dict[str, Any] | None, reco: dict[str, Any] | None
) -> Page:
    """Every check of a written report against the evaluate documents; raises AssertionError."""
    page = read_page(html_text)
    expected = [
        s
        for s, doc in (("data-overview", anomalies), ("anomaly-scores", anomalies), ("recommendations", reco))
        if doc
    ]
    assert page.sections == expected
    # Self-contained: no script to run, no stylesheet or page to fetch, nothing outside the page.
    assert "link" not in page.tags and "iframe" not in page.tags
    for tag, ref in page.references:
        assert ref.startswith("#") or (tag == "img" and ref.startswith("data:image/png;base64,")), ref
    assert set(page.scripts) <= {
        "application/json#anomaly-evaluation",
        "application/json#recommendation-evaluation",
    }
    check_images(folder, page, expected)
    if anomalies is not None:
        assert json.loads(page.scripts["application/json#anomaly-evaluation"]) == anomalies
        check_anomaly_numbers(page, anomalies)
    if reco is not None:
        assert json.loads(page.scripts["application/json#recommendation-evaluation"]) == reco
        check_reco_numbers(page, reco)
    return page


def check_images(folder: Path, page: Page, sections: list[str]) -> None:
    by_section: dict[str, set[str]] = {s: set() for s in sections}
    for section, attrs in page.images:
        assert section in by_section, f"an image outside the sections: {attrs.get('data-png')}"
        name = attrs["data-png"]
        by_section[section].add(name.removesuffix(".png"))
        png = base64.b64decode(attrs["src"].removeprefix("data:image/png;base64,"), validate=True)
        assert png[:8] == PNG_MAGIC
        width, height = png_size(png)
        assert 600 <= width <= 2000 and 200 <= height <= 2000, (name, width, height)
        assert (int(attrs["width"]), int(attrs["height"])) == (width, height)
        assert attrs["alt"]
        assert (folder / name).read_bytes() == png, f"{name} on disk is not the embedded image"
    assert by_section == {s: SECTIONS[s] for s in sections}
    on_disk = {p.name for p in folder.glob("*.png")}
    assert on_disk == {f"{n}.png" for s in sections for n in SECTIONS[s]}


def check_anomaly_numbers(page: Page, doc: dict[str, Any]) -> None:
    section = "data-overview"
    assert page.one(section, "events").value == doc["events"]
    assert page.one(section, "events").text == f"{doc['events']:,}"
    assert page.one(section, "labelled_anomalies").value == doc["labelled_anomalies"]
    share = page.one(section, "labelled_share")
    assert share.value == round(doc["labelled_anomalies"] / doc["events"], 6)
    assert share.text == f"{doc['labelled_anomalies'] / doc['events']:.2%}"
    features = {c.attrs["data-feature"] for c in page.find(section, "normal_median")}
    assert features == set(doc["config"]["features"] or features) and len(features) >= 3

    section = "anomaly-scores"
    shown = {
        c.attrs["data-model"]
        for c in page.cells
        if c.section == section and c.attrs["data-metric"] == "roc_auc"
    }
    assert shown == set(doc["metrics"])
    for model, metrics in doc["metrics"].items():
        for metric, fmt in ANOMALY_FORMATS.items():
            cell = page.one(section, metric, model)
            assert cell.value == metrics[metric], (model, metric)
            assert cell.text == ("–" if metrics[metric] is None else fmt.format(metrics[metric])), (
                model,
                metric,
            )
    # The alert counts agree with the ensemble's rates in the JSON.
    ensemble = doc["metrics"]["ensemble"]
    live = page.one(section, "events_after_warmup").value
    assert live == doc["events"] - doc["config"]["warmup_events"]
    alerts = page.one(section, "alerts").value
    assert round(alerts * 1000 / live, 5) == ensemble["alerts_per_1000"]
    caught = page.one(section, "alerts_on_labelled_anomalies").value
    positives = page.one(section, "labelled_anomalies_after_warmup").value
    assert round(caught / positives, 5) == ensemble["recall_at_threshold"]
    # The top alerts: highest score first, each with its reasons.
    scores = [c.value for c in page.find(section, "score")]
    assert 0 < len(scores) <= 15 and scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)
    assert page.find(section, "value"), "the top alerts give no reasons"


def check_reco_numbers(page: Page, doc: dict[str, Any]) -> None:
    section = "recommendations"
    for key in ("interactions", "users", "items", "warmup_events", "k"):
        assert page.one(section, key).value == doc[key], key
    k = doc["k"]
    formats = {
        f"recall_at_{k}": "{:.5f}",
        f"ndcg_at_{k}": "{:.5f}",
        "coverage": "{:.5f}",
        "scored": "{:,}",
        "hits": "{:,}",
    }
    shown = {
        c.attrs["data-model"]
        for c in page.cells
        if c.section == section and c.attrs["data-metric"] == f"recall_at_{k}"
    }
    assert shown == set(doc["metrics"])
    for model, metrics in doc["metrics"].items():
        for metric, fmt in formats.items():
            cell = page.one(section, metric, model)
            assert cell.value == metrics[metric] and cell.text == fmt.format(metrics[metric]), (model, metric)
    similarity = [c.value for c in page.find(section, "similarity")]
    assert 0 < len(similarity) <= 20 and similarity == sorted(similarity, reverse=True)
    assert all(0 < s <= 1.0 + 1e-9 for s in similarity)


# -- the runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``anomrec evaluate anomalies synthetic --report`` on 6,000 events."""
    base = tmp_path_factory.mktemp("anomalies")
    out, folder = base / "metrics.json", base / "report"
    argv = ["evaluate", "anomalies", "synthetic", "--events", "6000", "--users", "200", *FAST]
    assert main([*argv, "--json-out", str(out), "--report", str(folder)]) == 0
    return folder, orjson.loads(out.read_bytes())


@pytest.fixture(scope="module")
def reco_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``anomrec evaluate recommendations synthetic --report`` on 6,000 interactions."""
    base = tmp_path_factory.mktemp("reco")
    out, folder = base / "metrics.json", base / "report"
    argv = ["evaluate", "recommendations", "synthetic", "--events", "6000"]
    assert main([*argv, "--json-out", str(out), "--report", str(folder)]) == 0
    return folder, orjson.loads(out.read_bytes())


def labelled_csv(path: Path, n: int = 4000, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 0.03).astype(int)
    X[y == 1, 1] += rng.choice([-7.0, 7.0], size=int(y.sum()))
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "is_fraud": y})
    frame.to_csv(path, index=False)
    return path


def test_evaluate_anomalies_writes_a_report_that_matches_its_json(
    anomaly_run: tuple[Path, dict[str, Any]],
) -> None:
    folder, doc = anomaly_run
    page = check_report(
        folder, (folder / "report.html").read_text(encoding="utf-8"), anomalies=doc, reco=None
    )
    assert doc["events"] == 6000 and doc["source"] == "synthetic"
    # The synthetic stream carries event times: the table gives dates, not row numbers.
    times = [c for c in page.cells if c.attrs["data-metric"] == "time_span"]
    assert len(times) == 1 and times[0].text.startswith("2026-01-01 ")


def test_evaluate_recommendations_writes_a_report_that_matches_its_json(
    reco_run: tuple[Path, dict[str, Any]],
) -> None:
    folder, doc = reco_run
    check_report(folder, (folder / "report.html").read_text(encoding="utf-8"), anomalies=None, reco=doc)
    assert set(doc["metrics"]) == {"hybrid", "popularity", "itemitem", "bpr"}
    assert doc["interactions"] == 6000 and doc["source"] == "synthetic"


def test_the_report_command_writes_both_evaluations_and_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, folder = labelled_csv(tmp_path / "flows.csv"), tmp_path / "out" / "report"
    argv = ["report", "--csv", str(csv), "--label-column", "is_fraud", *FAST]
    argv += ["--recommendations", "synthetic", "--interactions", "3000", "--models", "hybrid,popularity"]
    assert main([*argv, "--out", str(folder)]) == 0
    assert f"report written to {folder / 'report.html'}" in capsys.readouterr().err
    anomalies = orjson.loads((folder / "anomaly-evaluation.json").read_bytes())
    reco = orjson.loads((folder / "recommendation-evaluation.json").read_bytes())
    assert anomalies["config"]["features"] == ["a", "b", "c"] and set(reco["metrics"]) == {
        "hybrid",
        "popularity",
    }
    html_text = (folder / "report.html").read_text(encoding="utf-8")
    page = check_report(folder, html_text, anomalies=anomalies, reco=reco)
    # A CSV without --time-column counts rows, not seconds.
    assert [c.text for c in page.cells if c.attrs["data-metric"] == "time_span"] == ["row 0 to row 3,999"]
    assert "Alerts per bucket of 67 rows" in html_text


def test_the_checks_fail_on_a_missing_section_a_wrong_number_or_a_stray_image(
    anomaly_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, doc = anomaly_run
    good = (folder / "report.html").read_text(encoding="utf-8")
    auc = doc["metrics"]["ensemble"]["roc_auc"]
    broken = [
        good.replace('<section id="data-overview">', '<section id="overview">'),
        good.replace(f'data-value="{auc}">{auc:.5f}<', f'data-value="{auc}">{auc - 0.01:.5f}<'),
        re.sub(r'(data-model="ensemble" data-metric="roc_auc" data-value=")[^"]*', r"\g<1>0.5", good),
        good.replace('data-png="roc-pr.png"', 'data-png="score-distributions.png"'),
        good.replace("</main>", '<a href="https://example.com/">elsewhere</a></main>'),
    ]
    for text in broken:
        assert text != good
        with pytest.raises(AssertionError):
            check_report(folder, text, anomalies=doc, reco=None)
    changed = {**doc, "events": doc["events"] + 1}
    with pytest.raises(AssertionError):
        check_report(folder, good, anomalies=changed, reco=None)


def test_the_same_results_give_the_same_page() -> None:
    config = ProcessorConfig(
        first_fit_after=500, refit_every=1000, swap_delay=200, window_size=250, warmup_events=800,
        calibration_window=3000, refresh_every=250, recommend=False,
    )  # fmt: skip
    config, events, labels = ev.dataset_stream("synthetic", config, events=2500, users=100)
    scores = ev.run_prequential(config, events, labels)
    doc = {"source": "synthetic", "events": len(events), "labelled_anomalies": int(labels.sum())}
    doc["metrics"] = {m.name: m.to_dict() for m in ev.evaluate(scores)}
    stream = er.dataset_stream("synthetic", events=2000)
    results = er.evaluate(stream, ["hybrid", "popularity"], trace=True)
    reco_doc = {"source": "synthetic", "interactions": len(stream), "users": stream.n_users}
    reco_doc |= {
        "items": stream.n_items,
        "warmup_events": 400,
        "k": 10,
        "metrics": {m.name: m.to_dict() for m in results},
    }

    def render() -> Any:
        return render_report(
            anomalies=AnomalyResults(doc, scores, config),
            recommendations=RecoResults(reco_doc, results, stream.item_names),
        )

    first, second = render(), render()
    assert first.html == second.html
    assert [f.png for f in first.figures] == [f.png for f in second.figures]
    # The traced run's last cumulative Recall@10 is the figure the table shows.
    hybrid = results[0]
    assert hybrid.trace is not None and math.isclose(hybrid.trace.hits.mean(), hybrid.recall)
    assert len(hybrid.trace.tests) == hybrid.tests


def test_the_page_escapes_what_it_shows(tmp_path: Path) -> None:
    stream = er.InteractionStream(
        ["<u>", "<u>", "v", "v", "w", "w"] * 3, ["<b>x</b>", "y&z", "<b>x</b>", "y&z", "<b>x</b>", "y&z"] * 3,
        np.arange(18.0), source="<script>",
    )  # fmt: skip
    results = er.evaluate(stream, ["itemitem"], warmup=0.3, trace=True)
    doc = {"source": "<script>alert(1)</script>", "interactions": 18, "users": 3, "items": 2}
    doc |= {"warmup_events": 5, "k": 10, "metrics": {m.name: m.to_dict() for m in results}}
    report = render_report(recommendations=RecoResults(doc, results, {"y&z": "</td><script>"}))
    assert "<script>alert" not in report.html and "<b>x</b>" not in report.html
    assert "&lt;b&gt;x&lt;/b&gt;" in report.html and "&lt;/td&gt;&lt;script&gt;" in report.html
    page = read_page(report.html)
    assert set(page.scripts) == {"application/json#recommendation-evaluation"}
    assert json.loads(page.scripts["application/json#recommendation-evaluation"]) == doc


# -- the flags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["evaluate", "anomalies", "synthetic", "--report", "/proc/nope/report"],
            "cannot make the report folder '/proc/nope/report'",
        ),
        (["evaluate", "recommendations", "synthetic", "--report", "/proc/nope/r"], "pass another --report"),
        (["report", "--out", "/proc/nope/report"], "pass another --out"),
        (["report", "--out", "{file}"], "is a file, not a folder"),
        (["evaluate", "anomalies", "--report", "{file}"], "--report '{file}' is a file, not a folder"),
        (
            ["report", "--out", "{dir}", "--recommendations", "synthetic", "--models", "hybrid,svd"],
            "unknown model 'svd' in --models",
        ),
        (["report", "--out", "{dir}", "--models", "bpr"], "--models applies to the recommendations"),
        (
            ["report", "--out", "{dir}", "--anomalies", "shuttle", "--csv", "x.csv"],
            "give a dataset name or --csv, not both",
        ),
        (
            ["evaluate", "recommendations", "synthetic", "--min-rating", "3"],
            "--min-rating applies to movielens and --csv",
        ),
    ],
)
def test_bad_report_options_say_what_was_wrong(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "taken"
    file.write_text("not a folder")
    values = {"file": str(file), "dir": str(tmp_path / "report")}
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anomrec: error: ") and says.format(**values) in err
    assert not (tmp_path / "report" / "report.html").exists()


def test_argument_errors_of_the_report_command_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["report", "--out", "x", "--recommendations", "netflix"])
    assert info.value.code == 2 and "invalid choice: 'netflix'" in capsys.readouterr().err

"""`anomrec fit` and `anomrec run --warm-start`: versioned, checksummed models, verified before use."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from anomrec.batch.fit import fit
from anomrec.streaming import artifacts
from anomrec.streaming.artifacts import load_models
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.exceptions import ArtifactError
from anomrec.streaming.features import TransactionsProfile
from anomrec.streaming.recording import RecordedRecord, RecordingWriter
from anomrec.streaming.sample import generate_transactions
from anomrec.streaming.testing import ListSink, ListSource, run

from anomrec.cli import main

SETTINGS = {
    "first_fit_after": 300, "refit_every": 600, "swap_delay": 50, "warmup_events": 150, "window_size": 250,
    "n_trees": 10, "height": 8, "iforest_trees": 30, "calibration_window": 1000, "refresh_every": 100,
    "similar_every": 100,
}  # fmt: skip
CFG = ProcessorConfig(**SETTINGS)  # type: ignore[arg-type]
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
STREAM = list(generate_transactions(4000, seed=5))
HISTORY, LATER = STREAM[:3000], STREAM[3000:]


def write_recording(path: Path, docs: list[dict[str, object]], bad: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    with RecordingWriter(path, topic="events", partitions=1) as writer:
        for i, doc in enumerate(docs):
            writer.add(RecordedRecord(0, i, None, str(doc["card_id"]).encode(), orjson.dumps(doc)))
        for j, value in enumerate(bad):
            writer.add(RecordedRecord(0, len(docs) + j, None, None, value))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models fitted by the command line on HISTORY plus two bad records."""
    folder = tmp_path_factory.mktemp("fit")
    recording = write_recording(folder / "history.jsonl.gz", HISTORY, [b"{oops", b"[1]"])
    assert main(["fit", "--source", str(recording), "--out", str(folder / "models"), "--quiet", *FLAGS]) == 0
    return folder / "models"


def test_fit_writes_a_version_with_a_manifest_of_versions_schema_range_and_checksums(models: Path) -> None:
    (version,) = sorted(p.name for p in models.iterdir())
    assert version == "0001"
    manifest = json.loads((models / version / "manifest.json").read_text())
    assert manifest["format"] == artifacts.FORMAT and manifest["version"] == "0001"
    assert manifest["feature_schema"] == {
        "profile": "transactions",
        "features": list(TransactionsProfile().feature_names),
    }
    assert manifest["training"]["events"] == 3000
    assert manifest["training"]["bad_records"] == {"json": 1, "not-object": 1}
    assert manifest["training"]["first_event"]["event_id"] == HISTORY[0]["event_id"]
    assert manifest["training"]["last_event"]["event_id"] == HISTORY[-1]["event_id"]
    assert set(manifest["models"]) == {"hst", "iforest", "lof", "reco"}
    assert manifest["models"]["iforest"].startswith("iforest-") and manifest["settings"]["n_trees"] == 10
    names = {p.name for p in (models / version).iterdir()} - {"manifest.json"}
    assert names == set(manifest["files"]) == {
        "features.npz", "ensemble.npz", "detector-hst.npz", "detector-iforest.npz", "detector-lof.npz",
        "recommender.npz",
    }  # fmt: skip
    for name, entry in manifest["files"].items():
        data = (models / version / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_each_fit_is_a_new_version_and_the_folder_loads_the_latest(tmp_path: Path) -> None:
    for _ in range(2):
        fitted = fit(CFG, [decoded(HISTORY)], source="test")
        fitted.save(tmp_path)
        fitted.processor.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001", "0002"]
    assert load_models(tmp_path, CFG).path == tmp_path / "0002"
    assert load_models(tmp_path / "0001", CFG).version == "0001"


def decoded(docs: list[dict[str, object]]) -> list:  # type: ignore[type-arg]
    decoder = EventDecoder(CFG)
    return [decoder.from_dict(d) for d in docs]


def test_a_warm_start_continues_exactly_where_the_fit_left_off(models: Path) -> None:
    # The reference: one processor over the history, refitted at its end, then the later events.
    fitted = fit(CFG, [decoded(HISTORY)], source="test")
    with fitted.processor as proc:
        expected = proc.process(decoded(LATER))
    warm = ListSink()
    run(dataclasses.replace(CFG, warm_start=str(models)), ListSource(LATER), warm)
    assert [a.to_dict() for a in warm.alerts] == [a.to_dict() for a in expected.alerts]
    assert len(warm.alerts) > 0
    assert {a.model_versions["iforest"] for a in warm.alerts} >= {load_models(models, CFG).models["iforest"]}
    # Cold, the same 1,000 events first warm up (no score, no alert for the first 300 at least).
    cold = ListSink()
    run(CFG, ListSource(LATER), cold)
    first_cold = min(
        (LATER.index(next(d for d in LATER if d["event_id"] == a.event_id)) for a in cold.alerts),
        default=None,
    )
    first_warm = min(LATER.index(next(d for d in LATER if d["event_id"] == a.event_id)) for a in warm.alerts)
    assert first_warm < 300 and (first_cold is None or first_cold >= CFG.warmup_events)


def test_run_warm_start_on_the_command_line(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write_recording(tmp_path / "later.jsonl", LATER)
    alerts = tmp_path / "alerts.jsonl"
    args = ["run", "--source", str(recording), "--warm-start", str(models), "--alerts-out", str(alerts)]
    assert main([*args, "--recommendations-out", str(tmp_path / "r.jsonl"), "--quiet", *FLAGS]) == 0
    lines = alerts.read_bytes().splitlines()
    assert lines and all(orjson.loads(line)["event_id"] for line in lines)


def tamper(folder: Path, name: str) -> None:
    path = folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["detector-iforest.npz", "features.npz", "recommender.npz"])
def test_a_tampered_model_file_is_refused_before_anything_is_loaded(
    models: Path,
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = tmp_path / "models"
    copy.mkdir()
    (copy / "0001").mkdir()
    for f in (models / "0001").iterdir():
        (copy / "0001" / f.name).write_bytes(f.read_bytes())
    tamper(copy / "0001", name)

    def must_not_load(*_: object) -> None:
        raise AssertionError("an archive was opened before every checksum was verified")

    monkeypatch.setattr(artifacts, "decode_state", must_not_load)
    with pytest.raises(ArtifactError, match=rf"model file .*{name} does not match its manifest"):
        load_models(copy, CFG)
    recording = write_recording(tmp_path / "later.jsonl", LATER[:10])
    args = ["run", "--source", str(recording), "--warm-start", str(copy), "--alerts-out", str(tmp_path / "a")]
    assert main([*args, "--quiet", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert f"{name} does not match its manifest" in err and "refused" in err
    assert not (tmp_path / "a").exists() or (tmp_path / "a").read_bytes() == b""


def test_a_missing_file_or_manifest_is_refused(models: Path, tmp_path: Path) -> None:
    copy = tmp_path / "0001"
    copy.mkdir()
    for f in (models / "0001").iterdir():
        if f.name != "detector-lof.npz":
            (copy / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ArtifactError, match=r"detector-lof\.npz cannot be read"):
        load_models(copy, CFG)
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no models in"):
        load_models(tmp_path, CFG)
    with pytest.raises(ArtifactError, match="it is not a folder"):
        load_models(tmp_path / "nowhere", CFG)


def test_models_of_another_feature_schema_or_other_settings_are_refused(models: Path) -> None:
    generic = dataclasses.replace(CFG, profile="generic", features=("amount",))
    with pytest.raises(
        ArtifactError,
        match=r"fitted on profile 'transactions' .* this configuration computes profile 'generic'",
    ):
        load_models(models, generic)
    loaded = load_models(models, dataclasses.replace(CFG, n_trees=20))
    with pytest.raises(ArtifactError, match=r"n_trees=20 \(the state's: 10\)"):
        loaded.processor(dataclasses.replace(CFG, n_trees=20))


def test_fit_on_a_csv_uses_the_generic_profile_and_too_little_data_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=800), "b": rng.normal(size=800), "label": 0})
    frame.to_csv(tmp_path / "history.csv", index=False)
    out = tmp_path / "models"
    assert (
        main(
            [
                "fit",
                "--csv",
                str(tmp_path / "history.csv"),
                "--label-column",
                "label",
                "--out",
                str(out),
                "--quiet",
                *FLAGS,
            ]
        )
        == 0
    )
    manifest = json.loads((out / "0001" / "manifest.json").read_text())
    assert manifest["feature_schema"] == {"profile": "generic", "features": ["a", "b"]}
    assert manifest["training"]["events"] == 800
    other = dataclasses.replace(CFG, profile="generic", features=("a", "c"))
    with pytest.raises(ArtifactError, match=r"features \['a', 'b'\], but .* features \['a', 'c'\]"):
        load_models(out, other)
    assert load_models(out, dataclasses.replace(other, features=("a", "b"))).version == "0001"
    frame.head(200).to_csv(tmp_path / "short.csv", index=False)
    assert (
        main(
            ["fit", "--csv", str(tmp_path / "short.csv"), "--out", str(tmp_path / "none"), "--quiet", *FLAGS]
        )
        == 2
    )
    assert "200 good events: too few to fit on" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
    assert main(["fit", "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "--source RECORDING or --csv FILE" in capsys.readouterr().err

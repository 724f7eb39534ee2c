from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from anomrec.cli import main


def test_embedded_run_prints_summary_and_writes_alerts(tmp_path: Path) -> None:
    out = tmp_path / "out" / "alerts.jsonl"
    lists = tmp_path / "out" / "recommendations.jsonl"
    script = Path(sys.executable).with_name("anomrec")
    result = subprocess.run(
        [
            str(script),
            "run",
            "--events",
            "8000",
            "--alerts-out",
            str(out),
            "--recommendations-out",
            str(lists),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = result.stdout
    alerts = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert re.search(rf"alerts\s+{len(alerts):,}\n", summary)
    assert re.search(r"events\s+8,000\n", summary)
    assert re.search(r"precision\s+\d\.\d{3}", summary) and re.search(r"recall\s+\d\.\d{3}", summary)
    assert "ev/s" in result.stderr, "the progress line shows the rate"
    assert alerts and all(a["score"] >= a["threshold"] for a in alerts)
    # The sample transactions carry a user and an item: the run learns them, gating the alerted.
    updates = [orjson.loads(line) for line in lists.read_bytes().splitlines()]
    assert re.search(rf"lists\s+{len(updates):,}\s+recommendation updates", summary)
    assert re.search(rf"gated\s+{len(alerts):,}\s", summary)
    assert updates and {"user", "items", "model_version", "event_time", "trigger_event_id"} == set(
        updates[-1]
    )


def test_the_same_run_twice_writes_the_same_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (first, second):
        lists = str(path.with_suffix(".lists"))
        assert (
            main(
                [
                    "run",
                    "--events",
                    "5000",
                    "--quiet",
                    "--alerts-out",
                    str(path),
                    "--recommendations-out",
                    lists,
                ]
            )
            == 0
        )
    assert first.read_bytes() == second.read_bytes() != b""
    assert first.with_suffix(".lists").read_bytes() == second.with_suffix(".lists").read_bytes() != b""


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["run", "--threshold", "2"], {}, "threshold=2.0 is out of range: expected a number in (0, 1)"),
        (["run"], {"ANOMREC_SEED": "lots"}, "ANOMREC_SEED='lots' is not a valid int"),
        (["run", "--features", "amount,amount"], {}, "features='amount,amount': expected distinct"),
        (
            ["run", "--alerts-out", "/proc/nope/alerts.jsonl"],
            {},
            "cannot write alerts to '/proc/nope/alerts.jsonl'",
        ),
        (
            ["run", "--recommendations-out", "/proc/nope/lists.jsonl"],
            {},
            "cannot write recommendations to '/proc/nope/lists.jsonl'",
        ),
        (["run"], {"ANOMREC_RECO_GATING": "maybe"}, "ANOMREC_RECO_GATING='maybe' is not true or false"),
        (["run"], {"ANOMREC_RECO_MODEL": "svd"}, "reco_model='svd' is not one of: hybrid"),
    ],
)
def test_bad_options_say_what_was_wrong(
    argv: list[str],
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([*argv, "--quiet", "--events", "10"]) == 2
    assert says in capsys.readouterr().err


def test_argument_errors_exit_2_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--events", "0"])
    assert info.value.code == 2
    assert "'0': expected a number >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["run", "--reco-gating", "maybe"])
    assert info.value.code == 2
    assert "'maybe' is not true or false: use true or false" in capsys.readouterr().err


def test_unreachable_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers there
        assert main(["run", "--bootstrap-servers", f"127.0.0.1:{port}"]) == 2
    assert f"no Kafka broker answered at bootstrap_servers='127.0.0.1:{port}'" in capsys.readouterr().err

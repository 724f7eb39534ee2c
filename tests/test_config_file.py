"""Settings from a TOML file, the environment and flags; ``anomrec config show``; secrets masked."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import tomllib
from pathlib import Path

import pytest
from anomrec.streaming.config import CONNECTION_SETTINGS, MASK, ProcessorConfig, Secret, mask_in_logs
from anomrec.streaming.core import RUNTIME_SETTINGS
from anomrec.streaming.exceptions import ConfigError

from anomrec.cli import main

PASSWORD = "Sw0rdfish-9f2e"  # distinctive: looked for in everything printed or logged
SASL = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-256",
    "sasl_username": "alice",
}


def write(tmp_path: Path, text: str, name: str = "anomrec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence and sources ---------------------------------------------------------------------


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    path = write(tmp_path, 'group_id = "from-file"\nthreshold = 0.9\ninput_topic = "tx"\n')
    env = {"ANOMREC_GROUP_ID": "from-env", "ANOMREC_THRESHOLD": "0.95"}
    cfg, sources = ProcessorConfig.resolve(env, {"threshold": 0.97, "seed": None}, path)
    assert (cfg.threshold, cfg.group_id, cfg.input_topic, cfg.seed) == (0.97, "from-env", "tx", 42)
    assert sources == {
        "threshold": "flag --threshold",
        "group_id": "env ANOMREC_GROUP_ID",
        "input_topic": f"file {path}",
    }


def test_the_file_can_be_named_by_the_environment_and_the_flag_wins(tmp_path: Path) -> None:
    by_env = write(tmp_path, 'group_id = "named-by-env"\n', "env.toml")
    by_flag = write(tmp_path, 'group_id = "named-by-flag"\n', "flag.toml")
    env = {"ANOMREC_CONFIG": str(by_env)}
    assert ProcessorConfig.from_sources(env).group_id == "named-by-env"
    assert ProcessorConfig.from_sources(env, config_file=by_flag).group_id == "named-by-flag"


def test_toml_types_become_the_fields_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'detectors = ["hst", "lof"]\nfeatures = "amount, hour"\nprofile = "generic"\n'
        "debounce_seconds = 30\nrecommend = false\n"
        'bootstrap_servers = ["k1:9092", "k2:9092"]\n',
    )
    cfg = ProcessorConfig.from_sources({}, config_file=path)
    assert cfg.detectors == ("hst", "lof") and cfg.features == ("amount", "hour")
    assert cfg.debounce_seconds == 30.0 and isinstance(cfg.debounce_seconds, float)
    assert cfg.recommend is False and cfg.bootstrap_servers == "k1:9092,k2:9092"


def test_the_command_line_applies_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'group_id = "from-file"\nalerts_topic = "file-alerts"\nn_trees = 30\n')
    monkeypatch.setenv("ANOMREC_GROUP_ID", "from-env")
    monkeypatch.setenv("ANOMREC_ALERTS_TOPIC", "env-alerts")
    assert main(["config", "show", "--config", str(path), "--alerts-topic", "flag-alerts"]) == 0
    shown = capsys.readouterr().out
    assert 'alerts_topic = "flag-alerts"  # from flag --alerts-topic\n' in shown
    assert 'group_id = "from-env"  # from env ANOMREC_GROUP_ID\n' in shown
    assert f"n_trees = 30  # from file {path}\n" in shown
    assert "seed = 42  # default\n" in shown


# -- errors ---------------------------------------------------------------------------------------


def test_an_unknown_key_names_the_closest_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "treshold = 0.9\n")
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.from_sources({}, config_file=path)
    assert str(info.value) == (
        f"unknown setting 'treshold' in config file {str(path)!r} (did you mean 'threshold'?): "
        "expected the name of a setting, as anomrec config show lists them"
    )


def test_a_table_is_refused_the_file_is_flat(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nsasl_username = "alice"\n')
    with pytest.raises(ConfigError, match=r"unknown setting 'kafka' \(a table: the file is flat"):
        ProcessorConfig.from_sources({}, config_file=path)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('n_trees = "many"', 'n_trees="many" from file {path}: expected a whole number'),
        ("n_trees = 2.5", "n_trees=2.5 from file {path}: expected a whole number"),
        ("threshold = true", "threshold=true from file {path}: expected a number"),
        ("recommend = 1", "recommend=1 from file {path}: expected true or false"),
        ("group_id = 7", "group_id=7 from file {path}: expected a string"),
        (
            "detectors = [1, 2]",
            'detectors=[1, 2] from file {path}: expected a list of strings, e.g. ["a", "b"], or one '
            'string "a,b"',
        ),
        (
            "threshold = 1.5",
            "threshold=1.5 is out of range: expected a number in (0, 1) (combined scores are "
            "percentiles between 0 and 1); threshold came from file {path}",
        ),
        (
            "swap_delay = 9000",
            "swap_delay=9000 is not below refit_every=5000: a refit would begin before the previous "
            "model took over; lower swap_delay or raise refit_every; swap_delay came from file {path}",
        ),
    ],
)
def test_a_bad_value_names_key_value_source_and_what_is_expected(
    tmp_path: Path, toml: str, says: str
) -> None:
    path = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.from_sources({}, config_file=path)
    assert str(info.value) == says.format(path=path)


def test_a_bad_value_from_the_environment_or_a_flag_says_so() -> None:
    with pytest.raises(ConfigError, match=r"ANOMREC_N_TREES='lots' is not a valid int: expected a whole"):
        ProcessorConfig.from_sources({"ANOMREC_N_TREES": "lots"})
    with pytest.raises(
        ConfigError, match=r"n_trees=0 is out of range.*; n_trees came from env ANOMREC_N_TREES"
    ):
        ProcessorConfig.from_sources({"ANOMREC_N_TREES": "0"})
    with pytest.raises(ConfigError, match=r"; n_trees came from flag --n-trees$"):
        ProcessorConfig.from_sources({}, {"n_trees": 0})


def test_a_missing_file_names_the_path_and_who_named_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.from_sources({}, config_file=missing)
    assert str(info.value) == f"cannot read the config file {str(missing)!r}: No such file or directory"
    with pytest.raises(ConfigError, match=r"\(named by ANOMREC_CONFIG\): No such file or directory"):
        ProcessorConfig.from_sources({"ANOMREC_CONFIG": str(missing)})


def test_a_file_that_is_not_toml_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'group_id = "g"\n\nthreshold 0.9\n')
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.from_sources({}, config_file=path)
    assert str(info.value).startswith(f"the config file {str(path)!r} is not valid TOML: ")
    assert str(info.value).endswith("(at line 3, column 11)")


def test_the_command_line_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "treshold = 0.9\n")
    assert main(["run", "--config", str(path), "--events", "10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("anomrec: error: unknown setting 'treshold'")


def test_a_misspelt_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    env = {"ANOMREC_TRESHOLD": "0.9", "ANOMREC_LOG_LEVEL": "DEBUG", "ANOMREC_REPORT_FOLDER": "x"}
    with caplog.at_level(logging.WARNING, logger="anomrec.streaming.config"):
        assert ProcessorConfig.from_sources(env) == ProcessorConfig()
    assert [r.getMessage() for r in caplog.records] == [
        "ANOMREC_TRESHOLD is not a setting and is ignored: did you mean ANOMREC_THRESHOLD?"
    ]


# -- config show ----------------------------------------------------------------------------------


def test_config_show_reads_back_as_the_same_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        'detectors = ["hst", "iforest"]\nfeatures = ["amount"]\nprofile = "generic"\n'
        'bootstrap_servers = "k1:9092"\nweights = "hst=1,iforest=2"\ninstance_id = "a-1"\n'
        'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "SCRAM-SHA-256"\n',
    )
    for name in ("ANOMREC_CONFIG", "ANOMREC_THRESHOLD", "ANOMREC_RECOMMEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANOMREC_SASL_USERNAME", "alice")
    monkeypatch.setenv("ANOMREC_SASL_PASSWORD", PASSWORD)
    flags = ["--threshold", "0.9", "--recommend", "false", "--debounce-seconds", "12.5"]
    assert main(["config", "show", "--config", str(path), *flags]) == 0
    shown = capsys.readouterr().out
    assert PASSWORD not in shown and f'sasl_password = "{MASK}"  # from env ANOMREC_SASL_PASSWORD' in shown
    doc = tomllib.loads(shown)
    assert set(doc) == {f.name for f in dataclasses.fields(ProcessorConfig)}

    again = write(tmp_path, shown, "shown.toml")
    original = ProcessorConfig.from_sources(
        {"ANOMREC_SASL_USERNAME": "alice", "ANOMREC_SASL_PASSWORD": PASSWORD},
        {"threshold": 0.9, "recommend": False, "debounce_seconds": 12.5},
        path,
    )
    # The masked password reads back as "not set here": the environment still provides it.
    read_back = ProcessorConfig.from_sources({"ANOMREC_SASL_PASSWORD": PASSWORD}, config_file=again)
    assert read_back == original
    assert read_back.sasl_password == Secret(PASSWORD) and read_back.bootstrap_servers == "k1:9092"


def test_the_mask_alone_does_not_pass_for_a_password(tmp_path: Path) -> None:
    path = write(tmp_path, ProcessorConfig(**SASL, sasl_password=PASSWORD).to_toml())  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.from_sources({}, config_file=path)
    assert str(info.value) == (
        f"sasl_password in file {path} is '***', the mask config show prints in place of a secret, "
        "and nothing else sets it: put the real value there, or set ANOMREC_SASL_PASSWORD"
    )


def test_unset_settings_show_as_empty_strings_and_read_back_unset(tmp_path: Path) -> None:
    shown = ProcessorConfig().to_toml()
    assert 'bootstrap_servers = ""  # default\n' in shown and 'ssl_cafile = ""  # default\n' in shown
    assert ProcessorConfig.from_sources({}, config_file=write(tmp_path, shown)) == ProcessorConfig()


# -- security ---------------------------------------------------------------------------------------


def test_sasl_settings_map_to_kafka_python_in_one_place() -> None:
    cfg = ProcessorConfig(**SASL, sasl_password=PASSWORD)  # type: ignore[arg-type]
    assert cfg.kafka_security() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }


def test_ssl_settings_map_to_kafka_python(tmp_path: Path) -> None:
    ca, cert, key = (write(tmp_path, "PEM\n", f"{n}.pem") for n in ("ca", "cert", "key"))
    env = {
        "ANOMREC_SECURITY_PROTOCOL": "SASL_SSL",
        "ANOMREC_SSL_CAFILE": str(ca),
        "ANOMREC_SSL_CERTFILE": str(cert),
        "ANOMREC_SSL_KEYFILE": str(key),
        "ANOMREC_SSL_PASSWORD": "key-pw",
        "ANOMREC_SSL_CHECK_HOSTNAME": "false",
        "ANOMREC_SASL_MECHANISM": "PLAIN",
        "ANOMREC_SASL_USERNAME": "alice",
        "ANOMREC_SASL_PASSWORD": PASSWORD,
    }
    options = ProcessorConfig.from_sources(env).kafka_security()
    assert options == {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_password": "key-pw",
        "ssl_check_hostname": False,
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"security_protocol": "TLS"}, "security_protocol='TLS' is not one of: PLAINTEXT, SSL, SASL_"),
        (
            {"security_protocol": "SASL_SSL"},
            "security_protocol='SASL_SSL' needs sasl_mechanism: set sasl_mechanism to one of PLAIN, "
            "SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            {**SASL, "sasl_username": None},
            "security_protocol='SASL_PLAINTEXT' needs sasl_username: set sasl_username",
        ),
        (
            SASL,
            "security_protocol='SASL_PLAINTEXT' needs sasl_password: set ANOMREC_SASL_PASSWORD or "
            "sasl_password in the config file",
        ),
        ({**SASL, "sasl_mechanism": "GSSAPI", "sasl_password": "x"}, "sasl_mechanism='GSSAPI' is not one of"),
        (
            {"sasl_username": "alice"},
            "sasl_username is set but security_protocol='PLAINTEXT' does not use SASL",
        ),
        (
            {"ssl_cafile": "/etc/ssl/x.pem"},
            "ssl_cafile is set but security_protocol='PLAINTEXT' does not use SSL",
        ),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/nope/ca.pem"},
            "ssl_cafile='/nope/ca.pem' does not exist: expected the path of a PEM file",
        ),
        (
            {"security_protocol": "SSL", "ssl_password": PASSWORD},
            "ssl_password is set without ssl_certfile",
        ),
    ],
)
def test_security_combinations_are_checked(settings: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProcessorConfig(**settings)  # type: ignore[arg-type]
    assert says in str(info.value)
    assert PASSWORD not in str(info.value)


def test_an_ssl_file_that_does_not_exist_names_the_variable() -> None:
    env = {"ANOMREC_SECURITY_PROTOCOL": "SSL", "ANOMREC_SSL_CAFILE": "/nope/ca.pem"}
    with pytest.raises(ConfigError) as info:
        ProcessorConfig.from_sources(env)
    assert str(info.value) == (
        "ssl_cafile='/nope/ca.pem' does not exist: expected the path of a PEM file; "
        "ssl_cafile came from env ANOMREC_SSL_CAFILE"
    )


def test_secrets_have_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert ProcessorConfig.flag("sasl_password") is None and ProcessorConfig.flag("ssl_password") is None
    with pytest.raises(SystemExit):
        main(["run", "--sasl-password", PASSWORD])
    assert "unrecognized arguments: --sasl-password" in capsys.readouterr().err


def test_secrets_never_show_however_the_config_is_printed_or_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = ProcessorConfig(**SASL, sasl_password=PASSWORD)  # type: ignore[arg-type]
    log = logging.getLogger("anomrec.test")
    with caplog.at_level(logging.DEBUG):
        log.info("config %s", cfg)
        log.info("config %r", cfg)
        log.info(f"config {cfg}")
        log.info("settings %s", cfg.to_dict())
        log.info("asdict %s", dataclasses.asdict(cfg))
        log.info("password %s %r", cfg.sasl_password, cfg.sasl_password)
    printed = [
        repr(cfg),
        str(cfg),
        f"{cfg!r} {cfg.sasl_password} {cfg.sasl_password!r} {cfg.sasl_password:>20}",
        str(cfg.to_dict()),
        cfg.to_toml(),
        caplog.text,
        *(r.getMessage() for r in caplog.records),
    ]
    for text in printed:
        assert PASSWORD not in text
    assert "sasl_password=Secret('***')" in repr(cfg) and cfg.to_dict()["sasl_password"] == MASK
    # Only the client's keyword arguments hold it, and equal configs still compare equal.
    assert cfg.kafka_security()["sasl_plain_password"] == PASSWORD
    assert cfg == ProcessorConfig(**SASL, sasl_password=PASSWORD)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_kafka_loggers_mask_a_password_once_it_is_handed_to_a_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import kafka.protocol.parser  # noqa: F401 - its logger must exist, as it does once a client is built

    secret = "p@ss\\w'rd"  # a quote and a backslash: repr() escapes them
    mask_in_logs(secret)
    parser = logging.getLogger("kafka.protocol.parser")
    login = b"\x00alice\x00" + secret.encode()
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        # What kafka-python logs at DEBUG: the PLAIN login request, its admin client's configuration.
        parser.debug("Sending request %s", f"SaslAuthenticateRequest(auth_bytes={login!r})")
        parser.debug("Starting KafkaAdminClient with configuration: %s", {"sasl_plain_password": secret})
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert "p@ss" not in record.getMessage() and MASK in record.getMessage()


def test_connection_settings_stay_out_of_checkpoints() -> None:
    # They say how to reach Kafka, not what the state was computed with; and a password must
    # never be written into a checkpoint's settings.
    assert CONNECTION_SETTINGS <= RUNTIME_SETTINGS

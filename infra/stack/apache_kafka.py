"""A real Apache Kafka broker (KRaft, one node acting as broker and controller) for the
embedded stack's `apache-kafka` broker mode (BILLING_BROKER): the official org.apache.kafka
jars from Maven Central, resolved by Maven (infra/stack/apache_kafka/pom.xml), run by the
machine's Java 17. Free loopback ports, data under the stack's folder (kept across restarts of
the same folder: the log directory is formatted once), health-checked, stopped with the stack.

Where Java or Maven (or Maven Central) is missing, `unavailable()` says why, and the tests
that need this broker are skipped with that reason (made mandatory by `.ci/run`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "apache_kafka" / "pom.xml"
JAVA_HEAP = "-Xmx768m"


# How the single Kafka node is configured wherever the engine runs one: this mode, the
# containers stack mode (as KAFKA_* variables of the apache/kafka image) and compose.yaml
# (tests/unit/test_compose.py compares them key by key), so CI exercises what compose runs.
BROKER_SETTINGS = {
    # One node: internal topics cannot have more replicas than brokers.
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # A consumer group's first member starts at once (the default waits 3 s).
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    # Input the engine must withstand reaches it, as on any broker configured loosely: records
    # up to 16 MiB (the engine's own limit, BILLING_MAX_MESSAGE_BYTES, is 1 MiB) and any record
    # timestamp (upstream clocks may be anything).
    "message.max.bytes": "16777216",
    "log.message.timestamp.before.max.ms": "9223372036854775807",
    "log.message.timestamp.after.max.ms": "9223372036854775807",
    # One node has no replica to survive a power loss with: each append reaches the disk
    # before it is acknowledged. Otherwise the log could come back shorter than the positions
    # PostgreSQL kept (synced at each commit), and records published later at the lost offsets
    # would be taken for ones already applied. (A cluster gets this from replication:
    # acks=all and min.insync.replicas=2.)
    "log.flush.interval.messages": "1",
}


def image() -> str:
    """The apache/kafka image of the version the POM resolves (containers mode, compose)."""
    import xml.etree.ElementTree as ElementTree

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    for dependency in ElementTree.parse(POM).getroot().iter(f"{{{ns['m']}}}dependency"):
        if dependency.findtext("m:artifactId", namespaces=ns, default="").startswith("kafka_"):
            return f"apache/kafka:{dependency.findtext('m:version', namespaces=ns)}"
    raise RuntimeError(f"no Kafka dependency in {POM}")


def container_environment(advertised: str) -> dict[str, str]:
    """The apache/kafka image's variables for one KRaft node advertising `advertised`
    (HOST:PORT), configured as this mode is."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{advertised}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        **{"KAFKA_" + key.upper().replace(".", "_"): value
           for key, value in BROKER_SETTINGS.items()},
    }


def unavailable() -> str | None:
    """Why this broker cannot run here, or None."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Apache Kafka runs on Java 17, resolved by Maven)"
    return None


def classpath(cache_dir: Path) -> str:
    """The broker's class path, resolved by Maven once per version of the POM (the jars stay
    in Maven's local repository, the class path in `cache_dir`)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    cached = cache_dir / f"classpath-{digest}.txt"
    if not cached.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        done = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(POM), "dependency:build-classpath",
             f"-Dmdep.outputFile={partial}"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not partial.exists():
            raise RuntimeError("Maven could not resolve Apache Kafka's jars: "
                               + (done.stdout + done.stderr)[-2000:])
        partial.replace(cached)
    return cached.read_text("utf-8").strip()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the broker's TLS listeners."""

    ca: Path  # the CA's certificate: what clients trust
    certificate_chain: Path  # the broker's certificate, then its issuers'
    private_key: Path  # the broker's key: PKCS#8, unencrypted


@dataclass
class ApacheKafkaBroker:
    """One KRaft node. `start()` returns the bootstrap address; the caller stops it."""

    base: Path  # the stack's folder: kafka/ (config, data) and broker.log, broker.pid
    cache_dir: Path
    # SCRAM-SHA-256 users (name -> password): a second listener, SASL_PLAINTEXT, that takes
    # only them (`sasl_port`); created when the log directory is formatted.
    scram_users: dict[str, str] = field(default_factory=dict)
    # TLS (PEM files): a listener, SSL (`ssl_port`), and with SCRAM users one more, SASL_SSL
    # (`sasl_ssl_port`) that takes only them; clients are not asked for a certificate there.
    # A third, MTLS (`mtls_port`), takes only clients with a certificate the CA signed.
    tls: TlsFiles | None = None
    port: int = 0
    controller_port: int = 0
    sasl_port: int = 0
    ssl_port: int = 0
    sasl_ssl_port: int = 0
    mtls_port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.base / "broker.log"

    def _listeners(self) -> list[str]:
        """The listeners clients use (the controller's is apart)."""
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        if self.scram_users:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
        if self.tls is not None:
            listeners.append(f"SSL://127.0.0.1:{self.ssl_port}")
            listeners.append(f"MTLS://127.0.0.1:{self.mtls_port}")
            if self.scram_users:
                listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
        return listeners

    def _tls_config(self) -> list[str]:
        """Kafka's PEM support: one key store file, the private key (PKCS#8) then the
        certificate chain; the CA as the trust store (read only if a client offers a
        certificate, which none is asked for)."""
        if self.tls is None:
            return []
        keystore = self.base / "kafka" / "keystore.pem"
        keystore.write_text(self.tls.private_key.read_text("ascii")
                            + self.tls.certificate_chain.read_text("ascii"), "ascii")
        keystore.chmod(0o600)
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.tls.ca}",
            "ssl.client.auth=none",
            "listener.name.mtls.ssl.client.auth=required",
        ]

    def _config(self) -> Path:
        data = self.base / "kafka" / "data"
        config = self.base / "kafka" / "server.properties"
        config.parent.mkdir(parents=True, exist_ok=True)
        listeners = self._listeners()
        scram_login = ("scram-sha-256.sasl.jaas.config="
                       "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        config.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            "listeners=" + ",".join([*listeners,
                                     f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners=" + ",".join(listeners),
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
            "SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-256",
            f"listener.name.sasl_plaintext.{scram_login}",
            f"listener.name.sasl_ssl.{scram_login}",
            *self._tls_config(),
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            *(f"{key}={value}" for key, value in BROKER_SETTINGS.items()),
            "",
        ]), "utf-8")
        return config

    def start(self) -> str:
        from infra.stack.embedded import free_port, launch_broker

        cp = classpath(self.cache_dir)
        self.port, self.controller_port, self.sasl_port = free_port(), free_port(), free_port()
        if self.tls is not None:
            self.ssl_port, self.sasl_ssl_port, self.mtls_port = (free_port(), free_port(),
                                                                 free_port())
        config = self._config()
        java = ["java", JAVA_HEAP, "-cp", cp]
        if not (self.base / "kafka" / "data" / "meta.properties").exists():
            formatted = subprocess.run(
                # `--cluster-id=ID`: an id may begin with "-", which would read as an option.
                [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}",
                 "-c", str(config), *(arg for name, password in self.scram_users.items()
                                for arg in ("--add-scram",
                                            f"SCRAM-SHA-256=[name={name},password={password}]"))],
                capture_output=True, text=True, timeout=120)
            if formatted.returncode != 0:
                raise RuntimeError(f"formatting Kafka's log directory failed: "
                                   f"{formatted.stdout[-1000:]}{formatted.stderr[-1000:]}")
        self._proc = launch_broker(
            [*java, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
             # A refused login ("Failed authentication with /ADDRESS ...") is logged at INFO:
             # an operator reading broker.log sees who tried, the rest stays quiet.
             "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.network.Selector=info",
             "kafka.Kafka", str(config)],
            self.log_path, self.port, 120)
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        """A controlled shutdown (its logs flushed), killed after 30 s."""
        from infra.stack.embedded import stop_process

        stop_process(self._proc, grace=30)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

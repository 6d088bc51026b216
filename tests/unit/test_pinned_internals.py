"""Where the engine reaches into a pinned library's private internals, and a loud failure
when that library's version changes. Each reach lives in a module named for it; an upgrade
must re-measure and re-check that module (docs/architecture.md) before these pins move."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# distribution -> (module that reaches in, [(module:Class, private name), ...]). A name is
# checked on the class, or (an attribute its methods set) in the class's source.
REACHES = {
    "kafka-python": ("infra/kafka/kafka_python_internals.py", [
        ("kafka.consumer.fetcher:Fetcher.PartitionRecords", "_unpack_records"),
        ("kafka.record.default_records:DefaultRecordBatch", "_buffer"),
        ("kafka.producer.kafka:KafkaProducer", "_metadata"),
        ("kafka.producer.kafka:KafkaProducer", "_sender"),
        ("kafka.producer.sender:Sender", "_client"),
        ("kafka.net.compat:KafkaNetClient", "_manager"),
    ]),
    "uvicorn": ("infra/api/uvicorn_internals.py", [
        ("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol", name) for name in (
            "data_received", "on_message_begin", "on_message_complete",
            "timeout_keep_alive_handler", "timeout_keep_alive_task", "timeout_keep_alive",
            "loop", "flow", "cycle", "pipeline", "transport", "server_state", "app")]),
    "eventsourcing": ("infra/eventstore/recorder.py", [
        ("eventsourcing.postgres:PostgresAggregateRecorder", "_insert_stored_events"),
        ("eventsourcing.postgres:PostgresProcessRecorder", "_insert_events"),
        ("eventsourcing.postgres:PostgresProcessRecorder", "_lock_table"),
        ("eventsourcing.postgres:PostgresProcessRecorder", "_insert_tracking"),
        ("eventsourcing.postgres:PostgresRecorder", "sql_create_statements"),
    ]),
}


def pinned_versions() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        pins[name.split("[")[0].strip()] = version.strip()
    return pins


def _resolve(where: str) -> type:
    module, _, path = where.partition(":")
    found: object = importlib.import_module(module)
    for part in path.split("."):
        found = getattr(found, part)
    assert isinstance(found, type)
    return found


@pytest.mark.parametrize("library", sorted(REACHES))
def test_the_installed_version_is_the_one_the_internals_were_written_for(library: str) -> None:
    module, _ = REACHES[library]
    installed, pinned = metadata.version(library), pinned_versions().get(library)
    assert installed == pinned, (
        f"{library} {installed} is installed but {module} reaches into the private internals "
        f"of {library} {pinned}: re-check and re-measure that module before moving the pin")


@pytest.mark.parametrize(("library", "where", "name"),
                         [(lib, where, name) for lib, (_, reaches) in sorted(REACHES.items())
                          for where, name in reaches])
def test_every_private_name_reached_is_still_there(library: str, where: str,
                                                   name: str) -> None:
    cls = _resolve(where)
    assigned = re.search(rf"self\.{name}\s*(:[^=]+)?=", inspect.getsource(cls))
    assert hasattr(cls, name) or assigned, \
        f"{where} has no {name} any more ({library} changed): see {REACHES[library][0]}"


def test_each_module_that_reaches_in_is_listed() -> None:
    for module, _ in REACHES.values():
        assert (ROOT / module).exists(), module

"""Catalog versions recorded in the event store: every catalog text the engine has billed with,
so an auditor can see which prices were in force and a subscription's terms can be traced to
the version they were copied from (`terms.catalog_version`)."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import BaseAggregate, event

from domain.catalog.model import Catalog
from domain.shared.errors import CatalogError
from domain.shared.events import CreatedEvent, DomainEvent, Snapshot
from domain.shared.periods import require_aware
from domain.shared.topics import keep_topics


def catalog_stream_id(catalog_id: str) -> str:
    return f"catalog:{catalog_id}"


class CatalogVersions(BaseAggregate[str]):
    Snapshot = Snapshot
    Event = DomainEvent

    class Registered(CreatedEvent):
        class_version = 1
        catalog_id: str

    class VersionPublished(DomainEvent):
        class_version = 1
        version: str
        sha256: str
        source: str

    @event(Registered)
    def __init__(self, id: str, catalog_id: str, timestamp: datetime) -> None:
        self.catalog_id = catalog_id
        self.versions: dict[str, str] = {}  # version -> sha256
        self.current: str | None = None
        self.current_source: str | None = None  # the TOML text of the version in force

    @classmethod
    def register(cls, catalog: Catalog, at: datetime) -> CatalogVersions:
        require_aware(at)
        return cls(id=catalog_stream_id(catalog.id), catalog_id=catalog.id, timestamp=at)

    def check_version_label(self, catalog: Catalog) -> None:
        known = self.versions.get(catalog.version)
        if known is not None and known != catalog.source_sha256:
            raise CatalogError(
                f"catalog {catalog.id} version {catalog.version} was published with other "
                "content: give the changed catalog a new version", "version_reused")

    def publish(self, catalog: Catalog, at: datetime) -> bool:
        """Record this catalog text unless it is the version in force already."""
        require_aware(at)
        self.check_version_label(catalog)
        if self.current == catalog.version:
            return False
        previous = self.in_force()
        if previous is not None:
            check_measured_alike(previous, catalog)
        self._version_published(version=catalog.version, sha256=catalog.source_sha256,
                                source=catalog.source, timestamp=at)
        return True

    @event(VersionPublished)
    def _version_published(self, version: str, sha256: str, source: str,
                           timestamp: datetime) -> None:
        self.versions[version] = sha256
        self.current = version
        self.current_source = source

    def in_force(self) -> Catalog | None:
        """The catalog of the version in force, as recorded."""
        return None if self.current_source is None else Catalog.from_toml(self.current_source)


DEPLOYMENT_STREAM = "catalog-deployment"


class DeploymentCatalog(BaseAggregate[str]):
    """Which catalog this deployment bills with, chosen once (at its first start): every
    writer bills with that catalog's version in force, whatever its own environment says."""

    Snapshot = Snapshot
    Event = DomainEvent

    class Chosen(CreatedEvent):
        class_version = 1
        catalog_id: str

    @event(Chosen)
    def __init__(self, id: str, catalog_id: str, timestamp: datetime) -> None:
        self.catalog_id = catalog_id

    @classmethod
    def choose(cls, catalog: Catalog, at: datetime) -> DeploymentCatalog:
        require_aware(at)
        return cls(id=DEPLOYMENT_STREAM, catalog_id=catalog.id, timestamp=at)

    def check_same(self, catalog: Catalog) -> None:
        if catalog.id != self.catalog_id:
            raise CatalogError(
                f"this deployment bills with catalog {self.catalog_id!r}, not {catalog.id!r} "
                "(check BILLING_CATALOG)", "catalog_mismatch")


keep_topics("domain.catalog_versions", CatalogVersions)
keep_topics("domain.catalog_versions", DeploymentCatalog)


def check_measured_alike(previous: Catalog, catalog: Catalog) -> None:
    """A metric keeps its aggregation from version to version: subscriptions renew onto the new
    terms with the amounts they measured (a recurring level carries on), and their producers
    keep reporting the same events."""
    before, after = previous.aggregations(), catalog.aggregations()
    changed = sorted(m for m in before.keys() & after.keys() if before[m] != after[m])
    if changed:
        raise CatalogError(
            f"catalog {catalog.id} version {catalog.version}: {', '.join(changed)} would be "
            f"measured another way (aggregation {before[changed[0]]} -> {after[changed[0]]}): "
            f"give the new measure a new metric name", "aggregation_changed")

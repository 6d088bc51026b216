"""The deployment's catalog: publishing a version, and which one every writer bills with."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from domain.catalog.model import Catalog
from domain.catalog.versions import (
    DEPLOYMENT_STREAM,
    CatalogVersions,
    DeploymentCatalog,
    catalog_stream_id,
)

if TYPE_CHECKING:
    from domain.app.billing_app import BillingApplication


def publish_catalog(app: BillingApplication, at: datetime, catalog: Catalog | None = None
                    ) -> bool:
    """Record a catalog version in the event store and bill with it from now on (new
    subscriptions at once, existing ones from their next cycle). The first one recorded
    chooses the deployment's catalog; later ones must be versions of it. Once per version;
    a changed text under a reused version label is refused."""
    catalog = catalog or app.catalog
    pointer = app.stored(DEPLOYMENT_STREAM, DeploymentCatalog)
    chosen_now = pointer is None
    if pointer is None:
        pointer = DeploymentCatalog.choose(catalog, at)
    pointer.check_same(catalog)
    versions = app.stored(catalog_stream_id(catalog.id), CatalogVersions)
    if versions is None:
        versions = CatalogVersions.register(catalog, at)
    changed = versions.publish(catalog, at)
    if changed or chosen_now:
        app.save(pointer, versions)
    if changed:
        app.catalog = catalog
    return changed


def deployment_catalog(app: BillingApplication, configured: Catalog,
                       explicit: bool = True) -> Catalog:
    """The catalog this deployment bills with: its version in force as recorded in the
    store, whatever the writer's environment configured. `configured` counts only on a store
    with nothing recorded yet (the first start). Given explicitly (BILLING_CATALOG), it must
    name the deployment's catalog and may not reuse a recorded version label with other
    content; the default (no BILLING_CATALOG) defers to what the store recorded."""
    pointer = app.stored(DEPLOYMENT_STREAM, DeploymentCatalog)
    if pointer is not None and not explicit and pointer.catalog_id != configured.id:
        chosen = app.stored(catalog_stream_id(pointer.catalog_id), CatalogVersions)
        recorded = None if chosen is None else chosen.in_force()
        if recorded is not None:
            return recorded
    if pointer is not None:
        pointer.check_same(configured)
    versions = app.stored(catalog_stream_id(configured.id), CatalogVersions)
    if versions is None:
        return configured
    versions.check_version_label(configured)
    return versions.in_force() or configured

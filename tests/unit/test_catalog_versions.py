"""Catalog versions recorded as events: once per version, never a changed text under an old
version label."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.catalog.model import Catalog
from domain.catalog.versions import CatalogVersions
from domain.shared.errors import CatalogError

TEXT = """
[catalog]
id = "v"
version = "{version}"
currency = "EUR"

[plans.one]
name = "One"
price = "{price}"
"""
AT = datetime(2026, 11, 1, tzinfo=UTC)


def catalog(version: str, price: str) -> Catalog:
    return Catalog.from_toml(TEXT.format(version=version, price=price))


def test_each_version_is_recorded_once_with_its_text_and_hash() -> None:
    first = catalog("1", "10.00")
    versions = CatalogVersions.register(first, AT)
    assert versions.publish(first, AT) is True
    assert versions.publish(first, AT) is False  # loading the same catalog again
    second = catalog("2", "12.00")
    assert versions.publish(second, AT) is True
    published = [e for e in versions.collect_events()
                 if isinstance(e, CatalogVersions.VersionPublished)]
    assert [(e.version, e.sha256) for e in published] == [
        ("1", first.source_sha256), ("2", second.source_sha256)]
    assert 'price = "12.00"' in published[1].source
    assert versions.current == "2"


def test_a_changed_catalog_under_a_used_version_label_is_refused() -> None:
    versions = CatalogVersions.register(catalog("1", "10.00"), AT)
    versions.publish(catalog("1", "10.00"), AT)
    with pytest.raises(CatalogError) as refused:
        versions.publish(catalog("1", "11.00"), AT)
    assert refused.value.code == "version_reused"

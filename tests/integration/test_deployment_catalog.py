"""Which catalog a process bills with (issue 17.2): the one the store recorded. A process
given no BILLING_CATALOG uses it whatever it is; one given another catalog is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from domain.shared.errors import CatalogError
from infra.config import Settings
from infra.wiring.engine import open_billing

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_process_without_billing_catalog_bills_with_the_recorded_one(
        database_url: str) -> None:
    """Found from outside: on a deployment of another catalog than the starter, every CLI
    command run from a terminal without BILLING_CATALOG was refused (catalog_mismatch)."""
    credit = dataclasses.replace(Settings(), catalog_path=EXAMPLES / "credit_plans.toml")
    open_billing(database_url, credit).close()  # the first start records it
    plain = open_billing(database_url, Settings())
    try:
        assert (plain.catalog.id, plain.catalog.currency) == ("credit-plans", "USD")
    finally:
        plain.close()
    assistant = dataclasses.replace(Settings(), catalog_path=EXAMPLES / "assistant_plans.toml")
    with pytest.raises(CatalogError) as refused:
        open_billing(database_url, assistant)
    assert refused.value.code == "catalog_mismatch"

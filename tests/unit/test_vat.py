"""VAT (issue 17.8): all 27 EU member states and Norway, rates by issue date, VAT ids checked
for syntax and check digits before a reverse charge."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from domain.billing.charges import charge
from domain.billing.invoice_document import build_invoice
from domain.billing.tax import EU, treatment

EU_MEMBERS = {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU",
              "IE", "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES",
              "SE"}
DAY = date(2026, 6, 1)


def test_every_member_state_has_a_rate() -> None:
    assert set(EU) == EU_MEMBERS
    for country in EU_MEMBERS:
        consumer = treatment("SE", country, False, None, DAY)
        assert consumer.code == "standard" and Decimal(15) <= consumer.rate <= Decimal(27)


def test_a_czech_business_with_a_valid_vat_id_is_reverse_charged() -> None:
    """It used to be treated as outside the VAT area, at 0 % without a reverse charge."""
    assert treatment("SE", "CZ", True, "CZ25123891", DAY).code == "reverse_charge"
    assert treatment("SE", "CZ", False, None, DAY).rate == Decimal(21)


@pytest.mark.parametrize("vat_id", ["anything", "CZ25123892", "DE25123891", "CZ 2512"])
def test_an_invalid_vat_id_is_taxed_and_warned_about(vat_id: str) -> None:
    taxed = treatment("SE", "CZ", True, vat_id, DAY)
    assert (taxed.code, taxed.rate) == ("standard", Decimal(21))
    assert taxed.warning is not None and vat_id in taxed.warning


def test_greek_ids_start_with_el() -> None:
    assert treatment("SE", "GR", True, "EL094259216", DAY).code == "reverse_charge"


@pytest.mark.parametrize(("country", "before", "after", "since"), [
    ("FI", Decimal(24), Decimal("25.5"), date(2024, 9, 1)),
    ("EE", Decimal(22), Decimal(24), date(2025, 7, 1)),
    ("SK", Decimal(20), Decimal(23), date(2025, 1, 1)),
    ("RO", Decimal(19), Decimal(21), date(2025, 8, 1)),
])
def test_rates_are_those_in_force_on_the_issue_date(country: str, before: Decimal,
                                                    after: Decimal, since: date) -> None:
    day_before = date.fromordinal(since.toordinal() - 1)
    assert treatment("SE", country, False, None, day_before).rate == before
    assert treatment("SE", country, False, None, since).rate == after


def test_the_invoice_carries_the_warning() -> None:
    at = datetime(2026, 6, 1, tzinfo=UTC)
    line = charge("plan", "Basic", 1, Decimal("190.00"), Decimal("190.00"), at,
                  datetime(2026, 7, 1, tzinfo=UTC))
    doc = build_invoice(number="INV-1", subscription="s", account="a",
                        customer={"country": "CZ", "business": True, "vat_id": "CZ1"},
                        issuer={"country": "SE"}, currency="EUR", lines=[line], issued_at=at)
    assert (doc["tax_treatment"], doc["tax"]) == ("standard", "39.90")
    assert "CZ1" in doc["tax_warning"]

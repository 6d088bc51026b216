"""The PDF invoice keeps every letter of the VAT area's languages (issue 17.7): the core PDF
fonts held Latin-1 only, and `Łódź` became `?ód?`."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pypdf import PdfReader

from domain.billing.charges import charge
from domain.billing.invoice_document import build_invoice
from infra.render.invoice import invoice_pdf

# A customer name from each country with a VAT rate (domain/billing/tax.py), in its own letters.
NAMES = {
    "AT": "Wörthersee Bäckerei", "BE": "Brasserie Liège", "BG": "София ЕООД",
    "HR": "Čakovec d.o.o.", "CY": "Λεμεσός Λτδ", "CZ": "Český Krumlov s.r.o.",
    "DK": "Ærø Øl ApS", "EE": "Pärnu Õlu OÜ", "FI": "Äänekoski Oy", "FR": "Crème Brûlée SARL",
    "DE": "Straße GmbH", "GR": "Ελλάδα Θεσσαλονίκη", "HU": "Győr Kft.", "IE": "Ó Súilleabháin Teo",
    "IT": "Caffè Città Srl", "LV": "Rīga Ķekava SIA", "LT": "Šiaulių Ąžuolas UAB",
    "LU": "Lëtzebuerg Sàrl", "MT": "Ħal Qormi Ltd", "NL": "Ĳsselmeer B.V.",
    "PL": "Łódź sp. z o.o.", "PT": "São João Lda", "RO": "Brașov Țară SRL",
    "SK": "Ďumbier s.r.o.", "SI": "Škofja Loka d.o.o.",
    "ES": "Peñíscola S.L.", "SE": "Åre Ängsö AB", "NO": "Bærum Ørsta AS",
}


def _text(customer: dict[str, str]) -> str:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    line = charge("plan", "Basic plan fee", 1, Decimal("190.00"), Decimal("190.00"), at,
                  datetime(2026, 12, 1, tzinfo=UTC))
    doc = build_invoice(number="INV-2026-000001", subscription="s", account="a",
                        customer=customer, issuer={}, currency="EUR", lines=[line],
                        issued_at=at)
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(invoice_pdf(doc))).pages)


@pytest.mark.parametrize(("country", "name"), sorted(NAMES.items()))
def test_every_letter_of_a_customers_name_is_printed(country: str, name: str) -> None:
    assert name in _text({"name": name, "country": country, "address": name})


@pytest.mark.parametrize("name", ["東京株式会社", "北京有限公司", "서울주식회사",
                                  "カタカナ ひらがな"])
def test_chinese_japanese_and_korean_names_are_printed(name: str) -> None:
    assert name in _text({"name": name, "country": "JP", "address": name})


def test_letters_no_embedded_font_has_are_marked_not_dropped() -> None:
    """Some emoji and historic scripts have no glyph: each such letter is printed as the
    replacement character, so a reader sees something is missing."""
    text = _text({"name": "Tokyo \U0001F980 \U00013000 KK", "country": "JP"})
    assert "Tokyo \ufffd \ufffd KK" in text

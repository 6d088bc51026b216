"""Invoice lines add up as printed (issue 17.9): a prorated line shows the quantity billed,
its fraction of the period, so that quantity x unit price = amount in every rendering."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest

from domain.billing.charges import prorated
from domain.billing.invoice_document import build_invoice
from infra.render.invoice import billed, invoice_html

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(("quantity", "price", "day"), [
    (1, "190.00", 10), (1, "490.00", 10), (3, "12.50", 29), (1, "9999.99", 2), (7, "0.99", 16)])
def test_prorated_lines_add_up_as_printed(quantity: int, price: str, day: int) -> None:
    at = datetime(2026, 11, day, tzinfo=UTC)
    lines = [prorated("proration_credit", "Unused time", quantity, Decimal(price), at, START,
                      END, credit=True),
             prorated("proration_charge", "Remaining time", quantity, Decimal(price), at,
                      START, END)]
    for line in lines:
        line["amount"] = str(Decimal(line["amount"]).quantize(Decimal("0.01"), ROUND_HALF_UP))
    doc = build_invoice(number="INV-1", subscription="s", account="a", customer={},
                        issuer={}, currency="EUR", lines=lines, issued_at=at)
    html = invoice_html(doc)
    for line in doc["lines"]:
        shown = Decimal(billed(line))
        assert (shown * Decimal(line["unit_price"])).quantize(
            Decimal("0.01"), ROUND_HALF_UP) == Decimal(line["amount"])
        assert shown != Decimal(line["quantity"])  # a fraction of the period, not the whole
        assert Decimal(line["fraction"]) > 0
        assert f">{billed(line)}<" in html
    credit, charge = doc["lines"]
    assert Decimal(credit["billed_quantity"]) < 0 < Decimal(charge["billed_quantity"])

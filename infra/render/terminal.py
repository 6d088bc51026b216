"""Terminal output of the CLI: JSON, text tables and the text views of read models."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from domain.shared.money import plain


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return plain(obj)
    raise TypeError(type(obj).__name__)


def _print_json(obj: Any) -> None:
    print(orjson.dumps(obj, default=_json_default, option=orjson.OPT_INDENT_2).decode())


def _print_invoice_text(doc: dict[str, Any]) -> None:
    from infra.render.invoice import billed

    cur = doc["currency"]
    title = "Credit note" if doc["kind"] == "credit_note" else "Invoice"
    print(f"{title} {doc['number'] or '(preview)'}   issued {doc['issued_at'][:10]}   "
          f"due {doc['due_at'][:10]}   {doc.get('status') or ''}")
    print(f"  seller: {doc['seller']['name']} ({doc['seller']['country']}, "
          f"{doc['seller']['vat_id']})")
    print(f"  buyer:  {doc['buyer']['name']} ({doc['buyer'].get('country') or '-'}"
          f"{', ' + doc['buyer']['vat_id'] if doc['buyer'].get('vat_id') else ''})")
    for line in doc["lines"]:
        print(f"  {line['description'][:48]:<48} {billed(line):>10} x {line['unit_price']:>10}"
              f"  {line['amount']:>10}  VAT {line['tax_rate']:>4} %")
        if "fraction" in line:
            print(f"    {line['fraction']} of {line.get('period_start', '')[:10]}.."
                  f"{line.get('period_end', '')[:10]}")
    print(f"  {'subtotal':>74} {doc['subtotal']:>10} {cur}")
    for b in doc["tax_breakdown"]:
        print(f"  {'VAT ' + b['rate'] + ' % on ' + b['base']:>74} {b['tax']:>10} {cur}")
    print(f"  {'total':>74} {doc['total']:>10} {cur}")
    print(f"  {doc['tax_note']}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)

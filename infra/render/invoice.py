"""Invoice renderings a person would accept from a vendor: HTML (web view) and PDF, both from the
invoice document stored in the event store (`InvoiceIssued.document`)."""

from __future__ import annotations

import functools
import html
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

TITLES = {"invoice": "Invoice", "credit_note": "Credit note"}


def _money(value: str, currency: str) -> str:
    amount = Decimal(value)
    return f"{amount:,.2f} {currency}"


def _date(value: str | None) -> str:
    return value[:10] if value else ""


def _period(line: dict[str, Any]) -> str:
    if "period_start" in line:
        return f"{_date(line['period_start'])} to {_date(line['period_end'])}"
    return ""


def _party(p: dict[str, Any]) -> list[str]:
    rows = [p.get("name") or "", p.get("address") or "", p.get("country") or ""]
    if p.get("vat_id"):
        rows.append(f"VAT id: {p['vat_id']}")
    return [r for r in rows if r]


def billed(line: dict[str, Any]) -> str:
    """The quantity column: what was billed, so that quantity x unit price = amount (a
    prorated line bills its fraction of the period, signed for a credit)."""
    return str(line.get("billed_quantity", line["quantity"]))


def invoice_html(doc: dict[str, Any]) -> str:
    e = html.escape
    cur = doc["currency"]
    title = TITLES.get(doc["kind"], "Invoice")
    rows = "\n".join(
        f"<tr><td>{e(x['description'])}<div class=period>{e(_period(x))}</div></td>"
        f"<td class=num>{e(billed(x))}</td><td class=num>{e(x['unit_price'])}</td>"
        f"<td class=num>{e(x['tax_rate'])} %</td><td class=num>{_money(x['amount'], cur)}</td></tr>"
        for x in doc["lines"])
    breakdown = "\n".join(
        f"<tr><td>VAT {e(b['rate'])} % on {_money(b['base'], cur)}</td>"
        f"<td class=num>{_money(b['tax'], cur)}</td></tr>" for b in doc["tax_breakdown"])
    credits = "\n".join(f"<tr><td>{e(label)}</td><td class=num>{_money(value, cur)}</td></tr>"
                        for label, value in credit_rows(doc))
    status = doc.get("status")
    refers = (f"<p>Credit note for invoice <b>{e(doc['references'])}</b></p>"
              if doc.get("references") else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} {e(doc['number'] or 'preview')}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 40px; color: #222; }}
h1 {{ font-size: 26px; margin: 0 0 4px; }} .muted {{ color: #666; }}
.parties {{ display: flex; justify-content: space-between; margin: 28px 0; }}
table {{ width: 100%; border-collapse: collapse; }}
th, td {{ padding: 6px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
.num {{ text-align: right; white-space: nowrap; }} .period {{ color: #777; font-size: 12px; }}
.totals {{ width: 45%; margin-left: auto; margin-top: 16px; }}
.total td {{ font-weight: bold; border-top: 2px solid #222; }}
</style></head><body>
<h1>{title} {e(doc['number'] or '(preview)')}</h1>
<div class=muted>Issued {_date(doc['issued_at'])} · Due {_date(doc['due_at'])}
{f' · Status: {e(status)}' if status else ''}</div>
{refers}
<div class=parties>
<div><b>Seller</b><br>{'<br>'.join(e(x) for x in _party(doc['seller']))}</div>
<div><b>Bill to</b><br>{'<br>'.join(e(x) for x in _party(doc['buyer']))}</div>
</div>
<table><thead><tr><th>Description</th><th class=num>Qty</th><th class=num>Unit price</th>
<th class=num>VAT</th><th class=num>Amount</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<table class=totals>
<tr><td>Subtotal</td><td class=num>{_money(doc['subtotal'], cur)}</td></tr>
{breakdown}
<tr class=total><td>Total</td><td class=num>{_money(doc['total'], cur)}</td></tr>
{credits}
</table>
<p class=muted>{e(doc['tax_note'])}. Amounts in {cur}; each line rounded half up to the cent.
Subscription {e(doc['subscription'])}.</p>
</body></html>
"""


def credit_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Prepaid credits that paid the invoice, by grant, and what is left to pay."""
    if "credits_applied" not in doc:
        return []
    return [*((f"Prepaid credits ({a['grant']})", f"-{a['amount']}")
              for a in doc["credits_applied"]), ("Amount due", doc["amount_due"])]


def invoice_pdf(doc: dict[str, Any]) -> bytes:
    from fpdf import FPDF

    cur = doc["currency"]
    title = TITLES.get(doc["kind"], "Invoice")
    pdf = FPDF(format="A4")
    # DejaVu Sans, embedded: every letter of the VAT area's languages (Łódź, Ελλάδα, Český),
    # where the PDF core fonts hold Latin-1 only and printed "?" for the rest. WenQuanYi
    # Micro Hei fills in what DejaVu lacks (Chinese, Japanese, Korean); loading it takes
    # 0.3 s, so only for a document that needs it.
    pdf.add_font(FONT, "", str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font(FONT, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
    if not set(map(ord, json.dumps(doc, ensure_ascii=False))) <= _glyphs("DejaVuSans.ttf"):
        pdf.add_font(CJK_FONT, "", str(FONTS / CJK_FILE))
        pdf.set_fallback_fonts([CJK_FONT], exact_match=False)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    pdf.set_font(FONT, "B", 18)
    pdf.cell(0, 10, _printable(f"{title} {doc['number'] or '(preview)'}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 10)
    meta = f"Issued {_date(doc['issued_at'])}   Due {_date(doc['due_at'])}"
    if doc.get("status"):
        meta += f"   Status: {doc['status']}"
    pdf.cell(0, 6, meta, new_x="LMARGIN", new_y="NEXT")
    if doc.get("references"):
        pdf.cell(0, 6, f"Credit note for invoice {doc['references']}", new_x="LMARGIN",
                 new_y="NEXT")
    pdf.ln(4)
    top = pdf.get_y()
    for x, heading, party in ((10, "Seller", doc["seller"]), (110, "Bill to", doc["buyer"])):
        pdf.set_xy(x, top)
        pdf.set_font(FONT, "B", 10)
        pdf.cell(90, 6, heading, new_x="LEFT", new_y="NEXT")
        pdf.set_font(FONT, "", 10)
        for row in _party(party):
            pdf.cell(90, 5, _printable(row), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(10, top + 34)
    widths = (92, 18, 26, 18, 36)
    pdf.set_font(FONT, "B", 10)
    for w, head, align in zip(widths, ("Description", "Qty", "Unit price", "VAT", "Amount"),
                              ("L", "R", "R", "R", "R"), strict=True):
        pdf.cell(w, 7, head, border="B", align=align)
    pdf.ln()
    pdf.set_font(FONT, "", 9)
    for line in doc["lines"]:
        description = line["description"]
        if _period(line):
            description += f" ({_period(line)})"
        cells = (description[:58], billed(line), line["unit_price"],
                 f"{line['tax_rate']} %", _money(line["amount"], cur))
        for w, text, align in zip(widths, cells, ("L", "R", "R", "R", "R"), strict=True):
            pdf.cell(w, 6, _printable(text), align=align)
        pdf.ln()
    pdf.ln(3)
    pdf.set_font(FONT, "", 10)
    summary = [("Subtotal", _money(doc["subtotal"], cur))]
    summary += [(f"VAT {b['rate']} % on {_money(b['base'], cur)}", _money(b["tax"], cur))
                for b in doc["tax_breakdown"]]
    for label, value in summary:
        pdf.cell(154, 6, _printable(label), align="R")
        pdf.cell(36, 6, value, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "B", 11)
    pdf.cell(154, 8, "Total", align="R", border="T")
    pdf.cell(36, 8, _money(doc["total"], cur), align="R", border="T", new_x="LMARGIN",
             new_y="NEXT")
    pdf.set_font(FONT, "", 10)
    for label, value in credit_rows(doc):
        pdf.cell(154, 6, _printable(label), align="R")
        pdf.cell(36, 6, _money(value, cur), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(FONT, "", 8)
    pdf.multi_cell(0, 4, _printable(f"{doc['tax_note']}. Amounts in {cur}; each line rounded half "
                                 f"up to the cent. Subscription {doc['subscription']}."))
    return bytes(pdf.output())


FONTS = Path(__file__).resolve().parent / "fonts"
FONT = "DejaVu"
CJK_FONT, CJK_FILE = "WenQuanYi", "WenQuanYiMicroHei.ttf"


@functools.cache
def _glyphs(font_file: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(str(FONTS / font_file))["cmap"].getBestCmap())


def _printable(text: str) -> str:
    """What the embedded fonts can show: a character neither has a glyph for (an emoji, a
    historic script) is printed as U+FFFD rather than dropped silently."""
    return "".join(c if ord(c) in _glyphs("DejaVuSans.ttf") or ord(c) in _glyphs(CJK_FILE)
                   or c in "\n\t" else "\ufffd" for c in text)

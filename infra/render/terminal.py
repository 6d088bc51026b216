"""Terminal output of the CLI: JSON, text tables and the text views of read models."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from domain.shared.money import MINOR_UNITS, plain
from infra.render.invoice import credit_rows

if TYPE_CHECKING:
    from domain.catalog.model import Allowance, Catalog


def json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return plain(obj)
    raise TypeError(type(obj).__name__)


def print_json(obj: Any) -> None:
    print(orjson.dumps(obj, default=json_default, option=orjson.OPT_INDENT_2).decode())


def print_invoice(doc: dict[str, Any]) -> None:
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
    for label, value in credit_rows(doc):
        print(f"  {label:>74} {value:>10} {cur}")
    print(f"  {doc['tax_note']}")
    if doc.get("tax_warning"):
        print(f"  WARNING: {doc['tax_warning']}")


def print_invoice_list(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"{r['number']:<18} {r['kind']:<12} {r['subscription_id']:<14} "
              f"{r['issued_at']:%Y-%m-%d} {r['status']:<15} {r['total']:>12} {r['currency']}")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def print_monitor(monitor: dict[str, Any]) -> None:
    """The credit monitor (projections/quota/monitor.py) as a table."""
    print(f"{monitor['subscription']}  account {monitor['account']}  plan {monitor['plan']}  "
          f"cycle {_minutes(monitor['cycle_start'])} .. {_minutes(monitor['resets_at'])}"
          f"  (resets then)")
    print(f"  {'metric':<16}{'included':>12}{'packs':>10}{'used':>12}{'remaining':>12}"
          f"  {'today / daily cap':<20} limit")
    for m in monitor["metrics"]:
        today = (f"{m['today_used']} / {m['daily_cap']}" if m["daily_cap"] is not None
                 else "")
        if m["daily_cap_reached"]:
            today += f" (resets {m['next_daily_reset'][:16]})"
        flag = "  EXHAUSTED" if m["exhausted"] else ""
        print(f"  {m['metric']:<16}{m['included']:>12}{m['packs']:>10}{m['used']:>12}"
              f"{m['remaining']:>12}  {today:<20} {m['limit_kind']}{flag}")
    for m in monitor["metrics"]:
        if m["per_day"]:
            history = ", ".join(f"{d[5:]}: {q}" for d, q in m["per_day"].items())
            print(f"  {m['metric']} per day: {history}")
        if m["per_member"]:
            people = ", ".join(f"{who}: {q}" for who, q in m["per_member"].items())
            print(f"  {m['metric']} per member: {people}")
        if m.get("group_by"):
            groups = ", ".join(f"{g or '(none)'}: {v['used']} used, {v['remaining']} left"
                               for g, v in m["per_group"].items())
            print(f"  {m['metric']} per {m['group_by']} ({m['included']} included in each): "
                  f"{groups or 'no usage yet'}")


def _minutes(iso: str) -> str:
    return iso[:16].replace("T", " ")


def money(amount: Decimal, currency: str) -> str:
    """An amount as people write it: never in scientific notation, with at least the
    currency's minor places (190.00), and all of a finer unit price's (0.0025)."""
    quantized = amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2)))
    return plain(quantized if quantized == amount else amount.normalize())


def catalog_view(catalog: Catalog) -> dict[str, Any]:
    """The catalog as data: plans (prices per period, allowances, seats), packs, add-ons and
    user plans, every amount in the catalog's currency as a plain decimal."""
    cur = catalog.currency

    def allowance(a: Allowance) -> dict[str, Any]:
        d: dict[str, Any] = {"included": plain(a.included), "limit": a.limit}
        if a.overage_unit_price is not None:
            d["overage_unit_price"] = money(a.overage_unit_price, cur)
        if a.tiers:
            d["tiers"] = [{"up_to": None if t.up_to is None else plain(t.up_to),
                           "unit_price": money(t.unit_price, cur),
                           **({} if t.flat_fee is None else {
                               "flat_fee": money(t.flat_fee, cur)})} for t in a.tiers]
        if a.daily_cap is not None:
            d["daily_cap"] = plain(a.daily_cap)
            d["on_daily_cap"] = a.on_daily_cap
        if a.charge_model:
            d["charge_model"] = a.charge_model
        if a.package_size is not None and a.package_price is not None:
            d["package"] = {"size": plain(a.package_size), "price": money(a.package_price, cur)}
        if a.percentage:
            d["percentage"] = dict(a.percentage)
        return d

    plans = [
        {"id": p.id, "name": p.name, "rank": p.rank, "price": money(p.price.amount, cur),
         "currency": p.currency, "prices": {k: money(v, cur) for k, v in p.prices.items()},
         "allowances": {m: allowance(a) for m, a in p.allowances.items()},
         "included_seats": p.included_seats,
         "extra_seat_monthly_price": None if p.extra_seat_monthly_price is None
         else money(p.extra_seat_monthly_price, cur),
         "user_plans": p.user_plans, "available": p.available}
        for p in sorted(catalog.plans.values(), key=lambda p: p.rank)
    ]
    return {
        "id": catalog.id, "version": catalog.version, "currency": cur, "plans": plans,
        "packs": [{"id": k.id, "name": k.name, "metric": k.metric,
                   "quantity": plain(k.quantity), "price": money(k.price, cur)}
                  for k in catalog.packs.values()],
        "addons": [{"id": a.id, "name": a.name, "monthly_price": money(a.monthly_price, cur),
                    "features": list(a.features)} for a in catalog.addons.values()],
        "user_plans": {solution: {level: money(price, cur) for level, price in levels.items()}
                       for solution, levels in catalog.user_plans.items()},
    }


def print_catalog(view: dict[str, Any], recorded: str) -> None:
    print(f"catalog {view['id']} (version {view['version']}, {recorded}), prices in "
          f"{view['currency']}, excluding tax")
    for plan in view["plans"]:
        allowances = ", ".join(f"{m} {a['included']} ({a['limit']})"
                               for m, a in plan["allowances"].items())
        prices = ", ".join(f"{v}/{k}" for k, v in plan["prices"].items())
        print(f"  {plan['id']:<12} {plan['name']:<12} {prices:<28} {allowances}")
        seats = []
        if plan["included_seats"] is not None:
            seats.append(f"{plan['included_seats']} seats included")
        if plan["extra_seat_monthly_price"] is not None:
            seats.append(f"extra seat {plan['extra_seat_monthly_price']}/month")
        if plan["user_plans"]:
            seats.append("members hold user plans")
        if seats:
            print(f"  {'':<25} {', '.join(seats)}")
    if view["packs"]:
        print("packs (one-off, this cycle):")
        for k in view["packs"]:
            print(f"  {k['id']:<12} {k['name']:<24} {k['quantity']} {k['metric']:<14} "
                  f"{k['price']:>10}")
    if view["addons"]:
        print("add-ons (per month):")
        for a in view["addons"]:
            features = f"  features: {', '.join(a['features'])}" if a["features"] else ""
            print(f"  {a['id']:<12} {a['name']:<24} {a['monthly_price']:>10}{features}")
    if view["user_plans"]:
        print("user plans (per user per month):")
        for solution, levels in view["user_plans"].items():
            print(f"  {solution:<12} " + ", ".join(f"{level} {price}"
                                                   for level, price in levels.items()))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    """Rows as an aligned text table, CSV, or a JSON list of objects (values as `cell`)."""
    cells = [[cell(v) for v in row] for row in rows]
    if fmt == "json":
        print_json([dict(zip(columns, row, strict=True)) for row in cells])
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(cells)
        print(out.getvalue(), end="")
    else:
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in cells:
            print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))

"""`billing invoice`: show, list, preview, credit, explain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.cli.common import connect, time_arg
from infra.config import Settings
from infra.render.terminal import _print_invoice_text, _print_json
from infra.stack.embedded import Stack


def cmd_invoice(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from infra.render.invoice import invoice_html, invoice_pdf
    from projections.invoices import store as invoices
    stack = connect(settings)
    if args.verb == "list":
        with psycopg.connect(stack.database_url) as conn:
            rows = invoices.list_invoices(conn, args.target)
        if args.json:
            _print_json([{**r, "issued_at": r["issued_at"].isoformat()} for r in rows])
            return 0
        for r in rows:
            print(f"{r['number']:<18} {r['kind']:<12} {r['subscription_id']:<14} "
                  f"{r['issued_at']:%Y-%m-%d} {r['status']:<15} {r['total']:>12} {r['currency']}")
        return 0
    if args.verb in ("preview", "credit"):
        return _invoice_write(args, settings, stack)
    if args.verb == "explain":
        return _invoice_explain(args, settings, stack)
    with psycopg.connect(stack.database_url) as conn:
        document = invoices.read_invoice(conn, args.target)
    if document is None:
        print(f"no invoice {args.target}", file=sys.stderr)
        return 1
    if args.html:
        Path(args.html).write_text(invoice_html(document), encoding="utf-8")
    if args.pdf:
        Path(args.pdf).write_bytes(invoice_pdf(document))
    if args.json:
        _print_json(document)
    elif not (args.html or args.pdf):
        _print_invoice_text(document)
    return 0


def _invoice_write(args: argparse.Namespace, settings: Settings, stack: Stack) -> int:
    from datetime import UTC, datetime

    from domain.shared.errors import BillingError
    from infra.wiring.engine import open_billing

    app = open_billing(stack.database_url, settings)
    at = time_arg(args.at, "--at") if args.at else datetime.now(UTC)
    try:
        if args.verb == "preview":
            document = app.get(args.target).preview_invoice(app.issuer, at)
        else:
            subscription = _subscription_of_invoice(stack, args.target)
            document = app.issue_credit_note(subscription, args.target, at)
    except BillingError as e:
        print(f"refused ({e.code}): {e}", file=sys.stderr)
        return 2
    finally:
        app.close()
    if args.json:
        _print_json(document)
    else:
        _print_invoice_text(document)
    return 0


def _invoice_explain(args: argparse.Namespace, settings: Settings, stack: Stack) -> int:
    import psycopg

    from infra.ops.audit import explain_invoice
    from infra.wiring.engine import open_billing
    from projections.invoices import store as invoices
    with psycopg.connect(stack.database_url) as conn:
        document = invoices.read_invoice(conn, args.target)
    if document is None:
        print(f"no invoice {args.target}", file=sys.stderr)
        return 1
    app = open_billing(stack.database_url, settings)
    try:
        explained = explain_invoice(app, document)
    finally:
        app.close()
    if args.json:
        _print_json(explained)
        return 0 if explained["reproduced"] else 3
    print(f"invoice {explained['number']}")
    for line in explained["lines"]:
        event = line["event"]
        source = (f"{event['subscription']} v{event['version']} {event['type']} "
                  f"{event['time'][:19]}" if event else "-")
        print(f"  {line['description'][:44]:<44} {line['amount']:>10}  <- {source}, "
              f"catalog {line['catalog_version']}")
        print(f"      rule: {line['rule']}")
    r = explained["recomputed"]
    print(f"  recomputed from those events: subtotal {r['subtotal']}, tax {r['tax']}, total "
          f"{r['total']}: {'reproduced to the cent' if explained['reproduced'] else 'DIFFERS'}")
    return 0 if explained["reproduced"] else 3


def _subscription_of_invoice(stack: Stack, number: str) -> str:
    import psycopg

    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT subscription_id FROM invoices WHERE number = %s",
                           (number,)).fetchone()
    if row is None:
        raise SystemExit(f"no invoice {number} in the read model")
    return str(row[0])

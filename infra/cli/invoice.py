"""`billing invoice`: show, list, preview, credit, explain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from infra.cli.common import FAILURE, OK, UsageError, billing_now, connect, not_found, open_app
from infra.config import Settings
from infra.render.terminal import print_invoice, print_invoice_list, print_json
from infra.stack.embedded import Stack

NEEDS_TARGET = {"show": "an invoice number", "credit": "an invoice number",
                "account": "an account",
                "explain": "an invoice number", "preview": "a subscription"}


def cmd_invoice(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from projections.invoices import store as invoices
    if args.verb in NEEDS_TARGET and not args.target:
        raise UsageError(f"billing invoice {args.verb}: name {NEEDS_TARGET[args.verb]}", "usage")
    if (args.html or args.pdf) and args.verb != "show":
        raise UsageError("--html and --pdf go with `invoice show`", "usage")
    if args.at is not None and args.verb not in ("preview", "credit"):
        raise UsageError("--at goes with `invoice preview` and `invoice credit`", "usage")
    stack = connect(settings)
    if args.verb == "list":
        with psycopg.connect(stack.database_url) as conn:
            rows = invoices.list_invoices(conn, args.target)
        if args.json:
            print_json([{**r, "issued_at": r["issued_at"].isoformat()} for r in rows])
        else:
            print_invoice_list(rows)
        return OK
    if args.verb == "preview":
        return _invoice_write(args, settings)
    if args.verb == "account":
        from projections.invoices.accounts import account_invoices

        with psycopg.connect(stack.database_url) as conn:
            grouped = account_invoices(args.target, invoices.account_documents(conn,
                                                                               args.target))
        if args.json:
            print_json({"account": args.target, "invoices": grouped})
        else:
            print_account_invoices(grouped)
        return OK
    document = _read_invoice(stack, args.target)
    if args.verb == "credit":
        return _invoice_write(args, settings, document["subscription"])
    if args.verb == "explain":
        return _invoice_explain(args, settings, document)
    if args.html:
        from infra.render.invoice import invoice_html

        Path(args.html).write_text(invoice_html(document), encoding="utf-8")
    if args.pdf:
        from infra.render.invoice import invoice_pdf

        Path(args.pdf).write_bytes(invoice_pdf(document))
    if args.json:
        print_json(document)
    elif not (args.html or args.pdf):
        print_invoice(document)
    return OK


def print_account_invoices(grouped: list[dict[str, Any]]) -> None:
    for group in grouped:
        print(f"{group['date']}  {group['kind']:<12} {group['total']:>12} {group['currency']}"
              f"  (due {group['amount_due']})")
        for invoice in group["invoices"]:
            print(f"    {invoice['number']:<18} {invoice['subscription']:<24} "
                  f"{invoice['total']:>12}  {invoice['status'] or ''}")


def _read_invoice(stack: Stack, number: str) -> dict[str, Any]:
    import psycopg

    from projections.invoices import store as invoices
    with psycopg.connect(stack.database_url) as conn:
        document = invoices.read_invoice(conn, number)
    if document is None:
        not_found(f"no invoice {number}")
    return document


def _invoice_write(args: argparse.Namespace, settings: Settings,
                   subscription: str | None = None) -> int:
    app = open_app(settings)
    try:
        at = args.at or billing_now(app)
        if subscription is None:
            document = app.get(args.target).preview_invoice(app.issuer, at)
        else:
            document = app.issue_credit_note(subscription, args.target, at)
    finally:
        app.close()
    if args.json:
        print_json(document)
    else:
        print_invoice(document)
    return OK


def _invoice_explain(args: argparse.Namespace, settings: Settings,
                     document: dict[str, Any]) -> int:
    from infra.ops.audit import explain_invoice

    app = open_app(settings)
    try:
        explained = explain_invoice(app, document)
    finally:
        app.close()
    status = OK if explained["reproduced"] else FAILURE
    if args.json:
        print_json(explained)
        return status
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
    return status

"""The `billing` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from infra.cli.audit import cmd_history, cmd_state, cmd_verify
from infra.cli.catalog import cmd_catalog
from infra.cli.clock import cmd_clock
from infra.cli.command import cmd_command, command_fields
from infra.cli.common import connect, time_arg
from infra.cli.demo import cmd_demo
from infra.cli.dlq import cmd_dlq
from infra.cli.invoice import cmd_invoice
from infra.cli.ops import cmd_health, cmd_roles
from infra.cli.parked import cmd_parked
from infra.cli.publish import cmd_commands_publish, cmd_usage_publish
from infra.cli.quota import cmd_quota
from infra.cli.rebuild import cmd_rebuild
from infra.cli.report import cmd_recommend, cmd_report
from infra.cli.run import cmd_run
from infra.cli.subscribe import CUSTOMER_OPTIONS, cmd_subscribe
from infra.config import Settings

__all__ = ["build_parser", "check_arguments", "cmd_rebuild", "command_fields", "connect",
           "main", "time_arg"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the spine end to end on the embedded stack")
    p.add_argument("--subscriptions", type=int, default=300)
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.add_argument("--out", default="out", help="folder for the invoice PDF/HTML and the chart")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run ingestion, relay and projection until stopped")
    p.add_argument("--group", action="store_true",
                   help="join consumer groups (scale out over several processes)")
    p.add_argument("--report-every", type=float, default=10.0)
    p.add_argument("--only", action="append",
                   choices=["ingest", "commands", "relay", "project", "invoicer", "invoices",
                            "audit"],
                   help="run only this worker (repeatable); default: all of them")
    p.add_argument("--endpoints", default=os.environ.get("BILLING_ENDPOINTS", "127.0.0.1:0"),
                   help="HOST:PORT for /healthz, /readyz and /metrics (port 0: any free one, "
                        "printed at start and in the heartbeats); BILLING_ENDPOINTS")
    p.set_defaults(func=cmd_run)

    usage = sub.add_parser("usage", help="usage events").add_subparsers(dest="verb", required=True)
    p = usage.add_parser("publish", help="publish usage events from a JSON-lines file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage_publish)

    p = sub.add_parser("quota", help="a subscription's credit and quota monitor")
    p.add_argument("subscription")
    p.add_argument("--json", action="store_true")
    p.add_argument("--chart", metavar="FILE.svg", help="write this cycle's usage per day")
    p.add_argument("--metric", help="the metric to chart (default: the first one used)")
    p.add_argument("--at", help="today as of this RFC 3339 time (default: the billing "
                                "clock's time, or now where no clock runs)")
    p.set_defaults(func=cmd_quota)

    p = sub.add_parser("catalog", help="the deployment's catalog; publish FILE records a new "
                                       "version of it")
    p.add_argument("verb", nargs="?", choices=["show", "publish"], default="show")
    p.add_argument("file", nargs="?", help="publish: the catalog TOML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser("subscribe", help="create a subscription on a plan")
    p.add_argument("subscription")
    p.add_argument("--plan", required=True)
    p.add_argument("--account")
    p.add_argument("--at", help="RFC 3339 start time (default: now)")
    for name in CUSTOMER_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name,
                       help=f"the customer's {name.replace('_', ' ')}"
                       + (" (ISO 3166 two letters: decides VAT)" if name == "country" else ""))
    p.add_argument("--business", action="store_true",
                   help="the customer is a business (with --vat-id: reverse charge in the EU)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_subscribe)

    p = sub.add_parser("command", help="run one lifecycle command (docs/contracts.md)")
    p.add_argument("type", help="subscribe, change_plan, cancel, add_seats, buy_pack, ...")
    p.add_argument("subscription")
    p.add_argument("fields", nargs="*",
                   help="key=value fields of the command, e.g. plan=scale; a.b=value for an "
                        "object (customer.country=DE); key:=JSON for any JSON value")
    p.add_argument("--at", help="RFC 3339 time of the command (default: now)")
    p.add_argument("--id", help="idempotency id (default: a new one)")
    p.add_argument("--publish", action="store_true", help="send to billing.commands instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_command)

    commands = sub.add_parser("commands", help="command files").add_subparsers(
        dest="verb", required=True)
    p = commands.add_parser("publish", help="publish commands from a JSON-lines file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_commands_publish)

    for verb, text in (("health", "database, broker, each worker's heartbeat and the lags "
                                  "(exit 1 when unhealthy)"),
                       ("ready", "could a worker start: database with its tables, broker "
                                 "with its topics (exit 1 when not)")):
        p = sub.add_parser(verb, help=text)
        p.set_defaults(func=cmd_health, verb=verb)
        p.add_argument("--json", action="store_true")
        if verb == "health":
            p.add_argument("--max-age", type=float, default=10.0,
                           help="seconds after which a worker's heartbeat is stale")
            p.add_argument("--role", help="only this worker role (a liveness probe)")

    p = sub.add_parser("roles", help="least-privilege roles: setup, a tenant login (sees one "
                                     "account's rows), a worker login (append-only history)")
    p.add_argument("verb", choices=["setup", "tenant", "worker"])
    p.add_argument("name", nargs="?", help="the login role to create or update")
    p.add_argument("account", nargs="?", help="tenant: the account it may see")
    p.add_argument("--password-env", help="read the role's password from this variable "
                                          "(never from the command line)")
    p.set_defaults(func=cmd_roles)

    p = sub.add_parser("parked", help="events a projection could not apply, holding their "
                                      "subscription back: list, release")
    p.add_argument("verb", choices=["list", "release"])
    p.add_argument("--stage", help="release: only this projection (quota, invoices)")
    p.add_argument("--subscription", help="release: only this subscription")
    p.add_argument("--all", action="store_true", help="release: every parked subscription")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_parked)

    p = sub.add_parser("dlq", help="dead letters: list them, replay them (fixed or not)")
    p.add_argument("verb", choices=["list", "replay"])
    p.add_argument("--code", help="only letters with this error code")
    p.add_argument("--id", action="append", metavar="PARTITION:OFFSET",
                   help="only this letter (its place in billing.dlq); repeatable")
    p.add_argument("--file", help="replay: the letters of this JSON-lines file (from `list "
                                  "--jsonl`), with their `value` as edited")
    p.add_argument("--all", action="store_true", help="list: include replayed letters")
    p.add_argument("--again", action="store_true", help="replay letters replayed before")
    p.add_argument("--json", action="store_true")
    p.add_argument("--jsonl", action="store_true", help="list: one letter per line (to edit)")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("clock", help="the billing clock")
    p.add_argument("verb", choices=["show", "advance"])
    p.add_argument("--to", help="advance to this RFC 3339 time")
    p.add_argument("--processes", type=int, default=1,
                   help="spread the subscriptions over this many processes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clock)

    p = sub.add_parser("invoice", help="invoices: show (text, --json, --html, --pdf), list, "
                       "preview (the open draft), credit (a credit note)")
    p.add_argument("verb", choices=["show", "list", "preview", "credit", "explain"])
    p.add_argument("target", nargs="?", help="invoice number (show, credit) or subscription")
    p.add_argument("--json", action="store_true")
    p.add_argument("--html", metavar="FILE")
    p.add_argument("--pdf", metavar="FILE")
    p.add_argument("--at", help="time of a preview or credit note (default: now)")
    p.set_defaults(func=cmd_invoice)

    p = sub.add_parser("report", help="analytics views (docs/analytics.md)")
    p.add_argument("name", help="mrr_by_plan_month, active_subscriptions, movements_by_month, "
                   "revenue_by_invoice_month, usage_per_metric_day, credit_pack_revenue")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("recommend", help="the plan that fits a subscription, and why")
    p.add_argument("subscription")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("history", help="every event of a subscription, an account or all")
    p.add_argument("subscription", nargs="?")
    p.add_argument("--account")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line (export)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("state", help="a subscription's state replayed to a moment or version")
    p.add_argument("subscription")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--as-of", help="RFC 3339 time")
    group.add_argument("--version", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("verify", help="check the event store's hash chains and anchors, its "
                                      "snapshots, and its anchors against the kept copy")
    p.add_argument("--json", action="store_true")
    p.add_argument("--anchors", default="",
                   help="the kept anchors to check against: a file (default: the deployment's "
                        "anchors file), 'topic' (billing.audit), or 'none'")
    p.add_argument("--skip-snapshots", action="store_true",
                   help="do not replay each snapshotted subscription to compare its snapshots")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rebuild", help="rebuild read models from the event store")
    p.add_argument("projection", nargs="*",
                   help="read models to rebuild: quota, invoices (default: all)")
    p.add_argument("--from", dest="source", choices=["store", "kafka"], default="store",
                   help="replay the event store, or billing.events from offset 0")
    p.add_argument("--swap", action="store_true", help="replace the live rows atomically "
                                                       "(refused if they differ, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="with --swap: swap even when the rebuilt tables differ from the live ones")
    p.add_argument("--processes", type=int, default=1,
                   help="replay the event store in this many processes, each a hash "
                        "partition of the subscriptions (no progress bar)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rebuild)
    return parser


def check_arguments(argv: Sequence[str]) -> None:
    """Every argument is stored or looked up as PostgreSQL text: refuse what it cannot hold."""
    from domain.shared.text import printable, storable

    for arg in argv:
        if not storable(arg):
            raise SystemExit(f"billing: argument {printable(arg, 80)!r} holds U+0000 or a lone "
                             "surrogate, which PostgreSQL text cannot store (invalid_text)")


def main(argv: Sequence[str] | None = None) -> int:
    from infra import logs

    argv = sys.argv[1:] if argv is None else list(argv)
    check_arguments(argv)
    args = build_parser().parse_args(argv)
    fmt = os.environ.get("BILLING_LOG_FORMAT") or ("json" if args.func is cmd_run else "text")
    logs.configure(logging.INFO if args.verbose or args.func is cmd_run else logging.WARNING,
                   json_lines=fmt == "json")
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.ERROR)
    from domain.shared.errors import BillingError

    try:
        return int(args.func(args, Settings.from_env()))
    except BillingError as e:  # e.g. the catalog: BILLING_CATALOG names another one
        print(f"refused ({e.code}): {e}", file=sys.stderr)
        return 2

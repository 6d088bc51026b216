"""The `billing` command line: the parser and the dispatch (each command lives in a module of
its noun in infra/cli/; the policy, errors and exit codes are in docs/cli.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from infra.cli.audit import cmd_history, cmd_state, cmd_verify
from infra.cli.catalog import cmd_catalog
from infra.cli.clock import cmd_clock
from infra.cli.command import cmd_command, command_fields
from infra.cli.common import (
    FAILURE,
    CliError,
    Parser,
    UsageError,
    connect,
    count,
    error_object,
    existing_file,
    host_port,
    moment,
    positive_int,
    refusal_exit_code,
    seconds,
    time_arg,
)
from infra.cli.demo import cmd_demo
from infra.cli.dlq import cmd_dlq, letter_id
from infra.cli.invoice import cmd_invoice
from infra.cli.ops import cmd_health, cmd_roles
from infra.cli.parked import cmd_parked
from infra.cli.publish import cmd_commands_publish, cmd_usage_publish
from infra.cli.quota import cmd_quota
from infra.cli.rebuild import READ_MODELS, cmd_rebuild
from infra.cli.recommend import cmd_recommend
from infra.cli.report import REPORTS, cmd_report
from infra.cli.run import ROLES, cmd_run
from infra.cli.serve import cmd_keys, cmd_portal, cmd_serve
from infra.cli.subscribe import CUSTOMER_OPTIONS, PERIODS, cmd_subscribe
from infra.config import ConfigError, Settings

__all__ = ["build_parser", "check_arguments", "cmd_rebuild", "command_fields", "connect",
           "main", "time_arg"]

JSON_HELP = "print the result as JSON (and an error as a JSON object with error and code)"
AT_HELP = "RFC 3339 time with its offset, e.g. 2026-11-01T00:00:00Z"
CLOCK_DEFAULT = "the billing clock's time, or now where no clock has run"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("billing-engine")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _json(p: argparse.ArgumentParser, text: str = JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="billing", description=__doc__,
                    epilog="exit codes: 0 ok, 1 failure or unhealthy, 2 usage or configuration "
                           "error, 3 refused by a rule, 4 not found (docs/cli.md)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at info level; print the traceback of an unexpected error")
    parser.add_argument("--version", action="version", version=f"billing {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the spine end to end on the embedded stack")
    p.add_argument("--subscriptions", type=count, default=300,
                   help="subscriptions to create (default 300)")
    p.add_argument("--events", type=count, default=40_000,
                   help="usage events to publish (default 40,000)")
    _json(p, "also print the summary as JSON")
    p.add_argument("--out", default="out", help="folder for the invoice PDF/HTML and the chart")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the workers (ingestion, relay, projection, invoicing, "
                                   "audit) until stopped")
    p.add_argument("--group", action="store_true",
                   help="join consumer groups (scale out over several processes)")
    p.add_argument("--report-every", type=seconds, default=10.0,
                   help="seconds between progress lines (default 10)")
    p.add_argument("--only", action="append", choices=ROLES, metavar="ROLE",
                   help=f"run only this worker (repeatable): one of {', '.join(ROLES)}; "
                        "default: all of them")
    p.add_argument("--endpoints", type=host_port, default=None,
                   help="HOST:PORT for /healthz, /readyz and /metrics (port 0: any free one, "
                        "printed at start and in the heartbeats); default BILLING_ENDPOINTS, "
                        "else 127.0.0.1:0")
    p.add_argument("--fresh", action="store_true",
                   help="delete the embedded stack's data (every subscription, event and "
                        "invoice in BILLING_DATA_DIR/stack) and start an empty one; without it "
                        "the stack's data is kept across restarts")
    p.set_defaults(func=cmd_run)

    usage = sub.add_parser("usage", help="usage events: publish a file of them").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = usage.add_parser("publish", help="publish usage events from a JSON-lines file")
    p.add_argument("file", type=existing_file, help="one usage event (JSON) per line")
    _json(p)
    p.set_defaults(func=cmd_usage_publish)

    p = sub.add_parser("quota", help="a subscription's credit and quota monitor")
    p.add_argument("subscription", help="the subscription id")
    _json(p)
    p.add_argument("--chart", metavar="FILE.svg", help="write this cycle's usage per day")
    p.add_argument("--metric", help="the metric to chart (default: the first one used)")
    p.add_argument("--at", type=moment, help="today as of this RFC 3339 time (default: the "
                                             "billing clock's time, or now where no clock runs)")
    p.set_defaults(func=cmd_quota)

    p = sub.add_parser("catalog", help="the deployment's catalog: plans, packs, add-ons, user "
                                       "plans; publish FILE records a new version of it")
    p.add_argument("verb", nargs="?", choices=["show", "publish"], default="show",
                   help="show (default) or publish")
    p.add_argument("file", nargs="?", type=existing_file, help="publish: the catalog TOML file")
    _json(p)
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser("subscribe", help="create a subscription on a plan")
    p.add_argument("subscription", help="the new subscription's id")
    p.add_argument("--plan", required=True, help="the plan id (see `billing catalog`)")
    p.add_argument("--period", choices=PERIODS, default="month",
                   help="the billing period, one the plan sells (default month)")
    p.add_argument("--account", help="the account it belongs to (default: the subscription id)")
    p.add_argument("--at", type=moment, help=f"start time (default: {CLOCK_DEFAULT}); {AT_HELP}")
    for name in CUSTOMER_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name,
                       help=f"the customer's {name.replace('_', ' ')}"
                       + (" (ISO 3166 two letters: decides VAT)" if name == "country" else ""))
    p.add_argument("--business", action="store_true",
                   help="the customer is a business (with --vat-id: reverse charge in the EU)")
    _json(p)
    p.set_defaults(func=cmd_subscribe)

    p = sub.add_parser("command", help="run one lifecycle command (docs/contracts.md)")
    p.add_argument("type", help="subscribe, change_plan, cancel, add_seats, buy_pack, ...")
    p.add_argument("subscription", help="the subscription id")
    p.add_argument("fields", nargs="*",
                   help="key=value fields of the command, e.g. plan=scale; a.b=value for an "
                        "object (customer.country=DE); key:=JSON for any JSON value; before or "
                        "after the options")
    p.add_argument("--at", type=moment,
                   help=f"time of the command (default: {CLOCK_DEFAULT}); {AT_HELP}")
    p.add_argument("--id", help="idempotency id (default: a new one)")
    p.add_argument("--publish", action="store_true", help="send to billing.commands instead")
    _json(p)
    p.set_defaults(func=cmd_command, intermixed="fields")

    commands = sub.add_parser("commands", help="command files: publish a file of them")
    verbs = commands.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("publish", help="publish commands from a JSON-lines file")
    p.add_argument("file", type=existing_file, help="one command (JSON) per line")
    _json(p)
    p.set_defaults(func=cmd_commands_publish)

    for verb, text in (("health", "database, broker, each worker's heartbeat and the lags "
                                  "(exit 1 when unhealthy)"),
                       ("ready", "could a worker start: database with its tables, broker "
                                 "with its topics (exit 1 when not)")):
        p = sub.add_parser(verb, help=text)
        p.set_defaults(func=cmd_health, verb=verb)
        _json(p)
        if verb == "health":
            p.add_argument("--max-age", type=seconds, default=10.0,
                           help="seconds after which a worker's heartbeat is stale (default 10)")
            p.add_argument("--role", choices=ROLES, metavar="ROLE",
                           help=f"only this worker role (a liveness probe): {', '.join(ROLES)}")

    p = sub.add_parser("roles", help="least-privilege roles: setup, a tenant login (sees one "
                                     "account's rows), a worker login (append-only history), "
                                     "an API login (`billing serve`: reads, publishes)")
    p.add_argument("verb", choices=["setup", "tenant", "worker", "api"],
                   help="what to set up")
    p.add_argument("name", nargs="?", help="the login role to create or update")
    p.add_argument("account", nargs="?", help="tenant: the account it may see")
    p.add_argument("--password-env", help="read the role's password from this variable "
                                          "(never from the command line)")
    _json(p)
    p.set_defaults(func=cmd_roles)

    p = sub.add_parser("parked", help="events a projection could not apply, holding their "
                                      "subscription back: list, release")
    p.add_argument("verb", choices=["list", "release"], help="list them, or release them")
    p.add_argument("--stage", choices=READ_MODELS,
                   help="release: only this projection (quota, invoices)")
    p.add_argument("--subscription", help="release: only this subscription")
    p.add_argument("--all", action="store_true", help="release: every parked subscription")
    _json(p)
    p.set_defaults(func=cmd_parked)

    p = sub.add_parser("dlq", help="dead letters: list them, replay them (fixed or not)")
    p.add_argument("verb", choices=["list", "replay"], help="list or replay")
    p.add_argument("--code", help="only letters with this error code")
    p.add_argument("--id", action="append", type=letter_id, metavar="PARTITION:OFFSET",
                   help="only this letter (its place in billing.dlq); repeatable")
    p.add_argument("--file", type=existing_file,
                   help="replay: the letters of this JSON-lines file (from `list --jsonl`), "
                        "with their `value` as edited")
    p.add_argument("--all", action="store_true", help="list: include replayed letters")
    p.add_argument("--again", action="store_true", help="replay letters replayed before")
    _json(p)
    p.add_argument("--jsonl", action="store_true", help="list: one letter per line (to edit)")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("clock", help="the billing clock: show it, or advance it (rolls cycles, "
                                     "closes and invoices them)")
    p.add_argument("verb", choices=["show", "advance"], help="show or advance")
    p.add_argument("--to", type=moment, help=f"advance: to this time; {AT_HELP}")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="advance: spread the subscriptions over this many processes")
    _json(p)
    p.set_defaults(func=cmd_clock)

    p = sub.add_parser("invoice", help="invoices: show (text, --json, --html, --pdf), list, "
                       "preview (the open draft), credit (a credit note), explain (each line's "
                       "event and rule), account (an account's invoices per issue date)")
    p.add_argument("verb", choices=["show", "list", "preview", "credit", "explain", "account"],
                   help="what to do")
    p.add_argument("target", nargs="?", help="invoice number (show, credit, explain), "
                                             "subscription (list: optional, preview) or "
                                             "account (account)")
    _json(p)
    p.add_argument("--html", metavar="FILE", help="show: write the invoice as HTML")
    p.add_argument("--pdf", metavar="FILE", help="show: write the invoice as PDF")
    p.add_argument("--at", type=moment,
                   help=f"time of a preview or credit note (default: {CLOCK_DEFAULT}); "
                        f"{AT_HELP}")
    p.set_defaults(func=cmd_invoice)

    p = sub.add_parser("report", help="analytics views of schema billing_read "
                                      "(docs/read-models.md, Analytics)")
    p.add_argument("name", choices=REPORTS, metavar="NAME",
                   help=f"the view: {', '.join(REPORTS)}")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default), csv or json")
    _json(p, "the same as --format json")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="the HTTP API (entitlements, usage, commands, reads; "
                                     "OpenAPI at /openapi.json) beside `billing run`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="server processes sharing the port (default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="API keys: create (shown once), list, revoke")
    p.add_argument("verb", choices=["create", "list", "revoke"], help="what to do")
    p.add_argument("key_id", nargs="?", help="revoke: the key's id")
    p.add_argument("--account", help="create: a tenant's key, acting for this account only")
    p.add_argument("--admin", action="store_true",
                   help="create: an operator's key (every account)")
    p.add_argument("--label", help="create: a note kept with the key")
    _json(p)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("portal", help="a signed, expiring link to a subscription's customer "
                                      "portal (served by `billing serve`)")
    p.add_argument("verb", choices=["link"], help="link: print the link")
    p.add_argument("subscription", help="the subscription id")
    p.add_argument("--ttl", type=positive_int, default=3600,
                   help="seconds the link works (default 3600)")
    p.add_argument("--base-url", default="http://127.0.0.1:8080",
                   help="where `billing serve` is reached (default http://127.0.0.1:8080)")
    _json(p)
    p.set_defaults(func=cmd_portal)

    p = sub.add_parser("recommend", help="the plan that fits a subscription, and why")
    p.add_argument("subscription", help="the subscription id")
    _json(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("history", help="every event of a subscription, an account or all")
    p.add_argument("subscription", nargs="?", help="the subscription id")
    p.add_argument("--account", help="every subscription of this account")
    p.add_argument("--all", action="store_true", help="every subscription")
    _json(p)
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line (export)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("state", help="a subscription's state replayed to a moment or version")
    p.add_argument("subscription", help="the subscription id")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--as-of", type=moment, help=f"replay up to this time; {AT_HELP}")
    group.add_argument("--version", type=positive_int, help="replay up to this version")
    _json(p)
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("verify", help="check the event store's hash chains and anchors, its "
                                      "snapshots, and its anchors against the kept copy "
                                      "(exit 1 on a finding)")
    _json(p)
    p.add_argument("--anchors", default="",
                   help="the kept anchors to check against: a file (default: the deployment's "
                        "anchors file), 'topic' (billing.audit), or 'none'")
    p.add_argument("--skip-snapshots", action="store_true",
                   help="do not replay each snapshotted subscription to compare its snapshots")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("rebuild", help="rebuild read models from the event store, compare them "
                                       "with the live ones (exit 1 on a difference)")
    p.add_argument("projection", nargs="*", metavar="READ_MODEL",
                   help=f"read models to rebuild: {', '.join(READ_MODELS)} (default: all)")
    p.add_argument("--from", dest="source", choices=["store", "kafka"], default="store",
                   help="replay the event store, or billing.events from offset 0")
    p.add_argument("--swap", action="store_true", help="replace the live rows atomically "
                                                       "(refused if they differ, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="with --swap: swap even when the rebuilt tables differ from the live ones")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="replay the event store in this many processes, each a hash "
                        "partition of the subscriptions (no progress bar)")
    _json(p)
    p.set_defaults(func=cmd_rebuild)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each command's `--help` opens with the line `billing --help` lists it with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                child = action.choices[choice.dest]
                child.description = child.description or choice.help
                _describe(child)


def check_arguments(argv: Sequence[str]) -> None:
    """Every argument is stored or looked up as PostgreSQL text: refuse what it cannot hold."""
    from domain.shared.text import printable, storable

    for arg in argv:
        if not storable(arg):
            raise UsageError(f"billing: argument {printable(arg, 80)!r} holds U+0000 or a lone "
                             "surrogate, which PostgreSQL text cannot store", "invalid_text")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments; a command with `intermixed` set takes its key=value fields before or after
    its options (`command T S --at TIME k=v`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    field = getattr(args, "intermixed", None)
    if extra and field and not any(e.startswith("-") for e in extra):
        setattr(args, field, [*getattr(args, field), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = wants_json(argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        try:
            check_arguments(argv)
            args = parse(argv)
            settings = Settings.from_env()
        except ConfigError as e:
            raise UsageError(str(e), "invalid_config") from None
        _configure_logs(args, settings)
        status = int(args.func(args, settings))
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return status
    except CliError as e:
        return _fail(e.exit_code, str(e), e.code, as_json)
    except ConfigError as e:  # found while starting a stack (BILLING_STACK=external, ...)
        return _fail(UsageError.exit_code, str(e), "invalid_config", as_json)
    except BrokenPipeError:
        # The reader went away (`billing invoice show N | head`): nothing left to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILURE
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # a lower layer's one-line refusal (e.g. an incomplete stack)
        if isinstance(e.code, str):
            return _fail(FAILURE, e.code, "failed", as_json)
        raise
    except Exception as e:  # the policy: one line, never a traceback (-v shows it)
        code, message = _classify(e)
        if verbose:
            import traceback

            traceback.print_exc()
        return _fail(refusal_exit_code(code) if code not in _FAILURES else FAILURE,
                     message, code, as_json)


def wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON (its errors are JSON objects then)."""
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return any(a in ("--json", "--jsonl", "--format=json") or (a, b) == ("--format", "json")
               for a, b in pairs)


_FAILURES = frozenset({"database_unreachable", "broker_unreachable", "io_error", "internal"})


def _classify(e: Exception) -> tuple[str, str]:
    """An exception's code and one-line message: a domain refusal says its own code; the rest
    are failures."""
    from domain.shared.errors import BillingError

    if isinstance(e, BillingError):
        return e.code, f"refused ({e.code}): {e}"
    first = (str(e).strip().splitlines() or [""])[0]
    module = type(e).__module__
    if module.startswith("psycopg") and type(e).__name__ in ("OperationalError",
                                                             "InterfaceError"):
        return "database_unreachable", f"database unreachable: {first}"
    if type(e).__name__ == "BrokerUnreachable":
        return "broker_unreachable", str(e.args[0])
    if module.startswith("kafka") and type(e).__name__ in ("NoBrokersAvailable",
                                                           "KafkaTimeoutError"):
        return "broker_unreachable", f"broker unreachable: {type(e).__name__} {first}".strip()
    if isinstance(e, OSError):
        return "io_error", f"{type(e).__name__}: {first}"
    return "internal", (f"unexpected {type(e).__name__}: {first} (run with -v for the "
                        "traceback)")


def _fail(exit_code: int, message: str, code: str, as_json: bool) -> int:
    import json

    try:
        if as_json:
            print(json.dumps(error_object(message, code)), file=sys.stderr)
        else:
            print(message if message.startswith(("billing", "refused")) else
                  f"billing: {message}", file=sys.stderr)
    except BrokenPipeError:
        pass
    return exit_code


def _configure_logs(args: Any, settings: Settings) -> None:
    from infra import logs

    worker = args.func in (cmd_run, cmd_serve)  # long-running: logs at INFO (as JSON)
    fmt = settings.log_format or ("json" if worker else "text")
    logs.configure(logging.INFO if args.verbose or worker else logging.WARNING,
                   json_lines=fmt == "json")
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.ERROR)


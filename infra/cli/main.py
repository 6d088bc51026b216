"""The `billing` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from domain.shared.money import plain
from infra.config import Settings, redact_url
from infra.stack.embedded import Stack, start_stack

if TYPE_CHECKING:
    from datetime import datetime

log = logging.getLogger("billing")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return plain(obj)
    raise TypeError(type(obj).__name__)


def _print_json(obj: Any) -> None:
    print(orjson.dumps(obj, default=_json_default, option=orjson.OPT_INDENT_2).decode())


def _stack_file(settings: Settings) -> Path:
    return settings.data_dir / "current-stack.json"


def connect(settings: Settings) -> Stack:
    """Where to find a running stack: external settings, or the embedded one `billing run` wrote
    down. (An embedded stack's broker is in memory: starting a new one would find no data.)"""
    if settings.stack != "embedded":
        return start_stack(settings)
    path = _stack_file(settings)
    if not path.exists():
        raise SystemExit(
            "no running embedded stack: start `billing run` in another terminal, or set "
            "BILLING_STACK=external with BILLING_DATABASE_URL and BILLING_KAFKA_BOOTSTRAP"
        )
    info = json.loads(path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError):
        raise SystemExit(f"the stack in {path} is gone (its `billing run` stopped)") from None
    return Stack(info["database_url"], info["kafka_bootstrap"], "embedded")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from infra.demo import run_demo
    from infra.wiring.engine import Engine

    t0 = time.perf_counter()
    with start_stack(settings) as stack:
        print(f"stack ({stack.mode}): postgres {redact_url(stack.database_url)}  kafka "
              f"{stack.kafka_bootstrap}"
              f"  [{time.perf_counter() - t0:.1f}s]")
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        try:
            summary = run_demo(engine, args.subscriptions, args.events, print, Path(args.out))
        finally:
            engine.close()
    print(f"\ndone in {time.perf_counter() - t0:.1f}s (stack started and stopped)")
    if args.json:
        _print_json(summary)
    return 0 if summary["quota_matches_input"] else 1


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops.endpoints import BeatClock, Endpoints
    from infra.ops.health import Heartbeat
    from infra.wiring.engine import ROLES, Engine, Workers

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = start_stack(settings)
    stack_file = _stack_file(settings)
    try:
        engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
        if stack.mode == "embedded":
            stack_file.parent.mkdir(parents=True, exist_ok=True)
            # The URL holds the embedded superuser's password: readable by this user only.
            stack_file.touch(mode=0o600)
            stack_file.chmod(0o600)
            stack_file.write_text(json.dumps({
                "pid": os.getpid(), "database_url": stack.database_url,
                "kafka_bootstrap": stack.kafka_bootstrap}))
        roles = list(args.only or ROLES)
        workers = Workers.of(engine, group=args.group, roles=tuple(roles))
        workers.start()
        heartbeat = Heartbeat(stack.database_url, roles)
        beats = BeatClock(max_age=5 * HEARTBEAT_SECONDS)
        endpoints = Endpoints(workers, settings.stall_seconds, beats.recent)
        host, _, port = args.endpoints.rpartition(":")
        port = endpoints.serve(host or "127.0.0.1", int(port or 0))
        print(f"billing workers running (postgres {redact_url(stack.database_url)}, kafka "
              f"{stack.kafka_bootstrap}); /healthz /readyz /metrics on "
              f"http://{host or '127.0.0.1'}:{port}; Ctrl-C or SIGTERM stops them", flush=True)
        last_report = time.monotonic()
        while not stop.wait(min(args.report_every, HEARTBEAT_SECONDS)):
            try:
                details = workers.details(settings.stall_seconds)
                for detail in details.values():
                    detail["endpoints"] = port
                heartbeat.beat(workers.alive(), details)
                beats.reached()
            except Exception as e:  # the database may be restarting: beat again next time
                log.warning("heartbeat not written: %s", type(e).__name__)
            if time.monotonic() - last_report >= args.report_every:
                print(workers.report(), flush=True)
                last_report = time.monotonic()
        print("stopping: finishing the batches in hand", flush=True)
        endpoints.close()
        workers.stop()
        heartbeat.stopped()
        engine.close()
    finally:
        if stack.mode == "embedded":
            stack_file.unlink(missing_ok=True)
        stack.close()
    return 0


HEARTBEAT_SECONDS = 2.0


def cmd_roles(args: argparse.Namespace, settings: Settings) -> int:
    """Least-privilege roles and tenant isolation (infra/ops/security.py); run as the owner."""
    import psycopg

    from infra.ops import security
    stack = connect(settings)
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not password:
        raise SystemExit(f"{args.password_env} is not set")
    with psycopg.connect(stack.database_url) as conn:
        if args.verb == "setup":
            for note in security.setup_roles(conn):
                print(f"still open: {note}")
        elif args.verb == "tenant":
            if not args.name or not args.account:
                raise SystemExit("billing roles tenant ROLE ACCOUNT")
            security.setup_roles(conn)
            security.add_tenant(conn, args.name, args.account, password)
        else:
            if not args.name:
                raise SystemExit("billing roles worker ROLE")
            security.setup_roles(conn)
            security.add_worker_login(conn, args.name, password)
    print(f"roles {args.verb}: done")
    return 0


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops import health
    stack = connect(settings)
    if args.verb == "ready":
        report = health.ready(stack.database_url, stack.kafka_bootstrap, settings.topics.all(),
                              settings.kafka_options)
        verdict = bool(report["ready"])
    else:
        report = health.check(stack.database_url, stack.kafka_bootstrap, settings.topics.all(),
                              args.max_age, settings.kafka_options)
        if args.role:
            report["workers"] = [w for w in report["workers"] if w["role"] == args.role]
            report["problems"] = [p for p in report["problems"] if p.startswith(args.role)
                                  or p.startswith(("database", "broker"))]
            if not report["workers"]:
                report["problems"].append(f"no {args.role} worker is running")
            report["healthy"] = not report["problems"]
        verdict = bool(report["healthy"])
    if args.json:
        print(json.dumps(report, default=str))
    else:
        for key in ("database", "tables", "broker"):
            if key in report:
                print(f"{key:<10} {'ok' if report[key] else 'DOWN'}")
        for w in report.get("workers", []):
            print(f"{w['role']:<10} {'ok' if w['healthy'] else 'UNHEALTHY'}  {w['worker']}  "
                  f"beat {w['seconds_since_beat']:.1f}s ago")
            for name, p in w["detail"].get("partitions", {}).items():
                print(f"    {name:<40} position {p.get('position')}  lag {p.get('lag')}  "
                      f"progress {p.get('seconds_since_progress')}s ago")
        for name, lag in report.get("lag", {}).items():
            print(f"lag {name}: {lag}")
        for problem in report.get("problems", []):
            print(f"problem: {problem}")
        if args.verb == "health":
            print("healthy" if verdict else "NOT healthy")
        else:
            print("ready" if verdict else "NOT ready")
    return 0 if verdict else 1


def cmd_usage_publish(args: argparse.Namespace, settings: Settings) -> int:
    return _publish_file(args, settings, settings.topics.usage, "usage events")


def _publish_file(args: argparse.Namespace, settings: Settings, topic: str, what: str) -> int:
    """Publish a JSON-lines file, keyed by each line's "subscription"; lines that are not valid
    JSON are published as they are (the consumer dead-letters them with a code)."""
    from infra.kafka import clients as kafka
    stack = connect(settings)
    with open(args.file, "rb") as f:
        messages = [(_key_of(line), line) for line in (raw.strip() for raw in f) if line]
    producer = kafka.producer(stack.kafka_bootstrap, settings)
    ends = kafka.publish(producer, topic, messages)
    producer.close()
    if args.json:
        _print_json({"published": len(messages), "topic": topic,
                     "end_offsets": {str(p): o for p, o in sorted(ends.items())}})
    else:
        print(f"published {len(messages)} {what} to {topic}")
    return 0


def cmd_quota(args: argparse.Namespace, settings: Settings) -> int:
    """The credit and quota monitor of one subscription."""
    import psycopg

    from projections.quota import store as quota_store
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        rows = quota_store.read(conn, args.subscription)
        if not rows:
            print(f"no quota rows for {args.subscription}", file=sys.stderr)
            return 1
        days, members = quota_store.usage_history(conn, args.subscription,
                                                  rows[0]["cycle_start"])
    now = time_arg(args.at, "--at") if args.at else _billing_now(stack, settings)
    monitor = _monitor(rows, days, members, now)
    if args.chart:
        from infra.render.usage_chart import usage_chart_svg

        metric = args.metric or next((r["metric"] for r in rows if r["used"]), rows[0]["metric"])
        row = next(r for r in rows if r["metric"] == metric)
        per_day = {d: q for m, d, q in days if m == metric}
        Path(args.chart).write_text(usage_chart_svg(
            args.subscription, metric, row["cycle_start"], row["cycle_end"], per_day,
            row["included"] + row["packs"], row["daily_cap"]), encoding="utf-8")
    if args.json:
        _print_json(monitor)
        return 0
    first = rows[0]
    print(f"{first['subscription_id']}  account {first['account']}  plan {first['plan_id']}  "
          f"cycle {first['cycle_start']:%Y-%m-%d %H:%M} .. {first['cycle_end']:%Y-%m-%d %H:%M}"
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
    return 0


def _billing_now(stack: Stack, settings: Settings) -> datetime:
    """The billing clock's time (the engine's business time), or now where no clock runs:
    what "today" means for the credit monitor."""
    from datetime import UTC
    from datetime import datetime as wall

    from infra.wiring.engine import open_billing

    app = open_billing(stack.database_url, settings)
    try:
        clock = app.clock()
    finally:
        app.close()
    now = wall.now(UTC)
    return clock.now if clock is not None else now


def _monitor(rows: list[dict[str, Any]], days: list[tuple[Any, ...]],
             members: list[tuple[Any, ...]], now: datetime) -> dict[str, Any]:
    """Per metric: used and remaining this cycle; today (the billing clock's UTC day): used,
    remaining under the daily cap and when it resets; exhausted when either is spent."""
    from datetime import UTC, time, timedelta
    from datetime import datetime as moment

    today = now.astimezone(UTC).date()
    midnight = moment.combine(today + timedelta(days=1), time(), UTC)
    metrics = []
    for r in rows:
        per_day = {d.isoformat(): str(q) for m, d, q in days if m == r["metric"]}
        used_today = next((q for m, d, q in days if m == r["metric"] and d == today),
                          Decimal(0))
        cap = r["daily_cap"]
        cap_reached = cap is not None and used_today >= cap
        metrics.append({
            "metric": r["metric"], "included": str(r["included"]), "packs": str(r["packs"]),
            "used": str(r["used"]), "remaining": str(r["remaining"]),
            "remaining_this_cycle": str(r["remaining"]),
            "limit_kind": r["limit_kind"], "exhausted": bool(r["exhausted"] or cap_reached),
            "daily_cap": None if cap is None else str(cap),
            "today": today.isoformat(), "today_used": str(used_today),
            "remaining_today": None if cap is None else str(max(cap - used_today, 0)),
            "daily_cap_reached": cap_reached,
            "next_daily_reset": None if cap is None else midnight.isoformat(),
            "per_day": per_day,
            "per_member": {who: str(q) for m, who, q in members if m == r["metric"]},
        })
    first = rows[0]
    return {"subscription": first["subscription_id"], "account": first["account"],
            "plan": first["plan_id"], "cycle_start": first["cycle_start"].isoformat(),
            "resets_at": first["cycle_end"].isoformat(), "as_of": now.isoformat(),
            "metrics": metrics}

def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """The deployment's catalog as recorded in the store (`publish FILE`: record a new
    version of it, the one way to change prices)."""
    from domain.catalog.model import Catalog
    from domain.shared.errors import BillingError
    from infra.wiring.engine import load_catalog, open_billing, publish_catalog

    if args.verb == "publish":
        if not args.file:
            raise SystemExit("billing catalog publish FILE")
        new = Catalog.from_file(Path(args.file))
        app = open_billing(connect(settings).database_url, settings)
        try:
            changed = publish_catalog(app, new)
        except BillingError as e:
            print(f"refused ({e.code}): {e}", file=sys.stderr)
            return 2
        finally:
            app.close()
        outcome = ("published: new subscriptions bill with it at once, existing ones from "
                   "their next cycle" if changed else "is already the version in force")
        print(f"catalog {new.id} version {new.version} {outcome}")
        return 0
    try:
        app = open_billing(connect(settings).database_url, settings)
        catalog, recorded = app.catalog, "as recorded in the store"
        app.close()
    except SystemExit:
        catalog, recorded = load_catalog(settings), "from BILLING_CATALOG (no stack running)"
    plans: list[dict[str, Any]] = [
        {"id": p.id, "name": p.name, "rank": p.rank, "price": plain(p.price.amount),
         "currency": p.currency, "prices": {k: plain(v) for k, v in p.prices.items()},
         "allowances": {m: a.as_dict() for m, a in p.allowances.items()}}
        for p in sorted(catalog.plans.values(), key=lambda p: p.rank)
    ]
    if args.json:
        _print_json({"id": catalog.id, "version": catalog.version, "plans": plans})
        return 0
    print(f"catalog {catalog.id} (version {catalog.version}, {recorded}), prices in "
          f"{catalog.currency}, excluding tax")
    for plan in plans:
        allowances = ", ".join(f"{m} {a['included']} ({a['limit']})"
                               for m, a in plan["allowances"].items())
        prices = ", ".join(f"{v}/{k}" for k, v in plan["prices"].items())
        print(f"  {plan['id']:<12} {plan['name']:<12} {prices:<28} {allowances}")
    return 0


def cmd_subscribe(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from domain.shared.errors import BillingError
    from infra.wiring.engine import open_billing

    at = time_arg(args.at, "--at") if args.at else datetime.now(UTC)
    customer = {name: getattr(args, name) for name in CUSTOMER_OPTIONS
                if getattr(args, name) is not None}
    if args.business:
        customer["business"] = True
    stack = connect(settings)
    app = open_billing(stack.database_url, settings)
    try:
        app.subscribe(args.subscription, args.account or args.subscription, args.plan, at,
                      **({"customer": customer} if customer else {}))
    except BillingError as e:
        print(json.dumps({"error": e.code, "message": str(e)}) if args.json
              else f"refused ({e.code}): {e}", file=sys.stderr)
        return 2
    finally:
        app.close()
    result = {"subscription": args.subscription, "plan": args.plan, "at": at.isoformat()}
    print(json.dumps(result) if args.json else f"subscribed {args.subscription} to {args.plan}")
    return 0


CUSTOMER_OPTIONS = ("name", "address", "country", "vat_id", "email")


def _field_value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def command_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` (true/false and integers typed, the rest text), `a.b=value` into an object
    (`customer.country=DE`), `key:=JSON` for any JSON value (`customer:='{"country":"DE"}'`)."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        raw_json = ":=" in pair and pair.index(":=") < pair.find("=") + 1
        key, sep, value = pair.partition(":=" if raw_json else "=")
        if not sep or not key:
            raise SystemExit(f"fields are key=value or key:=JSON, not {pair!r}")
        try:
            parsed = orjson.loads(value) if raw_json else _field_value(value)
        except orjson.JSONDecodeError as e:
            raise SystemExit(f"{key}: not JSON: {e}") from None
        *path, last = key.split(".")
        target = fields
        for part in path:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SystemExit(f"{key}: {part} is not an object")
        target[last] = parsed
    return fields


def cmd_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run one lifecycle command against the event store (or publish it with --publish)."""
    import uuid
    from datetime import UTC, datetime

    from domain.contracts.commands import parse_command
    from domain.shared.errors import BillingError
    from infra.kafka import clients as kafka
    from infra.wiring.engine import open_billing

    raw: dict[str, Any] = {
        "id": args.id or f"cli-{uuid.uuid4().hex}", "type": args.type,
        "subscription": args.subscription,
        "at": args.at or datetime.now(UTC).isoformat(),
    }
    raw.update(command_fields(args.fields))
    stack = connect(settings)
    if args.publish:
        producer = kafka.producer(stack.kafka_bootstrap, settings)
        kafka.publish(producer, settings.topics.commands,
                      [(args.subscription.encode(), orjson.dumps(raw))])
        producer.close()
        print(json.dumps({"published": raw}) if args.json else f"published {raw['id']}")
        return 0
    app = open_billing(stack.database_url, settings)
    try:
        outcome = app.handle(parse_command(raw))
    except BillingError as e:
        print(json.dumps({"error": e.code, "message": str(e)}) if args.json
              else f"refused ({e.code}): {e}", file=sys.stderr)
        return 2
    finally:
        app.close()
    result = {"id": raw["id"], "type": args.type, "subscription": args.subscription,
              "result": outcome.result, "events": outcome.events}
    print(json.dumps(result) if args.json
          else f"{args.type} {args.subscription}: {outcome.result} ({outcome.events} events)")
    return 0


def cmd_commands_publish(args: argparse.Namespace, settings: Settings) -> int:
    return _publish_file(args, settings, settings.topics.commands, "commands")


def _key_of(line: bytes) -> bytes | None:
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # published as is: the consumer dead-letters it with a code
    if isinstance(body, dict) and isinstance(body.get("subscription"), str):
        return str(body["subscription"]).encode()
    return None


def cmd_parked(args: argparse.Namespace, settings: Settings) -> int:
    """Events a projection could not apply (projections/parked.py)."""
    import psycopg

    from projections import parked

    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        if args.verb == "release":
            if not args.subscription and not args.all:
                raise SystemExit("billing parked release: name --subscription S (or --all)")
            released = parked.release(conn, args.stage, args.subscription)
            print(f"released {released} parked event(s); rebuild the read model to apply "
                  "what was held back: billing rebuild --swap")
            return 0
        rows = parked.listing(conn)
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['stage']:<9} {row['subscription']}  v{row['version']}  {row['code']}"
                  f"  {row['source']}  {row['error'][:120]}")
        print(f"{len(rows)} parked event(s)")
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, or replay them (as they were, or as edited in a JSON-lines file)."""
    import psycopg

    from infra.kafka import clients as kafka
    from infra.kafka import dead_letters as dlq
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        done = dlq.replayed(conn)
        if args.verb == "replay" and args.file:
            chosen = [_letter_from_line(line) for line in Path(args.file).read_text(
                encoding="utf-8").splitlines() if line.strip()]
        else:
            chosen = dlq.read_letters(stack.kafka_bootstrap, settings)
        wanted_ids = {tuple(int(x) for x in i.split(":")) for i in args.id or []}
        selected = [
            letter for letter in chosen
            if (args.code is None or letter.get("code") == args.code)
            and (not wanted_ids or (letter["dlq_partition"], letter["dlq_offset"]) in wanted_ids)
            and (args.again or args.all
                 or (letter["dlq_partition"], letter["dlq_offset"]) not in done)
        ]
        if args.verb == "list":
            for letter in selected:
                letter["replayed"] = (letter["dlq_partition"], letter["dlq_offset"]) in done
            if args.jsonl:
                for letter in selected:
                    print(json.dumps(letter, default=str))
            elif args.json:
                print(json.dumps(selected, indent=2, default=str))
            else:
                for letter in selected:
                    value = letter.get("value")
                    shown = (value if isinstance(value, str) else "<binary>")[:80]
                    print(f"{letter['dlq_partition']}:{letter['dlq_offset']}  "
                          f"{letter['code']:<24} {letter['topic']}:{letter['partition']}"
                          f"@{letter['offset']}  {'(replayed) ' if letter['replayed'] else ''}"
                          f"{letter['error'][:60]}  {shown}")
                print(f"{len(selected)} dead letter(s)")
            return 0
        producer = kafka.producer(stack.kafka_bootstrap, settings)
        try:
            count = dlq.replay(producer, conn, selected)
        finally:
            producer.close()
    print(json.dumps({"replayed": count}) if args.json else f"replayed {count} message(s)")
    return 0


def _letter_from_line(line: str) -> dict[str, Any]:
    letter = json.loads(line)
    if not isinstance(letter, dict) or "dlq_partition" not in letter or "topic" not in letter:
        raise SystemExit("each line must be a dead letter as printed by `billing dlq list "
                         "--jsonl`")
    return letter


def cmd_clock(args: argparse.Namespace, settings: Settings) -> int:

    from domain.shared.errors import BillingError
    from infra.wiring.engine import open_billing

    stack = connect(settings)
    app = open_billing(stack.database_url, settings)
    try:
        if args.verb == "show":
            clock = app.clock()
            now = clock.now.isoformat() if clock else None
            print(json.dumps({"now": now}) if args.json else f"billing clock: {now or 'not set'}")
            return 0
        to = time_arg(args.to, "--to") if args.to else None
        if to is None:
            raise SystemExit("--to is required, e.g. 2026-12-01T00:00:00+00:00")
        recorder: Any = app.recorder
        runner = None
        if args.processes > 1:
            from infra.ops.parallel import process_runner

            runner = process_runner(stack.database_url, settings, args.processes)
        try:
            changed, events = app.advance_clock(to, recorder.subscription_ids(), runner=runner)
        except BillingError as e:
            print(f"refused ({e.code}): {e}", file=sys.stderr)
            return 2
    finally:
        app.close()
    result = {"now": to.isoformat(), "subscriptions_changed": changed, "events": events}
    print(json.dumps(result) if args.json
          else f"clock at {to.isoformat()}: {changed} subscriptions changed, {events} events")
    return 0


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


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    import csv
    import io

    import psycopg

    from projections.analytics import store as analytics
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        try:
            columns, rows = analytics.report(conn, args.name)
        except KeyError:
            raise SystemExit(f"unknown report {args.name!r}; known: "
                             f"{', '.join(analytics.VIEWS)}") from None
    cells = [[_cell(v) for v in row] for row in rows]
    if args.format == "json":
        _print_json([dict(zip(columns, row, strict=True)) for row in cells])
    elif args.format == "csv":
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
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from infra.wiring.engine import load_catalog
    from projections.recommendations import store as recommendations
    stack = connect(settings)
    with psycopg.connect(stack.database_url) as conn:
        inputs = recommendations.read_inputs(conn, args.subscription)
    if inputs is None:
        print(f"nothing known about {args.subscription} yet", file=sys.stderr)
        return 1
    result = recommendations.recommend(inputs, load_catalog(settings))
    if args.json:
        _print_json({"subscription": args.subscription, **result})
        return 0
    print(f"{args.subscription}: on {result['current_plan']}, recommended "
          f"{result['recommended_plan']}: {result['reason']}")
    if result["what_if"]:
        print("  last closed cycle on each plan:")
        for w in result["what_if"]:
            note = "" if w["fits"] else "  (over its allowances)"
            print(f"    {w['plan']:<14} {w['cost']:>12}{note}")
    return 0


def _audit_app(settings: Settings) -> tuple[Any, Any]:
    import psycopg

    from infra.wiring.engine import open_billing

    stack = connect(settings)
    return open_billing(stack.database_url, settings), \
        psycopg.connect(stack.database_url)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops.audit import history

    if not (args.subscription or args.account or args.all):
        raise SystemExit("name a subscription, or --account ACCOUNT, or --all")
    app, conn = _audit_app(settings)
    with conn:
        events = history(app, conn, subscription=args.subscription, account=args.account)
    app.close()
    if args.jsonl:
        for event in events:
            sys.stdout.write(orjson.dumps(event, default=_json_default).decode() + "\n")
    elif args.json:
        _print_json(events)
    else:
        for e in events:
            print(f"{e['subscription']:<16} v{e['version']:<5} {e['type']:<26} "
                  f"{e['time'][:19]}  recorded {e['recorded_at'][:19]}")
    return 0


def cmd_state(args: argparse.Namespace, settings: Settings) -> int:

    from domain.shared.errors import BillingError, UnknownSubscription
    from infra.ops.audit import replay_from_events, state_summary, version_as_of

    app, conn = _audit_app(settings)
    conn.close()
    try:
        version = args.version
        if args.as_of:
            at = time_arg(args.as_of, "--as-of")
            version = version_as_of(app, args.subscription, at)
            if version == 0:
                print(f"{args.subscription} did not exist at {args.as_of}", file=sys.stderr)
                return 1
        subscription = replay_from_events(app, args.subscription, version)
        if subscription is None:
            raise UnknownSubscription(f"no subscription {args.subscription!r}")
        state = state_summary(subscription)
    except BillingError as e:
        print(f"refused ({e.code}): {e}", file=sys.stderr)
        return 1
    finally:
        app.close()
    if args.json:
        _print_json(state)
        return 0
    print(f"{state['subscription']} at version {state['version']}: {state['status']}, plan "
          f"{state['plan']} ({state['price']} {state['currency']} per {state['period']}, "
          f"catalog {state['catalog_version']})")
    print(f"  cycle {state['cycle_start'][:19]} .. {state['cycle_end'][:19]}   seats "
          f"{state['seats']}   members {len(state['members'])}")
    for metric, a in state["allowances"].items():
        print(f"  {metric:<16} used {a['used']:>14} of {a['included']:>12} (+{a['packs']} packs)"
              f"  {a['limit']}")
    scheduled = {k: v for k, v in state["scheduled"].items() if v}
    if scheduled:
        print(f"  scheduled: {scheduled}")
    if state["invoices"]:
        print(f"  invoices: {state['invoices']}")
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The store's own hash chains and anchors, its snapshots against its events, and its
    anchors against the copy kept outside PostgreSQL (infra/ops/anchors.py)."""
    from pathlib import Path

    from infra.ops import anchors
    from infra.ops.audit import verify, verify_external, verify_snapshots

    app, conn = _audit_app(settings)
    try:
        report = verify(conn)
        if not args.skip_snapshots:
            verify_snapshots(app, conn, report)
        if args.anchors == "topic":
            records = anchors.read_topic(connect(settings).kafka_bootstrap, settings)
            source = settings.topics.audit
        elif args.anchors != "none":
            path = (Path(args.anchors) if args.anchors
                    else settings.anchors_file(connect(settings).database_url))
            records, source = anchors.read_file(path), str(path)
        else:
            records, source = [], "none"
        verify_external(conn, records, settings.audit_key, report)
    finally:
        conn.close()
        app.close()
    result = {"clean": report.clean, "events": report.events, "streams": report.streams,
              "anchors": report.anchors, "final_anchor": report.final_anchor,
              "snapshots": report.snapshots, "kept_anchors": source,
              "kept_anchors_checked": report.external_anchors,
              "anchors_not_yet_kept": report.unexported_anchors,
              "findings": [vars(f) for f in report.findings]}
    if args.json:
        _print_json(result)
    else:
        for f in report.findings:
            where = (f"{f.subscription} v{f.version}" if f.anchor is None else
                     f"anchor {f.anchor}")
            print(f"{f.kind:<20} {where}: {f.detail}")
        verdict = "intact" if report.clean else f"{len(report.findings)} finding(s)"
        print(f"{report.events:,} events in {report.streams:,} streams, {report.anchors:,} "
              f"anchors, {report.snapshots:,} snapshots: {verdict}; final anchor "
              f"{report.final_anchor}")
        if not report.external_anchors:
            print(f"warning: no anchors kept outside PostgreSQL were checked ({source}): a "
                  "rewrite of events, hashes and anchors together would not show")
        else:
            print(f"checked against {report.external_anchors:,} anchors kept in {source}"
                  + (f"; {report.unexported_anchors:,} newer not yet kept"
                     if report.unexported_anchors else "")
                  + ("" if settings.audit_key else " (no BILLING_AUDIT_KEY: records unsigned)"))
    return 0 if report.clean else 3


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops import rebuild
    from infra.wiring.engine import Engine

    unknown = set(args.projection) - set(rebuild.TABLES)
    if unknown:
        raise SystemExit(f"unknown read model(s): {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(rebuild.TABLES)}")
    projections = list(args.projection or rebuild.TABLES)
    stack = connect(settings)
    engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap)
    try:
        replay = rebuild.kafka_replay(engine, projections) if args.source == "kafka" else None
        if replay is None and args.processes > 1:
            replay = rebuild.replay_parallel(stack.database_url, settings, projections,
                                             args.processes)
        print(f"rebuilding {', '.join(projections)} from "
              f"{'billing.events (offset 0)' if args.source == 'kafka' else 'the event store'}"
              f" into fresh tables"
              f"{f' in {args.processes} processes' if args.source == 'store' else ''}",
              file=sys.stderr)
        # --force is read with a default: an older parser does not define it.
        force = bool(args.force)
        report = rebuild.rebuild(engine.app, stack.database_url, projections,
                                 do_swap=args.swap, force=force, replay=replay)
    finally:
        engine.close()
    status = 0 if report.identical else 1
    if args.json:
        _print_json({"events": report.events, "seconds": round(report.seconds, 3),
                     "identical": report.identical, "swapped": report.swapped,
                     "refused": report.refused, "behind": report.behind,
                     "tables": [vars(c) for c in report.comparisons]})
        return status
    for c in report.comparisons:
        diff = "same" if not (c.missing or c.extra) else \
            f"{c.missing} missing, {c.extra} extra (e.g. {', '.join(c.examples)})"
        print(f"  {c.table:<34} live {c.live:>8,}  rebuilt {c.rebuilt:>8,}  {diff}")
    given = " (they got the rebuilt rows)" if report.swapped else ""
    for name, count in report.behind.items():
        if count:
            print(f"  {count:,} subscription(s) of {name} not compared: the live tables had "
                  f"not caught up with them{given}")
    differing = ", ".join(c.table for c in report.differences)
    print(f"{report.events:,} events replayed in {report.seconds:.2f}s; "
          f"{'identical' if report.identical else f'DIFFERENT ({differing})'}; "
          f"{'swapped in' if report.swapped else 'live tables untouched'}"
          f"{' anyway (--force)' if report.swapped and not report.identical else ''}"
          f"{'' if args.swap else ' (use --swap)'}")
    if report.refused:
        print(f"NOT swapped: the rebuilt tables differ from the live ones in {differing}; "
              "nothing was changed. Find out why, or swap anyway with --swap --force.")
    return status

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


def time_arg(text: str, flag: str) -> datetime:
    """A time given on the command line: RFC 3339 with its offset, as on the topics."""
    from domain.contracts.usage import parse_rfc3339

    try:
        return parse_rfc3339(text)
    except ValueError as e:
        raise SystemExit(f"{flag}: {e} (invalid_timestamp)") from None


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

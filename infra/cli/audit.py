"""`billing history`, `state` and `verify`: for auditors."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from infra.cli.common import FAILURE, OK, UsageError, connect, not_found
from infra.config import Settings
from infra.render.terminal import json_default, print_json


def _audit_app(settings: Settings) -> tuple[Any, Any]:
    import psycopg

    from infra.wiring.engine import open_billing

    stack = connect(settings)
    app = open_billing(stack.database_url, settings)
    try:
        return app, psycopg.connect(stack.database_url)
    except BaseException:
        app.close()
        raise


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops.audit import history

    if not (args.subscription or args.account or args.all):
        raise UsageError("billing history: name a subscription, or --account ACCOUNT, or --all",
                         "usage")
    app, conn = _audit_app(settings)
    with conn:
        events = history(app, conn, subscription=args.subscription, account=args.account)
    app.close()
    if args.jsonl:
        for event in events:
            sys.stdout.write(orjson.dumps(event, default=json_default).decode() + "\n")
    elif args.json:
        print_json(events)
    else:
        for e in events:
            print(f"{e['subscription']:<16} v{e['version']:<5} {e['type']:<26} "
                  f"{e['time'][:19]}  recorded {e['recorded_at'][:19]}")
    return OK


def cmd_state(args: argparse.Namespace, settings: Settings) -> int:
    from infra.ops.audit import replay_from_events, state_summary, version_as_of

    app, conn = _audit_app(settings)
    conn.close()
    try:
        version = args.version
        if args.as_of:
            version = version_as_of(app, args.subscription, args.as_of)
            if version == 0:
                not_found(f"{args.subscription} did not exist at {args.as_of.isoformat()}")
        subscription = replay_from_events(app, args.subscription, version)
        if subscription is None:
            not_found(f"no subscription {args.subscription!r}")
        state = state_summary(subscription)
    finally:
        app.close()
    if args.json:
        print_json(state)
        return OK
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
    return OK


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
        print_json(result)
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
    return OK if report.clean else FAILURE

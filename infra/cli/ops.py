"""`billing health`, `ready` and `roles`."""

from __future__ import annotations

import argparse
import json
import os

from infra.cli.common import connect
from infra.config import Settings


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

"""`billing health`, `ready` and `roles`."""

from __future__ import annotations

import argparse
import json
import os

from infra.cli.common import FAILURE, OK, UsageError, connect
from infra.config import Settings
from infra.render.terminal import print_json


def cmd_roles(args: argparse.Namespace, settings: Settings) -> int:
    """Least-privilege roles and tenant isolation (infra/ops/security.py); run as the owner."""
    import psycopg

    from infra.ops import security
    if args.verb == "tenant" and not (args.name and args.account):
        raise UsageError("billing roles tenant ROLE ACCOUNT: name the login role and the "
                         "account it may see", "usage")
    if args.verb in ("worker", "api") and not args.name:
        raise UsageError(f"billing roles {args.verb} ROLE: name the login role", "usage")
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not password:
        raise UsageError(f"--password-env: {args.password_env} is not set", "usage")
    stack = connect(settings)
    notes: list[str] = []
    with psycopg.connect(stack.database_url) as conn:
        if args.verb == "setup":
            notes = list(security.setup_roles(conn))
        elif args.verb == "tenant":
            security.setup_roles(conn)
            security.add_tenant(conn, args.name, args.account, password)
        else:
            security.setup_roles(conn)
            add_login = {"worker": security.add_worker_login, "api": security.add_api_login}
            add_login[args.verb](conn, args.name, password)
    if args.json:
        print_json({"roles": args.verb, "done": True, "still_open": notes})
        return OK
    for note in notes:
        print(f"still open: {note}")
    print(f"roles {args.verb}: done")
    return OK


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
        return OK if verdict else FAILURE
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
    return OK if verdict else FAILURE

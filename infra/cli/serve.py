"""`billing serve`: the HTTP API (infra/api/) and the customer portal (infra/portal/) on the
running stack; `billing keys`: its API keys (create, list, revoke); `billing portal link`: a
signed link to one subscription's portal."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from infra.cli.common import OK, UsageError, connect, not_found
from infra.config import Settings
from infra.render.terminal import print_json

log = logging.getLogger(__name__)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted. Beside `billing run` (which owns the workers and, on the
    embedded default, the stack): this process reads the read models and publishes to the
    topics; it never owns an input position."""
    import uvicorn

    from infra.api.app import SERVER_OPTIONS

    options = {"host": args.host, "port": args.port, **SERVER_OPTIONS,
               "timeout_graceful_shutdown": 5}
    log.info("billing API on http://%s:%s (OpenAPI at /openapi.json, /docs), %d process(es)",
             args.host, args.port, args.workers)
    if args.workers > 1:  # each process its own context, on one listening socket
        connect(settings)  # a missing stack is said here, once, not by every process
        uvicorn.run("infra.cli.serve:serving_process", factory=True, workers=args.workers,
                    **options)
        return OK
    app, close = _serving(settings)
    try:
        uvicorn.Server(uvicorn.Config(app, **options)).run()
    finally:
        close()
    return OK


def _serving(settings: Settings) -> tuple[Any, Callable[[], None]]:
    # The entitlement cache's follower (kafka-python's I/O thread, the refresh) runs beside
    # the event loop; at Python's default of 5 ms between GIL hand-overs a check arriving
    # while it ran waited up to that long (2,000 checks/s with the workers idle: p99 7.5 ms,
    # 5.0 ms at 0.5 ms).
    sys.setswitchinterval(0.0005)
    from infra.api.app import serving_app
    from infra.api.context import ApiContext
    from infra.wiring.engine import Engine

    stack = connect(settings)
    engine = Engine.open(settings, stack.database_url, stack.kafka_bootstrap,
                         adopt_topics=False)
    try:
        ctx = ApiContext.open(engine)
    except BaseException:
        engine.close()
        raise

    def close() -> None:
        ctx.close()
        engine.close()
    return serving_app(ctx), close


def serving_process() -> Any:
    """The app of one of `billing serve --workers N`'s processes (uvicorn starts each one
    anew: settings and logs from the environment)."""
    from infra import logs

    settings = Settings.from_env()
    logs.configure(logging.INFO, json_lines=(settings.log_format or "json") == "json")
    app, _ = _serving(settings)  # closed with the process
    return app


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from infra.api import keys

    if args.verb == "create" and bool(args.account) == bool(args.admin):
        raise UsageError("billing keys create: --account ACCOUNT (a tenant's key) or --admin "
                         "(an operator's)", "usage")
    if args.verb == "revoke" and not args.key_id:
        raise UsageError("billing keys revoke KEY_ID", "usage")
    stack = connect(settings)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        if args.verb == "create":
            created = keys.create(conn, account=args.account, admin=args.admin,
                                  label=args.label or "")
            if args.json:
                print_json({"key_id": created.key_id, "token": created.token,
                            "account": created.account, "admin": created.admin})
            else:
                print(created.token, flush=True)  # alone on stdout: KEY=$(billing keys create)
                print(f"key {created.key_id} for "
                      f"{'operators (every account)' if created.admin else created.account}: "
                      "shown once, stored only as a hash", file=sys.stderr)
            return OK
        if args.verb == "revoke":
            if not keys.revoke(conn, args.key_id, datetime.now(UTC)):
                not_found(f"no active key {args.key_id}")
            print_json({"revoked": args.key_id}) if args.json else print(
                f"revoked {args.key_id}")
            return OK
        rows = keys.listed(conn)
    if args.json:
        print_json([{**r, "created_at": r["created_at"].isoformat(),
                     "revoked_at": r["revoked_at"] and r["revoked_at"].isoformat()}
                    for r in rows])
    else:
        for r in rows:
            who = "admin" if r["admin"] else r["account"]
            state = "revoked" if r["revoked_at"] else "active"
            print(f"{r['key_id']}  {who:<24} {state:<8} {r['created_at']:%Y-%m-%d %H:%M}  "
                  f"{r['label']}")
    return OK


def cmd_portal(args: argparse.Namespace, settings: Settings) -> int:
    """A signed link to the customer portal of one subscription (infra/portal/links.py)."""
    import time

    import psycopg

    from infra.portal import links

    if not 60 <= args.ttl <= links.MAX_TTL_SECONDS:
        raise UsageError(f"--ttl: from 60 to {links.MAX_TTL_SECONDS} seconds", "usage")
    stack = connect(settings)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM billing_events WHERE originator_id = %s AND "
                              "originator_version = 1", (args.subscription,)).fetchone()
        if exists is None:
            not_found(f"no subscription {args.subscription!r}")
        secret = links.secrets_of(conn)[0]
    expires = int(time.time()) + args.ttl
    url = (f"{args.base_url.rstrip('/')}/portal/enter?token="
           f"{links.sign(secret, args.subscription, expires)}")
    if args.json:
        print_json({"subscription": args.subscription, "url": url,
                    "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()})
    else:
        print(url)
    return OK

"""`billing quota`: the credit and quota monitor."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from infra.cli.common import connect, time_arg
from infra.config import Settings
from infra.render.terminal import _print_json
from infra.stack.embedded import Stack


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

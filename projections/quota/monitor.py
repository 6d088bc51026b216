"""The credit monitor of one subscription: its quota rows and this cycle's usage per day and
per member read from the quota read model, shaped into the view `billing quota` shows (what
is used and left this cycle, and today under a daily cap)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from projections.quota import store


@dataclass(frozen=True)
class Readings:
    """What the monitor is made of: the quota rows (one per metric), (metric, day, quantity),
    (metric, member, quantity) and (metric, group, quantity) for the open cycle."""

    rows: list[dict[str, Any]]
    days: list[tuple[Any, ...]]
    members: list[tuple[Any, ...]]
    groups: list[tuple[Any, ...]]


@dataclass(frozen=True)
class ChartSeries:
    """One metric's usage per day this cycle, for the usage chart."""

    metric: str
    cycle_start: datetime
    cycle_end: datetime
    per_day: dict[Any, Decimal]
    allowance: Decimal
    daily_cap: Decimal | None


def read(conn: psycopg.Connection[Any], subscription_id: str) -> Readings | None:
    """The subscription's readings, or None where the read model has no rows for it."""
    rows = store.read(conn, subscription_id)
    if not rows:
        return None
    days, members, groups = store.usage_history(conn, subscription_id, rows[0]["cycle_start"])
    return Readings(rows, days, members, groups)


def chart_series(readings: Readings, metric: str | None = None) -> ChartSeries:
    """The series of `metric` (default: the first metric with usage, else the first)."""
    rows = readings.rows
    chosen = metric or next((r["metric"] for r in rows if r["used"]), rows[0]["metric"])
    row = next((r for r in rows if r["metric"] == chosen), None)
    if row is None:
        raise KeyError(chosen)
    return ChartSeries(chosen, row["cycle_start"], row["cycle_end"],
                       {d: q for m, d, q in readings.days if m == chosen},
                       row["included"] + row["packs"], row["daily_cap"])


def view(readings: Readings, now: datetime) -> dict[str, Any]:
    """Per metric: used and remaining this cycle; today (the billing clock's UTC day): used,
    remaining under the daily cap and when it resets; exhausted when either is spent."""
    today = now.astimezone(UTC).date()
    midnight = datetime.combine(today + timedelta(days=1), time(), UTC)
    metrics = []
    for r in readings.rows:
        per_day = {d.isoformat(): str(q) for m, d, q in readings.days if m == r["metric"]}
        used_today = next((q for m, d, q in readings.days if m == r["metric"] and d == today),
                          Decimal(0))
        cap = r["daily_cap"]
        cap_reached = cap is not None and used_today >= cap
        metrics.append({
            "metric": r["metric"], "included": str(r["included"]), "packs": str(r["packs"]),
            "unit_credits": str(r["credits"]),
            "used": str(r["used"]), "remaining": str(r["remaining"]),
            "remaining_this_cycle": str(r["remaining"]),
            "limit_kind": r["limit_kind"], "exhausted": bool(r["exhausted"] or cap_reached),
            "daily_cap": None if cap is None else str(cap),
            "today": today.isoformat(), "today_used": str(used_today),
            "remaining_today": None if cap is None else str(max(cap - used_today, 0)),
            "daily_cap_reached": cap_reached,
            "next_daily_reset": None if cap is None else midnight.isoformat(),
            "per_day": per_day,
            "per_member": {who: str(q) for m, who, q in readings.members if m == r["metric"]},
        })
        if r.get("group_by") is not None:  # `included` is each group's: its own remaining
            metrics[-1].update(group_by=r["group_by"], per_group={
                group: {"used": str(q), "remaining": str(max(r["included"] - q, 0))}
                for m, group, q in readings.groups if m == r["metric"]})
    first = readings.rows[0]
    return {"subscription": first["subscription_id"], "account": first["account"],
            "plan": first["plan_id"], "cycle_start": first["cycle_start"].isoformat(),
            "resets_at": first["cycle_end"].isoformat(), "as_of": now.isoformat(),
            "metrics": metrics}

"""May this subscription use N more units of a metric now? A pure decision over one quota row,
today's usage and the request, shared by the HTTP API and the portal.

- A hard limit refuses a request that would take usage past the usable amount (`included` plus
  packs) with `limit_reached` (nothing left) or `would_exceed_limit` (less left than asked).
- An overage allowance always gives access; the units past the usable amount are `overage`,
  billed in arrears.
- A paused or ended subscription refuses everything (`subscription_paused`,
  `subscription_ended`).
- A daily cap refuses past what is left today (`daily_cap_reached`, `would_exceed_daily_cap`),
  whatever the limit kind, and says when it resets (the next UTC midnight).

The engine itself does not refuse usage for being over a limit (it happened, and is
recorded), except past a daily cap the catalog enforces (`on_daily_cap = "refuse"`,
`daily_cap_reached`): this answer is what an upstream service asks before letting its user go
on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Freshness:
    """How far the quota read model is behind the event store for this subscription."""

    projected_version: int
    stored_version: int  # the newest version known: in the store, or seen on billing.events
    as_of: datetime | None  # when the last projected event was recorded in the store
    checked_at: datetime  # when these figures were read from the read model

    def view(self) -> dict[str, Any]:
        return {"as_of": None if self.as_of is None else self.as_of.isoformat(),
                "checked_at": self.checked_at.isoformat(),
                "projected_version": self.projected_version,
                "stored_version": self.stored_version, "pending_events": self.pending_events}

    @property
    def pending_events(self) -> int:
        return max(self.stored_version - self.projected_version, 0)


def decide(row: dict[str, Any], used_today: Decimal, requested: Decimal, now: datetime,
           freshness: Freshness) -> dict[str, Any]:
    usable = row["included"] + row["packs"] + row.get("credits", Decimal(0))
    used = row["used"]
    remaining = max(usable - used, Decimal(0))
    hard = row["limit_kind"] == "hard"
    reason: str | None = None
    if row["limit_kind"] in ("paused", "ended"):  # quota model's STOPPED
        reason = f"subscription_{row['limit_kind']}"
    elif hard and remaining <= 0:
        reason = "limit_reached"
    elif hard and requested > remaining:
        reason = "would_exceed_limit"
    cap = row["daily_cap"]
    remaining_today: Decimal | None = None
    resets: str | None = None
    if cap is not None:
        remaining_today = max(cap - used_today, Decimal(0))
        today = now.astimezone(UTC).date()
        resets = datetime.combine(today + timedelta(days=1), time(), UTC).isoformat()
        if reason is None and remaining_today <= 0:
            reason = "daily_cap_reached"
        elif reason is None and requested > remaining_today:
            reason = "would_exceed_daily_cap"
    overage = Decimal(0) if hard else max(used + requested - usable, Decimal(0)) - \
        max(used - usable, Decimal(0))
    return {
        "subscription": row["subscription_id"], "kind": "metric", "metric": row["metric"],
        "plan": row["plan_id"], "has_access": reason is None, "reason": reason,
        "requested": _text(requested), "used": _text(used), "limit": _text(usable),
        "included": _text(row["included"]), "packs": _text(row["packs"]),
        "unit_credits": _text(row.get("credits", Decimal(0))),
        "remaining": _text(remaining), "limit_kind": row["limit_kind"],
        "overage_units": _text(overage),
        "daily_cap": None if cap is None else _text(cap),
        "used_today": _text(used_today),
        "remaining_today": None if remaining_today is None else _text(remaining_today),
        "daily_reset_at": resets,
        "cycle_start": row["cycle_start"].isoformat(), "resets_at": row["cycle_end"].isoformat(),
        "freshness": freshness.view(),
    }


def feature(subscription: str, plan: str, name: str, granted_by: str | None,
            freshness: Freshness) -> dict[str, Any]:
    """A feature: included by the plan, activated, or brought by an add-on (`granted_by`)."""
    return {"subscription": subscription, "kind": "feature", "feature": name, "plan": plan,
            "has_access": granted_by is not None,
            "reason": None if granted_by is not None else "feature_not_included",
            "granted_by": granted_by,
            "freshness": freshness.view()}


def _text(value: Decimal) -> str:
    """Plain notation, never exponent (Decimal('1E+3') -> '1000')."""
    return format(value, "f")

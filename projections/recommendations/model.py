"""Plan recommendations, pure: the inputs folded from events (usage of closed cycles, plan,
profile) and the advice, with its reasons and what-if costs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.billing.charges import minimum_spend_line, overage_lines, total, true_up_line
from domain.catalog.model import Catalog, Plan, period_rank
from domain.shared.periods import length_of

HISTORY = 12  # closed cycles kept


NEAR_LIMIT = Decimal("0.9")


LOW_USE = Decimal("0.5")


def update_inputs(inputs: dict[str, Any], message: dict[str, Any]) -> bool:
    """Fold one event into the inputs; returns whether anything changed."""
    kind, data = message["type"], message.get("data", {})
    if kind in ("Subscribed", "CycleRolled", "PlanUpgraded", "PlanChangedInTrial"):
        if kind == "CycleRolled" or data.get("restarted_cycle"):
            inputs["closing_plan"] = inputs.get("plan")  # the plan of the cycle now closing
        inputs["plan"] = data["terms"]["plan_id"]
        inputs["period"] = data["terms"]["period"]
        if kind == "Subscribed":
            inputs["trial"] = data.get("trial_end") is not None
            inputs["started"] = data["cycle_start"]
            inputs["country"] = (data.get("customer") or {}).get("country")
        if kind == "CycleRolled" and data.get("changes", {}).get("trial_ended"):
            inputs["trial_cycle"] = {"start": data["closed_start"], "end": data["closed_end"]}
        return True
    if kind == "CustomerUpdated":  # where the customer is: which plans are sold to them
        inputs["country"] = (data.get("customer") or {}).get("country")
        return True
    if kind == "ProfileUpdated":
        inputs["template"] = data.get("template")
        inputs["integrations"] = data.get("integrations", [])
        return True
    if kind == "UsagePeriodClosed":
        cycle = {"start": data["period_start"], "end": data["period_end"],
                 "usage": data["usage"], "plan": inputs.get("closing_plan", inputs.get("plan"))}
        trial = inputs.get("trial_cycle")
        if trial and trial["start"] == data["period_start"]:
            inputs["trial_usage"] = cycle
            return True
        inputs["cycles"] = [*inputs.get("cycles", []), cycle][-HISTORY:]
        return True
    return False


RELEVANT = {"Subscribed", "CycleRolled", "PlanUpgraded", "PlanChangedInTrial", "ProfileUpdated",
            "UsagePeriodClosed", "CustomerUpdated"}


@dataclass(frozen=True)
class WhatIf:
    plan: str
    cost: Decimal
    fits: bool  # usage within every hard limit and allowance of that plan


def _pct(x: Decimal) -> str:
    return f"{(x * 100).quantize(Decimal(1), ROUND_HALF_UP)} %"


def cycle_cost(plan: Plan, period: str, usage: dict[str, str]) -> WhatIf:
    """The cycle's cost on `plan`: its price plus overage on the cycle's usage, with the true-ups
    of its minimum spends and minimum commitment (as a whole cycle's)."""
    terms = _terms(plan, period)
    start = _anytime()
    end = length_of(terms).after(start)
    lines = []
    fits = not set(usage) - set(terms["allowances"])
    for metric, allowance in sorted(terms["allowances"].items()):
        used = Decimal(usage.get(metric, "0"))
        if used > Decimal(allowance["included"]) and "percentage" not in allowance:
            fits = False  # a percentage is paid per event: nothing to outgrow
        charged = overage_lines(metric, allowance, used, Decimal(0), start, start)
        lines += charged + minimum_spend_line(metric, allowance, total(charged), start, end,
                                              end)
    spent = Decimal(terms["price"]) + total(lines)
    if "minimum_commitment" in terms:
        lines += true_up_line("Minimum commitment", Decimal(terms["minimum_commitment"]), spent,
                              start, end, end)
    cost = (Decimal(terms["price"]) + total(lines)).quantize(Decimal("0.01"))
    return WhatIf(plan.id, cost, fits)


def _anytime() -> Any:
    from datetime import UTC

    return datetime(2000, 1, 1, tzinfo=UTC)


def _terms(plan: Plan, period: str) -> dict[str, Any]:
    """The plan's terms for the customer's period, else for its shortest one."""
    return plan.terms(period if period in plan.prices else min(plan.prices, key=period_rank))


def _shares(plan: Plan, period: str, usage: dict[str, str]) -> dict[str, Decimal]:
    terms = _terms(plan, period)
    shares = {}
    for metric, used in usage.items():
        allowance = terms["allowances"].get(metric)
        if allowance and Decimal(allowance["included"]) > 0:
            shares[metric] = Decimal(used) / Decimal(allowance["included"])
    return shares


def recommend(inputs: dict[str, Any], catalog: Catalog,
              at: datetime | None = None) -> dict[str, Any]:
    """What fits; the plans offered are those the customer could move to at `at` (sold, in
    their country, in their campaign window) and billed in the same unit (a weekly customer's
    cycles are weeks: weekly plans are compared on them, monthly ones otherwise), and the
    current one."""
    current = inputs.get("plan")
    period = inputs.get("period", "month")
    country = inputs.get("country")
    interval = "week" if period == "week" else "month"
    unit = f"{interval}s"
    plans = sorted((p for p in catalog.plans.values() if p.id == current or (
        p.interval == interval
        and (p.offered(at, country) if at is not None else p.available))),
        key=lambda p: p.rank)
    cycles = inputs.get("cycles", [])
    what_if: list[WhatIf] = []
    if cycles:
        last = cycles[-1]["usage"]
        what_if = [cycle_cost(p, period, last) for p in plans]
    result: dict[str, Any] = {"current_plan": current, "recommended_plan": current,
                              "reason": "your usage fits your current plan", "kind": "keep",
                              "what_if": [{"plan": w.plan, "cost": str(w.cost),
                                           "fits": w.fits} for w in what_if]}
    current_plan = catalog.plans.get(current or "")
    if current_plan is not None and len(cycles) >= 3:
        recent = cycles[-4:]
        near: dict[str, list[Decimal]] = {}
        for cycle in recent:
            # Each cycle against the plan it ran on and against the current plan: near the
            # limit of either (a customer back on a small plan after heavy months counts).
            ran_on = catalog.plans.get(cycle.get("plan") or "", current_plan)
            cycle_shares = _shares(current_plan, period, cycle["usage"])
            for metric, share in _shares(ran_on, period, cycle["usage"]).items():
                cycle_shares[metric] = max(share, cycle_shares.get(metric, Decimal(0)))
            for metric, share in cycle_shares.items():
                if share >= NEAR_LIMIT:
                    near.setdefault(metric, []).append(share)
        hot = max(near.items(), key=lambda kv: len(kv[1]), default=None)
        if hot and len(hot[1]) >= 3:
            metric, shares = hot
            included = current_plan.allowances.get(metric)
            bigger = next((p for p in plans if p.rank > current_plan.rank
                           and metric in p.allowances and included is not None
                           and p.allowances[metric].included > included.included), None)
            if bigger is not None:
                result.update(
                    recommended_plan=bigger.id, kind="near_limit",
                    reason=(f"you used {_pct(min(shares))} or more of your {metric} in "
                            f"{len(shares)} of the last {len(recent)} {unit}"))
                return result
        lows = recent[-3:]
        for lower in (p for p in plans if p.rank < current_plan.rank):
            fits_all = all(cycle_cost(lower, period, c["usage"]).fits for c in lows)
            peak = max((s for c in lows for s in _shares(current_plan, period,
                                                          c["usage"]).values()),
                       default=Decimal(0))
            if fits_all and peak <= LOW_USE:
                saved = cycle_cost(current_plan, period, lows[-1]["usage"]).cost - \
                    cycle_cost(lower, period, lows[-1]["usage"]).cost
                if saved > 0:
                    result.update(
                        recommended_plan=lower.id, kind="savings",
                        reason=(f"you used at most {_pct(peak)} of your allowances in the last "
                                f"{len(lows)} {unit}; {lower.name} would have saved "
                                f"{saved} {lower.currency} last {interval}"))
                    return result
    trial = inputs.get("trial_usage")
    if trial and not cycles:
        from datetime import datetime

        days = max((datetime.fromisoformat(trial["end"]) -
                    datetime.fromisoformat(trial["start"])).days, 1)
        per = 7 if interval == "week" else 30
        projected = {m: str((Decimal(q) * per / days).quantize(Decimal(1), ROUND_HALF_UP))
                     for m, q in trial["usage"].items()}
        fitting = next((p for p in plans if cycle_cost(p, interval, projected).fits), None)
        if fitting is not None:
            metric, amount = max(projected.items(), key=lambda kv: Decimal(kv[1]),
                                 default=("usage", "0"))
            result.update(recommended_plan=fitting.id, kind="trial_usage",
                          reason=(f"your trial usage projects to {amount} {metric} a {interval}, "
                                  f"which fits {fitting.name}"))
            return result
    template = inputs.get("template")
    integrations = inputs.get("integrations", [])
    if not cycles and (template or integrations):
        for p in plans:
            wanted = set(p.recommended_for)
            if template in wanted:
                result.update(recommended_plan=p.id, kind="template",
                              reason=f"you chose the {template} template")
                return result
            matched = sorted(wanted & set(integrations))
            if matched:
                result.update(recommended_plan=p.id, kind="integrations",
                              reason=f"you connected {', '.join(matched)}")
                return result
    return result

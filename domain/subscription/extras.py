"""Packs, add-ons, workspaces, features, counted resources and the usage profile. Commands
and appliers of `Subscription`, named in its class body.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from domain.billing.charges import Charge, charge, prorated
from domain.billing.pricing import (
    ZERO,
    addon_users,
)
from domain.catalog.model import Catalog
from domain.shared.errors import (
    CommandRefused,
)
from domain.shared.periods import length_of, require_aware

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

def buy_pack(self: Subscription, pack_id: str, at: datetime, catalog: Catalog) -> None:
    """Immediate: the units are usable at once and expire at the end of this cycle; a pack
    that lasts (`lasts_days`) is a unit grant instead, drawn across cycles until it expires."""
    require_aware(at)
    self.check_not_ended()
    pack = catalog.pack(pack_id)
    if pack.metric not in self.allowances:
        raise CommandRefused(f"pack {pack_id} is for {pack.metric}, which plan "
                             f"{self.plan_id} does not meter", "pack_not_applicable")
    if pack.lasts_days is not None:
        self.buy_lasting_pack(pack_id, pack.metric, pack.quantity, pack.lasts_days, [
            charge("pack", f"{pack.name} (lasts {pack.lasts_days} days)", 1, pack.price,
                   pack.price, at, at + timedelta(days=pack.lasts_days))], at)
        return
    charges = [charge("pack", pack.name, 1, pack.price, pack.price, at, self.cycle_end)]
    self._pack_purchased(pack_id=pack_id, metric=pack.metric, quantity=str(pack.quantity),
                         charges=charges, timestamp=at)


def _pack_purchased(self: Subscription, pack_id: str, metric: str, quantity: str,
                    charges: list[Charge],
                    timestamp: datetime) -> None:
    self._bill(charges)
    self.extra[metric] = self.extra.get(metric, ZERO) + Decimal(quantity)


def add_addon(self: Subscription, addon_id: str, at: datetime, catalog: Catalog) -> bool:
    require_aware(at)
    self.check_not_ended()
    addon = catalog.addon(addon_id)
    if addon_id in self.addons and self.addons[addon_id].get("remove_at") is None:
        return False
    length = length_of(self.terms)
    if length.weeks or self.scheduled_period == "week":
        raise CommandRefused(f"add-on {addon_id} is priced per month: a weekly plan takes no "
                             f"add-ons", "period_not_offered")
    months = length.months
    users = "members" if addon.per_user else (
        None if addon.solution is None else f"solution:{addon.solution}")
    count = addon_users({"users": users}, self.members)
    charges = [] if self.status == "trialing" or addon_id in self.addons or not count else [
        prorated("addon", addon.name, count, addon.monthly_price * months, at,
                 self.cycle_start, self.cycle_end, addon=addon_id)]
    self._addon_added(addon_id=addon_id, name=addon.name,
                      monthly_price=str(addon.monthly_price), features=list(addon.features),
                      charges=charges, timestamp=at, users=users)
    return True


def _addon_added(self: Subscription, addon_id: str, name: str, monthly_price: str,
                 features: list[str],
                 charges: list[Charge], timestamp: datetime, users: str | None = None) -> None:
    self._bill(charges)
    self.addons[addon_id] = {"name": name, "monthly_price": monthly_price,
                             "features": features, "remove_at": None,
                             **({"users": users} if users is not None else {})}


def member_features(self: Subscription, member: str) -> dict[str, str]:
    """The features a member's user plans bring (feature -> `user_plan:<solution>-<level>`),
    from the terms the subscription is billed under."""
    by_level = self.terms.get("user_plan_features", {})
    granted: dict[str, str] = {}
    for solution, level in sorted(self.members.get(member, {}).items()):
        for feature in by_level.get(solution, {}).get(level, []):
            granted.setdefault(feature, f"user_plan:{solution}-{level}")
    return granted


def remove_addon(self: Subscription, addon_id: str, at: datetime) -> bool:
    """Paid to the end of the period: the add-on is removed when the cycle rolls."""
    require_aware(at)
    self.check_not_ended()
    if addon_id not in self.addons:
        raise CommandRefused(f"add-on {addon_id} is not active", "addon_not_active")
    if self.addons[addon_id].get("remove_at") is not None:
        return False
    self._addon_removal_scheduled(addon_id=addon_id, effective_at=self.cycle_end,
                                  timestamp=at)
    return True


def _addon_removal_scheduled(self: Subscription, addon_id: str, effective_at: datetime,
                             timestamp: datetime) -> None:
    self.addons[addon_id]["remove_at"] = effective_at.isoformat()


def create_workspace(self: Subscription, workspace: str, at: datetime) -> None:
    require_aware(at)
    self.check_not_ended()
    if workspace in self.workspaces:
        raise CommandRefused(f"workspace {workspace} exists", "workspace_exists")
    limit = self.terms.get("limits", {}).get("workspaces")
    if limit is not None and len(self.active_workspaces()) >= limit:
        raise CommandRefused(f"plan {self.plan_id} allows {limit} workspace(s)",
                             "workspace_limit_reached")
    self._workspace_created(workspace=workspace, timestamp=at)


def _workspace_created(self: Subscription, workspace: str, timestamp: datetime) -> None:
    self.workspaces[workspace] = "active"


def archive_workspace(self: Subscription, workspace: str, at: datetime) -> None:
    require_aware(at)
    if self.workspaces.get(workspace) != "active":
        raise CommandRefused(f"no active workspace {workspace}", "unknown_workspace")
    self._workspace_archived(workspace=workspace, timestamp=at)


def _workspace_archived(self: Subscription, workspace: str, timestamp: datetime) -> None:
    self.workspaces[workspace] = "archived"


def activate_feature(self: Subscription, feature: str, at: datetime) -> bool:
    require_aware(at)
    if feature not in self.features():
        raise CommandRefused(f"plan {self.plan_id} has no feature {feature}",
                             "feature_not_in_plan")
    if feature in self.features_active:
        return False
    self._feature_activated(feature=feature, timestamp=at)
    return True


def _feature_activated(self: Subscription, feature: str, timestamp: datetime) -> None:
    self.features_active = sorted({*self.features_active, feature})


def deactivate_feature(self: Subscription, feature: str, at: datetime) -> bool:
    require_aware(at)
    if feature not in self.features_active:
        return False
    self._feature_deactivated(feature=feature, timestamp=at)
    return True


def _feature_deactivated(self: Subscription, feature: str, timestamp: datetime) -> None:
    self.features_active = [f for f in self.features_active if f != feature]


def report_count(self: Subscription, name: str, value: int, at: datetime) -> bool:
    """A resource counted by the upstream service (e.g. assistants), checked on downgrade."""
    require_aware(at)
    if value < 0:
        raise CommandRefused("a count is >= 0", "invalid_quantity")
    if self.counts.get(name) == value:
        return False
    self._count_reported(name=name, value=value, timestamp=at)
    return True


def _count_reported(self: Subscription, name: str, value: int, timestamp: datetime) -> None:
    self.counts[name] = value


def update_profile(self: Subscription, template: str | None, integrations: list[str],
                   at: datetime) -> bool:
    require_aware(at)
    current = getattr(self, "profile", {})
    if current == {"template": template, "integrations": sorted(integrations)}:
        return False
    self._profile_updated(template=template, integrations=sorted(integrations),
                          timestamp=at)
    return True


def _profile_updated(self: Subscription, template: str | None, integrations: list[str],
                     timestamp: datetime) -> None:
    self.profile = {"template": template, "integrations": integrations}

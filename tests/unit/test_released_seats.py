"""Pricing model 1's "pay only for the seats you use" (`credit_released_seats`): releasing a
member whose seat is an extra one no other member needs credits that seat for the rest of the
period, on the next invoice, and stops counting it; included seats and plans without the flag
keep the seat paid to the period's end, as before."""

from __future__ import annotations

from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import CatalogError, CommandRefused
from domain.subscription.aggregate import Subscription
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc

TEAM = """
[catalog]
id = "team-seats"
currency = "USD"

[plans.team]
name = "Team"
price = "50.00"
included_seats = 2
extra_seat_price = "10.00"
credit_released_seats = true
trial_days = 14
"""


def lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(x["description"], x["amount"]) for x in document["lines"]]


def team_of_four(catalog_text: str = TEAM) -> Journey:
    """Team from Jan 1, 2026 (a 31-day cycle): 2 seats bought on top of the 2 included,
    four members."""
    j = Journey(Catalog.from_toml(catalog_text), "tm-1", "team", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 1, 1), "add_seats", count=2)
    for member in ("ann", "bob", "cat", "dan"):
        j.command(utc(2026, 1, 2), "add_member", member=member)
    return j


def test_released_extra_seats_are_credited_for_the_rest_of_the_period() -> None:
    j = team_of_four()
    assert lines(j.issued[-1]) == [("Extra seats", "19.97")]  # 2 x 10.00 x 743/744 hours
    assert j.command(utc(2026, 1, 16, 12), "release_seat", member="dan") == []
    j.command(utc(2026, 1, 20), "release_seat", member="cat")
    j.command(utc(2026, 1, 25), "release_seat", member="bob")  # an included seat
    assert j.sub.seats == 2
    j.advance(utc(2026, 2, 1, 1))
    assert lines(j.issued[-1]) == [
        ("Released seat, unused rest of the period", "-5.00"),  # 372 of 744 hours
        ("Released seat, unused rest of the period", "-3.87"),  # 12 of 31 days: 3.8709...
        ("Team (month)", "50.00")]  # then max(2 included, 1 member) seats: none extra
    assert j.issued[-1]["total"] == "41.13"


def test_unfilled_bought_seats_are_credited_one_per_release() -> None:
    j = team_of_four()
    j.command(utc(2026, 1, 2), "add_seats", count=2)  # 6 seats, 4 members
    j.command(utc(2026, 1, 16, 12), "release_seat", member="dan")
    assert j.sub.seats == 5  # one seat credited per release, not every empty one


def test_without_the_flag_a_released_seat_stays_paid_to_the_periods_end() -> None:
    j = team_of_four(TEAM.replace("credit_released_seats = true\n", ""))
    j.command(utc(2026, 1, 16, 12), "release_seat", member="dan")
    assert j.sub.seats == 4 and j.sub.uninvoiced == []
    assert "credit_released_seats" not in j.sub.terms


def test_nothing_is_credited_during_a_trial() -> None:
    catalog = Catalog.from_toml(TEAM)
    sub = Subscription.subscribe("tm-2", "acct", "team", catalog, utc(2026, 1, 1), trial=True,
                                 seats=4)
    for member in ("ann", "bob", "cat"):
        sub.add_member(member, utc(2026, 1, 2))
    sub.release_seat("cat", utc(2026, 1, 3))
    assert sub.seats == 4 and [c["kind"] for c in sub.uninvoiced] == []


def test_a_release_stored_before_credits_existed_is_read_with_none() -> None:
    state: dict[str, Any] = {"member": "dan"}
    Subscription.SeatReleased.upcast_v1_v2(state)
    assert state == {"member": "dan", "charges": [], "seats": None}


def test_credit_released_seats_needs_seats_that_are_sold() -> None:
    with pytest.raises(CatalogError, match="credit_released_seats needs included_seats and "
                                           "extra_seat_price"):
        Catalog.from_toml(TEAM.replace('extra_seat_price = "10.00"\n', ""))


def test_seat_counts_are_bounded_on_subscribe_and_add_seats() -> None:
    catalog = Catalog.from_toml(TEAM)
    with pytest.raises(CommandRefused) as refused:
        Subscription.subscribe("tm-big", "acc", "team", catalog, utc(2026, 1, 1),
                               seats=2**53 - 1)
    assert refused.value.code == "too_many_seats"
    sub = Subscription.subscribe("tm-2", "acc", "team", catalog, utc(2026, 1, 1),
                                 seats=1_000_000)
    with pytest.raises(CommandRefused) as refused:
        sub.add_seats(1, utc(2026, 1, 2))
    assert refused.value.code == "too_many_seats"
    assert sub.seats == 1_000_000

"""The customer portal end to end in Chromium: a signed link, the plan cards with the
recommendation and its reason, an upgrade whose prorated charge is shown before confirming and
then appears on the invoice line for line, a downgrade that says when it applies, a refused one
that says why, invoices (web view, PDF), the credit monitor updating without a reload, team,
cancelling, and an expired link."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.portal import links
from infra.wiring.engine import Engine
from tests.integration.api_server import NOW, RunningApi
from tests.integration.helpers import ingest_all, invoice_everything, project_all, relay_all

pytestmark = pytest.mark.integration


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def link(api: RunningApi, subscription: str, ttl: int = 600) -> str:
    with psycopg.connect(api.ctx.engine.database_url, autocommit=True) as conn:
        secret = links.secrets_of(conn)[0]
    token = links.sign(secret, subscription, int(time.time()) + ttl)
    return f"{api.url}/portal/enter?token={token}"


@contextmanager
def working(step: Callable[[], Any]) -> Iterator[None]:
    """A worker's loop running in the background while the browser waits on the page."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            step()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def command_applied(api_engine: Engine) -> Callable[[], Any]:
    loop, _ = api_engine.commands()
    return lambda: loop.poll_once(100)


def test_an_upgrade_through_the_page_shows_its_charge_and_invoices_exactly_that(
        api: RunningApi, api_engine: Engine, page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    api_engine.app.handle(_command("profile", "update_profile", "a-free", template="e-commerce"))
    invoice_everything(api_engine)  # the profile reaches the recommendation inputs
    page.goto(link(api, "a-free"))
    assert page.url == f"{api.url}/portal", "the token left the address bar"
    expect(page.get_by_test_id("current-plan")).to_contain_text("Free")
    pro = page.locator('article[data-plan="pro"]')
    expect(pro.locator(".badge.recommended")).to_have_text("Recommended")
    expect(pro.locator(".reason")).to_have_text("you chose the e-commerce template")
    expect(page.locator('article[data-plan="free"] .current-badge')).to_be_visible()
    expect(pro).to_contain_text("100 credits")
    page.screenshot(path=screenshots / "portal-plans.png", full_page=True)

    pro.get_by_role("link", name="Choose Pro").click()
    expect(page.get_by_test_id("effect")).to_have_text("The new plan starts now.")
    shown = [(row.locator("td").nth(0).inner_text(), row.locator("td").nth(1).inner_text())
             for row in page.get_by_test_id("charges").locator("tbody tr").all()]
    # Free costs nothing; Pro for the 21.5 of 31 days left: 25.00 x 21.5/31 = 17.3387.
    assert shown == [("Unused time on Free", "0.00"), ("Remaining time on Pro", "17.34")]
    # The seller's VAT (25 %, the catalog's issuer defaults) on top: 17.34 + 4.34.
    expect(page.get_by_test_id("charges").locator("tfoot")).to_contain_text("Tax4.34")
    expect(page.get_by_test_id("total")).to_have_text("21.68 EUR")
    page.screenshot(path=screenshots / "portal-upgrade-preview.png", full_page=True)

    with working(command_applied(api_engine)):
        page.get_by_test_id("confirm").click()
        expect(page.get_by_test_id("outcome")).to_have_attribute("data-status", "applied",
                                                                 timeout=30_000)
    expect(page.get_by_test_id("outcome")).to_contain_text("upgraded")
    assert api_engine.app.load_as_stored("a-free").plan_id == "pro"

    api_engine.app.advance_clock(datetime(2027, 4, 2, tzinfo=UTC), ["a-free"])
    invoice_everything(api_engine)
    page.goto(f"{api.url}/portal/invoices")
    upgrade = page.get_by_test_id("invoices").locator("tbody tr", has_text="21.68 EUR")
    expect(upgrade).to_have_count(1)  # the invoice of the upgrade: the total shown before
    number = upgrade.locator("td").first.inner_text()
    page.get_by_role("link", name=number).click()
    lines = page.locator("table").first.inner_text()
    assert "Remaining time on Pro" in lines and "17.34" in lines
    page.screenshot(path=screenshots / "portal-invoice.png", full_page=True)
    with psycopg.connect(api_engine.database_url) as conn:
        invoiced = conn.execute(
            "SELECT l.description, l.amount::text FROM invoice_lines l JOIN invoices i USING "
            "(number) WHERE i.subscription_id = 'a-free' AND l.description LIKE '%%time on%%'"
            " ORDER BY l.description DESC").fetchall()
    assert invoiced == [("Unused time on Free", "0.00"), ("Remaining time on Pro", "17.34")]

    page.goto(f"{api.url}/portal/invoices")
    with page.expect_download() as download:
        page.get_by_role("link", name="PDF").first.click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")


def test_a_downgrade_says_when_and_a_refused_one_says_why(
        api: RunningApi, api_engine: Engine, page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(link(api, "a-pro"))
    page.goto(f"{api.url}/portal/plans/free")
    expect(page.get_by_test_id("effect")).to_contain_text("at the end of this period, on "
                                                          "2027-04-01")
    with working(command_applied(api_engine)):
        page.get_by_test_id("confirm").click()
        expect(page.get_by_test_id("outcome")).to_have_attribute("data-status", "applied",
                                                                 timeout=30_000)
    relay_all(api_engine)
    page.goto(f"{api.url}/portal")
    expect(page.get_by_test_id("scheduled")).to_contain_text("Moving to free on 2027-04-01")

    api.client(api.key("acct-a")).post("/v1/usage", json={
        "id": "big", "subscription": "a-pro", "metric": "credits", "quantity": 60,
        "at": "2027-03-10T11:00:00+00:00"})
    ingest_all(api_engine, api.published[api_engine.settings.topics.usage])
    page.goto(f"{api.url}/portal/plans/max")  # back up first: the scheduled move is dropped
    page.goto(f"{api.url}/portal/plans/pro")
    page.goto(f"{api.url}/portal/plans/free")
    refusal = page.get_by_test_id("refusal")
    expect(refusal).to_contain_text("credits: 60 used this cycle, plan free allows 30")
    expect(refusal).to_contain_text("usage_above_limit")
    page.screenshot(path=screenshots / "portal-refused-downgrade.png", full_page=True)


def test_the_credit_monitor_updates_without_a_reload(
        api: RunningApi, api_engine: Engine, page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(link(api, "a-free"))
    page.goto(f"{api.url}/portal/usage")
    meter = page.locator('section[data-metric="credits"]')
    expect(meter.locator('[data-field="remaining"]')).to_have_text("30")
    expect(meter.locator('[data-field="remaining_today"]')).to_have_text("5")
    expect(page.locator('[data-field="live"]')).to_contain_text("updated")  # stream open
    page.evaluate("window.stillTheSamePage = true")
    api.client(api.key("acct-a")).post("/v1/usage", json=[
        {"id": "m1", "subscription": "a-free", "metric": "credits", "quantity": 3,
         "at": "2027-03-10T09:00:00+00:00", "member": "ann@a.example"}])
    ingest_all(api_engine, api.published[api_engine.settings.topics.usage])
    relay_all(api_engine)
    project_all(api_engine)
    expect(meter.locator('[data-field="remaining"]')).to_have_text("27", timeout=15_000)
    expect(meter.locator('[data-field="remaining_today"]')).to_have_text("2")
    expect(meter.locator('[data-field="per_member"]')).to_contain_text("ann@a.example")
    expect(meter.locator('[data-field="per_day"]')).to_contain_text("2027-03-10")
    assert page.evaluate("window.stillTheSamePage") is True, "no reload happened"
    page.screenshot(path=screenshots / "portal-usage-live.png", full_page=True)


def test_team_and_cancel_say_what_happens_and_an_expired_link_is_refused(
        api: RunningApi, api_engine: Engine, page: Any, screenshots: Path) -> None:
    from playwright.sync_api import expect

    api_engine.app.handle(_command("m1", "add_member", "a-pro", member="ann@a.example"))
    api_engine.app.handle(_command("k1", "grant_credits", "a-pro", amount="25.00"))
    api_engine.app.handle(_command("k2", "configure_auto_top_up", "a-pro", threshold="10.00",
                                   amount="40.00"))
    page.goto(link(api, "a-pro"))
    expect(page.get_by_test_id("credits")).to_contain_text("Prepaid credits: 25.00")
    expect(page.get_by_test_id("credits")).to_contain_text("40.00 EUR more is bought")
    api_engine.app.handle(_command("p1", "pause", "a-pro"))
    page.reload()
    expect(page.get_by_test_id("pause")).to_contain_text("Pauses on 2027-04-01")
    api_engine.app.handle(_command("p2", "resume", "a-pro"))  # withdrawn before the cancel
    page.reload()
    expect(page.get_by_test_id("pause")).to_have_count(0)
    page.goto(f"{api.url}/portal/team")
    expect(page.get_by_test_id("members")).to_contain_text("ann@a.example")
    page.goto(f"{api.url}/portal/cancel")
    expect(page.get_by_test_id("effect")).to_contain_text("until the end of the period you "
                                                          "paid for, 2027-04-01")
    page.screenshot(path=screenshots / "portal-cancel.png", full_page=True)
    with working(command_applied(api_engine)):
        page.get_by_test_id("confirm-cancel").click()
        expect(page.get_by_test_id("outcome")).to_have_attribute("data-status", "applied",
                                                                 timeout=30_000)
    assert api_engine.app.load_as_stored("a-pro").cancel_at is not None

    page.context.clear_cookies()
    page.goto(link(api, "a-pro", ttl=-1))
    expect(page.locator("h1")).to_have_text("This link is invalid or has expired")
    page.goto(f"{api.url}/portal")
    expect(page.locator("h1")).to_contain_text("expired")
    tampered = re.sub(r"token=(\w)", lambda m: "token=" + ("B" if m[1] != "B" else "C"),
                      link(api, "b-free"))
    page.goto(tampered)
    expect(page.locator("h1")).to_have_text("This link is invalid or has expired")


def test_billing_applies_a_coupon_buys_credits_sets_a_top_up_and_pauses(
        api: RunningApi, api_engine: Engine, page: Any, screenshots: Path) -> None:
    """Each form is checked (and previewed) before its command is published: what the engine
    would refuse is shown beside the form with its code, and nothing is sent."""
    from playwright.sync_api import expect

    api_engine.app.handle(_command("gu1", "grant_units", "a-pro", metric="credits",
                                   quantity="50", expires_at="2027-06-01T00:00:00Z"))
    page.goto(link(api, "a-pro"))
    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_test_id("pause-state")).to_contain_text(
        "You can pause at the end of this period, 2027-04-01")
    expect(page.get_by_test_id("units-section").locator("tbody tr")).to_have_text(
        re.compile(r"u1\s*credits\s*50\s*50\s*2027-06-01"))

    def submit(button: str, **inputs: str) -> None:
        for field, value in inputs.items():
            page.get_by_test_id(field).fill(value)
        page.get_by_test_id(button).click()

    def applied() -> None:
        expect(page.get_by_test_id("outcome")).to_have_attribute("data-status", "applied",
                                                                 timeout=30_000)
        page.goto(f"{api.url}/portal/billing")

    submit("apply-coupon", **{"coupon-code": "NOPE"})
    expect(page.get_by_test_id("refusal")).to_contain_text("unknown_coupon")
    submit("buy-credits", **{"credit-amount": "12.345"})
    expect(page.get_by_test_id("refusal")).to_contain_text("invalid_amount")
    with working(command_applied(api_engine)):
        submit("apply-coupon", **{"coupon-code": "SPRING10"})
        applied()
        expect(page.get_by_test_id("coupon")).to_contain_text("Spring 10 %: 10 % off")
        submit("buy-credits", **{"credit-amount": "30.00"})
        applied()
        expect(page.get_by_test_id("credit-balance")).to_have_text("30.00 EUR")
        submit("configure-top-up", **{"top-up-threshold": "10.00", "top-up-amount": "25.00"})
        applied()
        expect(page.get_by_test_id("credits-section")).to_contain_text(
            "Currently: 25.00 EUR more when fewer than 10.00 are left")
        submit("pause")
        applied()
        expect(page.get_by_test_id("pause-state")).to_contain_text("Pauses on 2027-04-01")
        page.screenshot(path=screenshots / "portal-billing.png", full_page=True)
        submit("resume")
        applied()
    expect(page.get_by_test_id("pause-state")).to_contain_text("You can pause")
    sub = api_engine.app.load_as_stored("a-pro")
    assert sub.coupon_now()["name"] == "Spring 10 %"
    assert [(g["amount"], g["purchased"]) for g in sub.credit_grants_now()] == [("30.00", True)]
    assert sub.auto_top_up == {"threshold": "10.00", "amount": "25.00"}
    assert sub.pause_scheduled_at() is None and sub.status == "active"
    charged = [c["amount"] for c in sub.uninvoiced if c["kind"] == "credit_purchase"] + [
        line["amount"] for invoice in sub.invoices.values()
        for line in invoice.get("document", {}).get("lines", [])
        if line.get("kind") == "credit_purchase"]
    assert charged == ["30.00"]  # the purchase is charged, once


def _command(command_id: str, kind: str, subscription: str, **fields: Any) -> Any:
    from domain.contracts.commands import Command

    return Command(command_id, kind, subscription, NOW, fields)

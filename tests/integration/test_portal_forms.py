"""The portal's forms over HTTP (the browser suite drives the same pages in Chromium): each
form a page renders carries its own command id, so a form sent twice (a double click, the
browser's back and send again) buys once; the second send is answered as a duplicate."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from infra.portal import links
from infra.wiring.engine import Engine
from tests.integration.api_server import RunningApi

pytestmark = pytest.mark.integration


def visitor(api: RunningApi, subscription: str) -> httpx.Client:
    """A client holding the portal's cookie for `subscription`, as its link gives it."""
    with psycopg.connect(api.ctx.engine.database_url, autocommit=True) as conn:
        secret = links.secrets_of(conn)[0]
    token = links.sign(secret, subscription, int(time.time()) + 600)
    client = httpx.Client(base_url=api.url, timeout=30)
    assert client.get("/portal/enter", params={"token": token}).status_code == 303
    return client


def form_ids(html: str) -> dict[str, str]:
    """Each form's action and the command id it carries."""
    return dict(re.findall(r'<form method="post" action="([^"]+)"><input type="hidden" '
                           r'name="command_id" value="([^"]+)">', html))


def apply_commands(api_engine: Engine, expected: int) -> Any:
    loop, ingestor = api_engine.commands()
    deadline = time.monotonic() + 60
    while ingestor.stats.messages < expected and time.monotonic() < deadline:
        loop.poll_once(100)
    loop.close()
    return ingestor


def test_a_form_sent_twice_buys_once(api: RunningApi, api_engine: Engine) -> None:
    client = visitor(api, "a-pro")
    page = client.get("/portal/billing")
    assert page.status_code == 200
    ids = form_ids(page.text)
    assert len(ids) >= 3 and len(set(ids.values())) == len(ids)  # one id per form
    assert form_ids(client.get("/portal/billing").text)["/portal/billing/credits"] != \
        ids["/portal/billing/credits"]  # and a new one each time the page is rendered

    form = {"amount": "30.00", "command_id": ids["/portal/billing/credits"]}
    first = client.post("/portal/billing/credits", data=form)
    second = client.post("/portal/billing/credits", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    # Back, another amount, sent again: another command.
    changed = client.post("/portal/billing/credits", data={**form, "amount": "50.00"})
    assert changed.status_code == 303 and changed.headers["location"] != first.headers["location"]
    # A form whose id a page did not make gets one of its own.
    forged = client.post("/portal/billing/credits",
                         data={"amount": "5.00", "command_id": "x' OR 1=1"})
    assert forged.status_code == 303
    assert re.fullmatch(r"/portal/commands/portal-[0-9a-f]{32}", forged.headers["location"])

    ingestor = apply_commands(api_engine, 4)
    grants = api_engine.app.load_as_stored("a-pro").credit_grants_now()
    assert sorted((g["amount"], g["purchased"]) for g in grants) == [
        ("30.00", True), ("5.00", True), ("50.00", True)]
    assert ingestor.stats.duplicates == 1
    assert client.get(first.headers["location"] + "/status").json()["status"] == "applied"


def test_a_form_sent_again_after_it_applied_shows_its_outcome_not_a_refusal(
        api: RunningApi, api_engine: Engine) -> None:
    """Previewed again, the coupon would be refused for what the first send did (a coupon is
    active): the page of the command already applied is shown instead."""
    client = visitor(api, "a-pro")
    form = {"code": "SPRING10",
            "command_id": form_ids(client.get("/portal/billing").text)["/portal/billing/coupon"]}
    first = client.post("/portal/billing/coupon", data=form)
    assert first.status_code == 303
    apply_commands(api_engine, 1)
    again = client.post("/portal/billing/coupon", data=form)
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    # The page shows no coupon form now; one rendered before (another id) is previewed, and
    # refused beside the form.
    fresh = {**form, "command_id": f"portal-{uuid.uuid4().hex}"}
    refused = client.post("/portal/billing/coupon", data=fresh)
    assert refused.status_code == 422 and "coupon_active" in refused.text

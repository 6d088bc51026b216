"""The portal's forms over HTTP (the browser suite drives the same pages in Chromium): each
form a page renders carries its own command id, so a form sent twice (a double click, the
browser's back and send again) buys once; the second send is answered as a duplicate."""

from __future__ import annotations

import re
import time

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
    assert first.headers["location"] == second.headers["location"] == \
        f"/portal/commands/{form['command_id']}"
    # A form whose id a page did not make gets one of its own.
    forged = client.post("/portal/billing/credits",
                         data={"amount": "5.00", "command_id": "x' OR 1=1"})
    assert forged.status_code == 303
    assert re.fullmatch(r"/portal/commands/portal-[0-9a-f]{32}", forged.headers["location"])

    loop, ingestor = api_engine.commands()
    deadline = time.monotonic() + 60
    while ingestor.stats.messages < 3 and time.monotonic() < deadline:
        loop.poll_once(100)
    loop.close()
    grants = api_engine.app.load_as_stored("a-pro").credit_grants_now()
    assert sorted((g["amount"], g["purchased"]) for g in grants) == [
        ("30.00", True), ("5.00", True)]
    assert ingestor.stats.duplicates == 1

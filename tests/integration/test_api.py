"""The HTTP API (`billing serve`) on a real uvicorn server, over a real PostgreSQL and broker:
entitlements from the quota model with their freshness, usage in (JSON and CloudEvents) with
per-event answers and exactly-once effect, commands and their outcomes, the reads, the live
monitor, and access: every route tried with another tenant's key, with no key and a revoked
one; bodies too large, of the wrong type, malformed; no secret in any log line."""

from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from fastapi.routing import APIRoute

from infra.api import keys
from infra.wiring.engine import Engine
from tests.integration.api_server import NOW, RunningApi
from tests.integration.helpers import (
    ingest_all,
    invoice_everything,
    project_all,
    relay_all,
    until,
)

pytestmark = pytest.mark.integration

TODAY = "2027-03-10T10:00:00+00:00"


def usage(uid: str, sub: str, quantity: Any, at: str = TODAY, **extra: Any) -> dict[str, Any]:
    return {"id": uid, "subscription": sub, "metric": "credits", "quantity": quantity,
            "at": at, **extra}


def ingest_and_project(api: RunningApi, api_engine: Engine) -> None:
    ingest_all(api_engine, api.published[api_engine.settings.topics.usage])
    relay_all(api_engine)
    project_all(api_engine)


def current(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    """An entitlement answer once it lacks no event (a kept reading the follower has seen
    fall behind answers, saying so, until it is read again a moment later)."""
    answers: list[dict[str, Any]] = []
    until(lambda: answers.append(client.get(path, params=params).json()) or
          answers[-1]["freshness"]["pending_events"] == 0, lambda: time.sleep(0.05),
          timeout=10)
    return answers[-1]


# --- entitlements --------------------------------------------------------------------------

def test_a_metric_entitlement_follows_usage_and_the_daily_cap(api: RunningApi,
                                                              api_engine: Engine) -> None:
    a = api.client(api.key("acct-a"))
    first = a.get("/v1/subscriptions/a-free/entitlements/credits", params={"requested": 3})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["has_access"] is True and body["reason"] is None
    assert (body["used"], body["limit"], body["remaining"]) == ("0", "30", "30")
    assert (body["daily_cap"], body["remaining_today"]) == ("5", "5")
    assert body["daily_reset_at"] == "2027-03-11T00:00:00+00:00"
    assert body["freshness"]["pending_events"] == 0 and body["freshness"]["as_of"]

    answer = a.post("/v1/usage", json=[usage("u1", "a-free", 4), usage("u2", "a-pro", 130)])
    assert answer.json()["accepted"] == 2, answer.text
    ingest_and_project(api, api_engine)

    capped = current(a, "/v1/subscriptions/a-free/entitlements/credits", requested=3)
    assert capped["has_access"] is False and capped["reason"] == "would_exceed_daily_cap"
    assert (capped["used"], capped["used_today"], capped["remaining_today"]) == ("4", "4", "1")
    assert a.get("/v1/subscriptions/a-free/entitlements/credits",
                 params={"requested": 1}).json()["has_access"] is True
    overage = current(a, "/v1/subscriptions/a-pro/entitlements/credits", requested=5)
    assert overage["has_access"] is True and overage["limit_kind"] == "overage"
    assert (overage["used"], overage["remaining"], overage["overage_units"]) == ("130", "0",
                                                                                 "5")
    bad = a.get("/v1/subscriptions/a-free/entitlements/credits", params={"requested": "1e3x"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_quantity"


def test_the_freshness_says_how_far_the_quota_model_is_behind(api: RunningApi,
                                                              api_engine: Engine) -> None:
    """A kept reading answers until it is older than max_age; once billing.events shows a
    newer version of its subscription, it answers saying how many events it lacks until the
    follower reads it again. What is stored but not yet relayed counts once the store is
    asked again."""
    a = api.client(api.key("acct-a"))

    def ask() -> dict[str, Any]:
        return dict(a.get("/v1/subscriptions/a-free/entitlements/credits").json())
    first = ask()
    a.post("/v1/usage", json=usage("u1", "a-free", 2))
    ingest_all(api_engine, api.published[api_engine.settings.topics.usage])  # stored, not relayed
    kept = ask()
    assert kept["used"] == "0"
    assert kept["freshness"]["checked_at"] == first["freshness"]["checked_at"]
    api.ctx.entitlements.max_age = 0  # every reading too old: the store is asked
    asked = ask()
    assert asked["freshness"]["pending_events"] >= 1 and asked["used"] == "0"
    assert asked["freshness"]["checked_at"] > first["freshness"]["checked_at"]
    api.ctx.entitlements.max_age = 600
    relay_all(api_engine)  # the API's follower sees the new version: the kept reading is stale
    until(lambda: api.ctx.entitlements.newest("a-free") >= asked["freshness"]["stored_version"],
          lambda: time.sleep(0.05), timeout=20)
    assert ask()["freshness"]["pending_events"] >= 1
    project_all(api_engine)
    body = current(a, "/v1/subscriptions/a-free/entitlements/credits")
    assert body["used"] == "2"
    assert ask()["freshness"]["checked_at"] == body["freshness"]["checked_at"]  # kept again


def _raw(api: RunningApi, request: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw HTTP bytes (the last request saying `Connection: close`) and split what comes
    back into (status, headers, body) answers, in order."""
    host, port = api.url.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(request)
        while chunk := conn.recv(65536):
            received += chunk
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        answers.append((int(lines[0].split()[1]), headers, rest[:length]))
        received = rest[length:]
    return answers


def _get(path: str, token: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {token}",
                        *extra, "", ""]).encode()


def _one_by_one(api: RunningApi, requests: list[bytes]) -> list[tuple[int, dict[str, str],
                                                                     bytes]]:
    """Send each request on one kept-alive connection once the previous one is answered."""
    host, port = api.url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        received = b""
        for request in requests:
            conn.sendall(request)
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                assert chunk, f"connection closed before answering {request!r}"
                received += chunk
            head, _, received = received.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            while len(received) < int(headers["content-length"]):
                received += conn.recv(65536)
            length = int(headers["content-length"])
            answers.append((int(lines[0].split()[1]), headers, received[:length]))
            received = received[length:]
    return answers


def test_kept_checks_answered_in_the_protocol_match_the_app_in_order(
        api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's protocol answers a plain kept check as its bytes arrive
    (infra/api/uvicorn_internals.py): the same body and headers as the app's answer; anything
    else (a refusal, another request on the way, a header that changes the request's meaning,
    HTTP/1.0, a percent-encoded id) goes to the app, in order."""
    from infra.api import entitlements

    answered: list[bool] = []
    kept_body = entitlements.kept_body

    def counted(*args: Any) -> bytes | None:
        body = kept_body(*args)
        answered.append(body is not None)
        return body
    monkeypatch.setattr(entitlements, "kept_body", counted)
    token = api.key("acct-a")
    path = "/v1/subscriptions/a-free/entitlements/credits?requested=3"
    by_app, kept, again = _one_by_one(api, [_get(path, token)] * 3)
    assert [by_app[0], kept[0], again[0]] == [200, 200, 200]
    assert answered == [False, True, True]  # nothing kept at first: the app asked
    assert orjson.loads(kept[2]) == orjson.loads(by_app[2]) == orjson.loads(again[2])
    assert kept[1]["content-type"] == by_app[1]["content-type"] == "application/json"
    assert kept[1].keys() == by_app[1].keys()
    # A refusal (the app's) and kept checks, sent together: answered in that order, by the
    # app (the protocol answers only a read holding one request on an idle connection).
    slow = "/v1/subscriptions/a-free/entitlements/credits?requested=1e3x"
    answers = _raw(api, _get(slow, token) + _get(path, token) + _get(path, token,
                                                                     "Connection: close"))
    assert [a[0] for a in answers] == [422, 200, 200]
    assert orjson.loads(answers[2][2]) == orjson.loads(by_app[2])
    assert answers[2][1]["connection"] == "close"
    # Another key's (asked, refused by the app), percent-encoded, HTTP/1.0, a body, two
    # Authorization headers: left to the app, which answers the same way.
    before = len(answered)
    other = _one_by_one(api, [_get(path, api.key("acct-b"))])
    assert other[0][0] == 404 and answered[before:] == [False]
    left = [_get(path.replace("a-free", "a%2Dfree"), token),
            _get(path, token, "Content-Length: 0"),
            _get(path, token, f"Authorization: Bearer {token}"),
            _get(path, token).replace(b"HTTP/1.1", b"HTTP/1.0")]  # closes after answering
    assert [a[0] for a in _one_by_one(api, left)] == [200, 200, 200, 200]
    assert answered[before + 1:] == []


def test_made_up_key_ids_hold_at_most_two_database_lookups_at_once(
        api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each made-up key id costs a lookup; however many arrive at once, they wait their turn
    for two connections, and each is refused with its code."""
    looking, most = [0], [0]
    lookup = api.ctx.principal

    def slow(token: str) -> Any:
        looking[0] += 1
        most[0] = max(most[0], looking[0])
        try:
            time.sleep(0.1)
            return lookup(token)
        finally:
            looking[0] -= 1
    monkeypatch.setattr(api.ctx, "principal", slow)
    path = "/v1/subscriptions/a-free/entitlements/credits"

    def hostile(n: int) -> httpx.Response:
        return api.client(f"bk_made{n:08d}_secret").get(path)
    with ThreadPoolExecutor(12) as pool:  # not asyncio.run: a browser test's loop may run
        answers = list(pool.map(hostile, range(12)))
    assert {(a.status_code, a.json()["code"]) for a in answers} == {(401, "invalid_key")}
    assert most[0] == 2


def test_feature_entitlements_come_from_the_plan_and_add_ons(api: RunningApi,
                                                             api_engine: Engine) -> None:
    a = api.client(api.key("acct-a"))
    plan = a.get("/v1/subscriptions/a-free/entitlements/ai_assistant").json()
    assert (plan["has_access"], plan["granted_by"], plan["kind"]) == (True, "plan", "feature")
    other = a.get("/v1/subscriptions/a-free/entitlements/custom_domains").json()
    assert (other["has_access"], other["reason"]) == (False, "feature_not_included")
    sent = a.post("/v1/commands", json={"id": "c-sso", "type": "add_addon",
                                         "subscription": "a-pro", "addon": "sso"})
    assert sent.status_code == 202, sent.text
    loop, _ = api_engine.commands()
    until(lambda: _outcome(api_engine, "c-sso") is not None, lambda: loop.poll_once(100))
    sso = a.get("/v1/subscriptions/a-pro/entitlements/saml_sso").json()
    assert (sso["has_access"], sso["granted_by"]) == (True, "addon:sso")
    unknown = a.get("/v1/subscriptions/a-free/entitlements/teleportation")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_entitlement"


def _outcome(api_engine: Engine, command_id: str) -> Any:
    with psycopg.connect(api_engine.database_url) as conn:
        return conn.execute("SELECT result, code FROM command_outcomes WHERE command_id = %s",
                            (command_id,)).fetchone()


# --- usage in ------------------------------------------------------------------------------

def test_usage_batches_are_answered_per_event_and_count_once(api: RunningApi,
                                                             api_engine: Engine) -> None:
    a = api.client(api.key("acct-a"))
    batch = [usage("k1", "a-pro", 10), usage("k2", "a-pro", 2.5),
             usage("k3", "b-free", 1), usage("k4", "nobody", 1), usage("k1", "a-pro", 10),
             {"id": "k5", "subscription": "a-pro"}, usage("k6", "a-pro", "1.5")]
    body = a.post("/v1/usage", json=batch).json()
    statuses = [(i["status"], i.get("code")) for i in body["items"]]
    assert statuses == [("accepted", None), ("refused", "invalid_quantity"),
                        ("refused", "unknown_subscription"),
                        ("refused", "unknown_subscription"), ("duplicate", None),
                        ("refused", "missing_field"), ("accepted", None)]
    assert (body["accepted"], body["duplicate"], body["refused"]) == (2, 1, 4)
    ingest_and_project(api, api_engine)
    again = a.post("/v1/usage", json=[usage("k1", "a-pro", 10)]).json()
    assert again["items"][0]["status"] == "duplicate"
    assert api_engine.app.load_as_stored("a-pro").used["credits"] == Decimal("11.5")

    single = a.post("/v1/usage", json=usage("k7", "a-pro", -1))
    assert single.status_code == 422 and single.json()["code"] == "invalid_quantity"
    one = a.post("/v1/usage", json=usage("k8", "a-pro", 1))
    assert one.status_code == 202 and one.json()["status"] == "accepted"


def test_cloudevents_are_accepted_one_at_a_time_and_in_batches(api: RunningApi,
                                                               api_engine: Engine) -> None:
    a = api.client(api.key("acct-a"))

    def event(uid: str, quantity: Any) -> dict[str, Any]:
        return {"specversion": "1.0", "id": uid, "source": "/assistant", "type": "credits",
                "subject": "a-pro", "time": TODAY, "data": {"quantity": quantity}}
    one = a.post("/v1/usage", content=httpx.Request("POST", "/", json=event("ce1", 3)).content,
                 headers={"Content-Type": "application/cloudevents+json"})
    assert one.status_code == 202, one.text
    with_properties = event("ce4", 2)
    with_properties["data"]["properties"] = {"model": "gpt-4o"}
    bad_properties = event("ce5", 2)
    bad_properties["data"]["properties"] = {"model": 4}
    many = a.post("/v1/usage", json=[event("ce2", 4), {**event("ce3", 1), "specversion": "0.3"},
                                     with_properties, bad_properties],
                  headers={"Content-Type": "application/cloudevents-batch+json"}).json()
    assert [(i["status"], i.get("code")) for i in many["items"]] == [
        ("accepted", None), ("refused", "invalid_cloudevent"), ("accepted", None),
        ("refused", "invalid_properties")]
    ingest_and_project(api, api_engine)
    assert api_engine.app.load_as_stored("a-pro").used["credits"] == Decimal(9)


def test_bodies_of_the_wrong_size_type_or_shape_are_refused_with_codes(api: RunningApi) -> None:
    a = api.client(api.key("acct-a"))
    huge = a.post("/v1/commands", content=b"{" + b" " * 70_000 + b"}",
                  headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["code"] == "too_large"
    typed = a.post("/v1/usage", content=b"id=1", headers={"Content-Type": "text/plain"})
    assert typed.status_code == 415 and typed.json()["code"] == "unsupported_media_type"
    broken = a.post("/v1/usage", content=b"[{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["code"] == "malformed_json"
    twice = a.post("/v1/usage", content=b'{"id": "x", "id": "y"}',
                   headers={"Content-Type": "application/json"})
    assert twice.status_code == 422 and twice.json()["code"] == "duplicate_key"
    empty = a.post("/v1/usage", json=[])
    assert empty.status_code == 422 and empty.json()["code"] == "invalid_batch"


# --- commands ------------------------------------------------------------------------------

def test_a_command_tells_whether_it_was_applied_or_refused_and_why(api: RunningApi,
                                                                   api_engine: Engine) -> None:
    a = api.client(api.key("acct-a"))
    assert a.post("/v1/commands", json={"id": "c1", "type": "change_plan",
                                        "subscription": "a-free", "plan": "pro"}
                  ).status_code == 202
    assert a.post("/v1/commands", json={"id": "c2", "type": "change_plan",
                                        "subscription": "a-free", "plan": "gold"}
                  ).status_code == 202
    invalid = a.post("/v1/commands", json={"id": "c3", "type": "fly",
                                           "subscription": "a-free"})
    assert invalid.status_code == 422 and invalid.json()["code"] == "unknown_command"
    pending = a.get("/v1/commands/c1")
    assert pending.status_code == 404 and pending.json()["code"] == "no_outcome"
    loop, _ = api_engine.commands()
    until(lambda: _outcome(api_engine, "c2") is not None, lambda: loop.poll_once(100))
    applied = a.get("/v1/commands/c1").json()
    assert (applied["status"], applied["result"], applied["subscription"]) == (
        "applied", "upgraded", "a-free")
    refused = a.get("/v1/commands/c2", params={"subscription": "a-free"}).json()
    assert (refused["status"], refused["code"]) == ("refused", "unknown_plan")
    tenant_only = a.post("/v1/commands", json={"id": "c4", "type": "record_payment",
                                               "subscription": "a-free", "reference": "r",
                                               "outcome": "paid", "amount": "1.00"})
    assert tenant_only.status_code == 403 and tenant_only.json()["code"] == "admin_only"
    for n, fields in enumerate(({"type": "terminate"},
                                {"type": "grant_credits", "amount": "1000.00"},
                                {"type": "grant_credits", "amount": "5", "purchased": False},
                                {"type": "override_prices", "overrides": {"price": "1.00"}},
                                {"type": "subscribe", "plan": "free", "account": "acct-a",
                                 "overrides": {"price": "0"}})):
        gift = a.post("/v1/commands", json={"id": f"c4-{n}", "subscription": "a-free",
                                            **fields})
        assert gift.status_code == 403 and gift.json()["code"] == "admin_only", fields
    bought = a.post("/v1/commands", json={"id": "c4-b", "type": "grant_credits",
                                          "subscription": "a-free", "amount": "5",
                                          "purchased": True})
    assert bought.status_code == 202, bought.text
    other_account = a.post("/v1/commands", json={"id": "c5", "type": "subscribe",
                                                 "subscription": "a-new", "plan": "free",
                                                 "account": "acct-b"})
    assert other_account.status_code == 403 and other_account.json()["code"] == "wrong_account"


# --- reads ---------------------------------------------------------------------------------

def test_the_reads_show_state_monitor_invoices_recommendation_history_and_catalog(
        api: RunningApi, api_engine: Engine) -> None:
    a = api.client(api.key("acct-a"))
    a.post("/v1/usage", json=[usage("r1", "a-pro", 40), usage("r2", "a-pro", 5,
                                                                member="ann@a.example")])
    ingest_and_project(api, api_engine)
    state = a.get("/v1/subscriptions/a-pro").json()
    assert (state["plan"], state["account"], state["allowances"]["credits"]["used"]) == (
        "pro", "acct-a", "45")
    before = a.get("/v1/subscriptions/a-pro", params={"as_of": "2027-03-01T00:00:00Z"}).json()
    assert before["allowances"]["credits"]["used"] == "0"
    gone = a.get("/v1/subscriptions/a-pro", params={"as_of": "2027-02-01T00:00:00Z"})
    assert gone.status_code == 404
    monitor = a.get("/v1/subscriptions/a-pro/monitor").json()
    credits = monitor["metrics"][0]
    assert credits["used"] == "45" and credits["per_member"] == {"ann@a.example": "5"}
    assert credits["per_day"] == {"2027-03-10": "45"}

    api_engine.app.advance_clock(datetime(2027, 4, 2, tzinfo=UTC), ["a-pro"])
    invoice_everything(api_engine)
    listed = a.get("/v1/subscriptions/a-pro/invoices").json()
    assert listed, "the March cycle is invoiced"
    number = listed[-1]["number"]
    document = a.get(f"/v1/invoices/{number}").json()
    assert document["subscription"] == "a-pro" and document["currency"] == "EUR"
    html = a.get(f"/v1/invoices/{number}/html")
    assert html.headers["content-type"].startswith("text/html") and number in html.text
    grouped = a.get("/v1/accounts/acct-a/invoices").json()
    assert number in [i["number"] for g in grouped["invoices"] for i in g["invoices"]]
    assert all(g["total"] == str(sum(Decimal(i["total"]) for i in g["invoices"]))
               for g in grouped["invoices"])
    pdf = a.get(f"/v1/invoices/{number}/pdf")
    assert pdf.content.startswith(b"%PDF") and "attachment" in pdf.headers[
        "content-disposition"]

    history = a.get("/v1/subscriptions/a-pro/history", params={"limit": 2}).json()
    assert [e["version"] for e in history["events"]] == [1, 2] and history["next"]
    rest = a.get(history["next"]).json()
    assert rest["events"][0]["version"] == 3
    catalog = a.get("/v1/catalog").json()
    assert {p["id"] for p in catalog["plans"]} >= {"free", "pro"}
    recommendation = a.get("/v1/subscriptions/a-pro/recommendation")
    assert recommendation.status_code in (200, 404), recommendation.text
    if recommendation.status_code == 200:
        assert recommendation.json()["current_plan"] == "pro"


def test_the_monitor_stream_pushes_a_change_without_asking_again(api: RunningApi,
                                                                 api_engine: Engine) -> None:
    import json
    import threading

    token = api.key("acct-a")
    seen: list[dict[str, Any]] = []
    two = threading.Event()

    def listen() -> None:
        with api.client(token) as c, c.stream(
                "GET", "/v1/subscriptions/a-free/monitor/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if len(seen) == 2:
                        two.set()
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    until(lambda: len(seen) == 1, lambda: two.wait(0.1), timeout=20)
    assert seen[0]["metrics"][0]["used"] == "0"
    api.client(token).post("/v1/usage", json=usage("s1", "a-free", 2))
    ingest_and_project(api, api_engine)
    assert two.wait(20), "the change was pushed"
    assert seen[1]["metrics"][0]["used"] == "2"


# --- access --------------------------------------------------------------------------------

def _every_route(api: RunningApi) -> list[tuple[str, str]]:
    """(method, path) of every API route, with A's subscription and invoice filled in."""
    from infra.api.app import ROUTERS

    routes: list[tuple[str, str]] = []
    for route in (r for router in ROUTERS for r in router.routes):
        if isinstance(route, APIRoute):
            path = (route.path.replace("{subscription}", "a-pro")
                    .replace("{name}", "credits").replace("{number}", "A-INVOICE")
                    .replace("{command_id}", "c-a").replace("{account}", "acct-a"))
            routes.extend((method, path) for method in sorted(route.methods or ()))
    return routes


BODIES = {"/v1/usage": [usage("x1", "a-pro", 1)],
          "/v1/commands": {"id": "c-x", "type": "cancel", "subscription": "a-pro"}}


def test_every_route_refuses_another_tenants_key_no_key_and_a_revoked_key(
        api: RunningApi, api_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = api.client(admin_token := api.key())
    a_token = api.key("acct-a")
    # A's own: an invoice and a command outcome to be asked about.
    assert admin.post("/v1/commands", json={"id": "c-a", "type": "cancel",
                                            "subscription": "a-pro"}).status_code == 202
    loop, _ = api_engine.commands()
    until(lambda: _outcome(api_engine, "c-a") is not None, lambda: loop.poll_once(100))
    b = api.client(b_token := api.key("acct-b"))
    revoked_token = api.key("acct-a")
    with psycopg.connect(api_engine.database_url, autocommit=True) as conn:
        assert keys.revoke(conn, keys.parse(revoked_token)[0], NOW)  # type: ignore[index]
    api.ctx._keys.clear()  # the cache would trust it for a few more seconds
    routes = _every_route(api)
    assert len(routes) >= 13
    for method, path in routes:
        bare = path.split("?")[0]
        kwargs: dict[str, Any] = {"json": BODIES[bare]} if bare in BODIES else {}
        if path.endswith("/stream"):
            kwargs["timeout"] = 10
        answer = b.request(method, path, **kwargs)
        if bare == "/v1/catalog":
            assert answer.status_code == 200  # the catalog is every tenant's to read
        elif bare == "/v1/usage":
            assert answer.json()["items"][0]["code"] == "unknown_subscription", path
        else:
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["code"] in ("not_found", "no_outcome"), (path, answer.text)
        for token in (None, "bk_000000000000_nonsense", revoked_token):
            refused = api.client(token).request(method, path, **kwargs)
            assert refused.status_code == 401, (method, path, token, refused.text)
            assert refused.json()["code"] in ("missing_key", "invalid_key")
    assert api.client(a_token).get("/v1/commands/c-a").json()["status"] == "applied"
    for token in (admin_token, a_token, b_token, revoked_token):
        assert token not in caplog.text
        secret = keys.parse(token)
        assert secret is not None and secret[1] not in caplog.text  # the whole secret: it
        # may hold "_", and a fragment after one could be a single common character


def test_the_openapi_document_lists_every_route_and_the_docs_page_serves(
        api: RunningApi) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    for _, path in _every_route(api):
        template = (path.replace("a-pro", "{subscription}").replace("credits", "{name}")
                    .replace("A-INVOICE", "{number}").replace("c-a", "{command_id}")
                    .replace("acct-a", "{account}"))
        assert template in spec["paths"], template
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    docs = httpx.get(f"{api.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_hostile_requests_get_a_clear_answer_never_a_server_error(api: RunningApi) -> None:
    """Found by trying: text PostgreSQL cannot hold, huge or nested inputs, bad parameters.
    Each gets a 4xx with a code, and the server goes on answering."""
    a = api.client(api.key("acct-a"))
    nested = b"[" * 5000 + b"]" * 5000
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/subscriptions/a%00b/entitlements/credits", {}),
        ("GET", "/v1/subscriptions/a-free/entitlements/cr%00edits", {}),
        ("GET", "/v1/subscriptions/a-free/entitlements/credits?requested=%00", {}),
        ("GET", "/v1/subscriptions/" + "x" * 5000 + "/entitlements/credits", {}),
        ("GET", "/v1/subscriptions/a%00b", {}),
        ("GET", "/v1/subscriptions/a-free?as_of=yesterday", {}),
        ("GET", "/v1/subscriptions/a-free?as_of=2027-03-01T00:00:00", {}),
        ("GET", "/v1/subscriptions/a-free/history?after=-1", {}),
        ("GET", "/v1/subscriptions/a-free/history?limit=100000", {}),
        ("GET", "/v1/invoices/INV%00", {}),
        ("GET", "/v1/commands/c%00?subscription=a%00", {}),
        ("POST", "/v1/commands", {"content": b'{"id": "x\\u0000", "type": "cancel", '
                                              b'"subscription": "a-free"}'}),
        ("POST", "/v1/commands", {"content": b"[]"}),
        ("POST", "/v1/commands", {"content": nested}),
        ("POST", "/v1/usage", {"content": nested}),
        ("POST", "/v1/usage", {"content": b'{"id": "\\ud800", "subscription": "a-free"}'}),
        ("POST", "/v1/usage", {"content": b"\xff\xfe"}),
    ]
    for method, path, kwargs in probes:
        if "content" in kwargs:
            kwargs["headers"] = {"Content-Type": "application/json"}
        answer = a.request(method, path, **kwargs)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)
        assert answer.json()["code"], (path, answer.text)
    assert a.get("/v1/subscriptions/a-free/entitlements/credits").status_code == 200

"""The operator's JSON API for the suppression list and the Prometheus metrics: who may use
them, paging well past 1,000 entries, search, audited removal, CSV both ways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from waypost import runtime as wiring
from waypost.outbound import suppression
from waypost.store.models import inbound_messages, utcnow
from waypost.web.app import create_app

TOKEN = "the-admin-token-0123456789"


@pytest.fixture
def api(make_settings: Callable[..., Any], database_url: str) -> Iterator[Callable[..., tuple[Any, TestClient]]]:
    built: list[Any] = []

    def make(host: str = "127.0.0.1") -> tuple[Any, TestClient]:
        runtime = wiring.build(make_settings(database={"url": database_url}, web={"admin_token": TOKEN}))
        built.append(runtime)
        return runtime, TestClient(create_app(runtime), client=(host, 50000))

    yield make
    for runtime in built:
        runtime.close()


@pytest.mark.parametrize("host, token, expected", [
    ("127.0.0.1", None, 200),
    ("203.0.113.9", None, 403),
    ("203.0.113.9", "wrong", 403),
    ("203.0.113.9", TOKEN, 200),
])
@pytest.mark.parametrize("path", ["/api/suppressions", "/api/suppressions.csv", "/metrics"])
def test_operator_endpoints_need_loopback_or_the_admin_token(api: Any, host: str, token: str | None,
                                                             expected: int, path: str) -> None:
    _, client = api(host)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    assert client.get(path, headers=headers).status_code == expected
    changed = client.post("/api/suppressions", json={"address": "x@example.org"}, headers=headers)
    assert changed.status_code == (201 if expected == 200 else 403)


def test_changes_need_a_json_body_so_a_foreign_page_cannot_forge_them(api: Any) -> None:
    runtime, client = api()
    form = client.post("/api/suppressions", data={"address": "x@example.org"})
    plain = client.post("/api/suppressions.csv", content=b"x@example.org\n", headers={"Content-Type": "text/plain"})

    assert form.status_code == 415 and plain.status_code == 415
    with runtime.engine.connect() as conn:
        assert suppression.entries(conn) == []


def test_paging_searching_and_audited_removal(api: Any) -> None:
    runtime, client = api()
    with runtime.engine.begin() as conn:
        suppression.add_many(conn, [suppression.NewEntry(f"user{n:04d}@{'a' if n % 2 else 'b'}.example",
                                                         suppression.Reason.BOUNCE, "test") for n in range(2500)])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = client.get("/api/suppressions", params={"limit": 1000, **({"after": cursor} if cursor else {})}).json()
        seen += [e["address"] for e in page["entries"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == 2500 and seen == sorted(seen) and len(set(seen)) == 2500

    found = client.get("/api/suppressions", params={"domain": "a.example", "search": "user00", "limit": 1000})
    assert [e["address"] for e in found.json()["entries"]] == [f"user{n:04d}@a.example" for n in range(1, 100, 2)]
    assert client.get("/api/suppressions", params={"reason": "COMPLAINT"}).json()["entries"] == []
    assert client.get("/api/suppressions", params={"limit": 0}).status_code == 400

    no_reason = client.request("DELETE", "/api/suppressions/user0001@a.example", json={})
    removed = client.request("DELETE", "/api/suppressions/user0001@a.example", json={"reason": "address fixed"})
    gone = client.get("/api/suppressions/user0001@a.example")

    assert no_reason.status_code == 400 and removed.json() == {"address": "user0001@a.example", "removed": True}
    assert gone.status_code == 404
    assert [(h["action"], h["by"], h["note"]) for h in gone.json()["history"]][0] == (
        "remove", "operator (api)", "address fixed")


def test_add_with_reason_note_and_expiry_then_csv_round_trip(api: Any) -> None:
    runtime, client = api()
    added = client.post("/api/suppressions", json={"address": "Ann@Example.org", "reason": "complaint",
                                                  "note": "phoned", "days": 2})
    again = client.post("/api/suppressions", json={"address": "ann@example.org"})
    bad = client.post("/api/suppressions", json={"address": "not an address"})

    assert added.status_code == 201 and again.status_code == 200 and again.json()["added"] is False
    assert bad.status_code == 400
    entry = client.get("/api/suppressions/ann@example.org").json()
    assert entry["reason"] == "COMPLAINT" and entry["detail"] == "phoned" and entry["expires_at"]

    exported = client.get("/api/suppressions.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    refused = client.post("/api/suppressions.csv", content=b"address\nbob@example.org\nnope\n",
                          headers={"Content-Type": "text/csv"})
    imported = client.post("/api/suppressions.csv", content=exported.content + b"bob@example.org,MANUAL\n",
                           headers={"Content-Type": "text/csv"})

    assert refused.status_code == 400 and refused.json()["problems"][0].startswith("line 3:")
    assert imported.json() == {"imported": 2, "new": 1}


def test_metrics_expose_queues_rates_suppressions_and_alarms(api: Any) -> None:
    runtime, client = api()
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", suppression.Reason.BOUNCE, "test")
        for n, reason in enumerate(["sender-not-allowlisted: eve@example.net", "sender-not-allowlisted: x@y.example",
                                    "not-authenticated: dmarc=fail"]):
            conn.execute(inbound_messages.insert().values(
                id=f"m{n}", received_at=utcnow(), rcpt_tos=["journeys@waypost.test"], blob_key="k", size=1,
                ingress="smtp", status="refused", reason=reason))

    text = client.get("/metrics").text

    assert 'waypost_suppressed_addresses{reason="BOUNCE"} 1.0' in text
    assert 'waypost_alarm_firing{alarm="dead_letters"} 0.0' in text
    assert 'waypost_reputation_rate{judged="false",metric="bounce",stream="all",window="24 hours"} 0.0' in text
    assert "waypost_jobs_due 0.0" in text
    assert 'waypost_inbound_messages_24h{reason="sender-not-allowlisted",status="refused"} 2.0' in text
    assert 'waypost_inbound_messages_24h{reason="not-authenticated",status="refused"} 1.0' in text

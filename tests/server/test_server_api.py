"""The FastAPI app over a real SQLite store, served by uvicorn on a free port, over real HTTP.

(Not Starlette's TestClient: with the installed Starlette it warns that httpx is deprecated in
favour of httpx2, and warnings are errors here.)
"""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest
from support.telemetry import T0, make_event, make_metrics, make_status

from edgetune.server.api import create_app
from edgetune.server.service import HttpServer
from edgetune.server.store import Store

TOKEN = "s3cret-token"


@pytest.fixture
def filled(store: Store) -> Store:
    """Two devices: jetson-01 online with three events and two metrics, jetson-02 with a status only."""
    store.add(make_status("jetson-01", seq=1, head_version=4), "edgetune/v1/jetson-01/status", received_at=T0)
    for seq in (2, 3, 4):
        store.add(make_event("jetson-01", seq=seq, label=f"w{seq}"), "edgetune/v1/jetson-01/events", received_at=T0)
    for seq in (5, 6):
        store.add(make_metrics("jetson-01", seq=seq, p50_ms=seq), "edgetune/v1/jetson-01/metrics", received_at=T0)
    store.add(make_status("jetson-02", seq=1, state="offline"), "edgetune/v1/jetson-02/status", received_at=T0)
    return store


def _serve(app) -> Iterator[httpx.Client]:
    http = HttpServer(app, "127.0.0.1", 0)
    http.start()
    try:
        with httpx.Client(base_url=http.url, timeout=5) as c:
            yield c
    finally:
        http.stop()


@pytest.fixture
def client(filled: Store) -> Iterator[httpx.Client]:
    """The open API (no token)."""
    yield from _serve(create_app(filled))


@pytest.fixture
def locked_client(filled: Store) -> Iterator[httpx.Client]:
    """The API with a token."""
    yield from _serve(create_app(filled, token=TOKEN))


def test_devices_are_listed_with_state_counts_and_last_event(client):
    # Execute
    response = client.get("/api/devices")

    # Assert
    assert response.status_code == 200
    rows = {d["device"]: d for d in response.json()["devices"]}
    assert sorted(rows) == ["jetson-01", "jetson-02"]
    assert (rows["jetson-01"]["state"], rows["jetson-01"]["events"], rows["jetson-01"]["head_version"]) == (
        "online", 3, 4)
    assert rows["jetson-01"]["last_event"]["label"] == "w4"
    assert rows["jetson-02"]["state"] == "offline"


def test_one_device_includes_its_status_body(client):
    # Execute
    body = client.get("/api/devices/jetson-01").json()

    # Assert
    assert body["status"]["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize("path, status", [("/api/devices/jetson-99", 404), ("/api/devices/fleet", 422),
                                          ("/api/devices/jetson-99/metrics", 404)])
def test_unknown_or_invalid_devices_are_errors(client, path, status):
    # Execute / Assert
    assert client.get(path).status_code == status


def test_events_are_listed_newest_first(client):
    # Execute
    events = client.get("/api/events", params={"limit": 2}).json()["events"]

    # Assert
    assert [(e["device"], e["seq"], e["body"]["label"]) for e in events] == [("jetson-01", 4, "w4"),
                                                                              ("jetson-01", 3, "w3")]


def test_events_after_a_seq_of_one_device(client):
    # Execute
    events = client.get("/api/events", params={"device": "jetson-01", "after_seq": 2}).json()["events"]

    # Assert
    assert [e["seq"] for e in events] == [4, 3]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 100_000}, {"after_seq": -1, "device": "jetson-01"},
                                    {"after_seq": 3}, {"device": "bad/id"}, {"limit": "many"}])
def test_bad_event_queries_are_refused(client, params):
    # Execute / Assert
    assert client.get("/api/events", params=params).status_code == 422


def test_metrics_of_a_device_are_oldest_first(client):
    # Execute
    body = client.get("/api/devices/jetson-01/metrics", params={"limit": 10}).json()

    # Assert
    assert [m["body"]["latency_ms"]["p50"] for m in body["metrics"]] == [5, 6]


def test_stats_count_per_type_and_rejects(client, filled):
    # Prepare
    filled.count_reject("not_json", "edgetune/v1/jetson-01/events", "message is not UTF-8 JSON", at=T0)

    # Execute
    stats = client.get("/api/stats").json()

    # Assert
    assert stats["stored"] == {"event": 3, "metrics": 2, "status": 2}
    assert stats["rejected"] == {"not_json": 1}
    assert stats["duplicates"] == 0


def test_health_without_ingest_reports_the_database(client):
    # Execute
    response = client.get("/api/health")

    # Assert
    assert response.status_code == 200
    assert response.json()["ok"] is True and response.json()["database"]["ok"] is True
    assert response.json()["open"] is True


def test_the_dashboard_page_is_served_with_the_fleet_table(client):
    # Execute
    response = client.get("/")

    # Assert
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<table id="fleet">' in response.text and '<table id="events">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text  # no inline script: the CSP would block it


def test_the_dashboard_script_inserts_text_never_html(client):
    # Execute
    script = client.get("/static/dashboard.js")

    # Assert
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert "textContent" in script.text


def test_unknown_static_files_are_not_served(client):
    # Execute / Assert
    assert client.get("/static/..%2Fapi.py").status_code == 404
    assert client.get("/static/secret.txt").status_code == 404


@pytest.mark.parametrize("path", ["/", "/api/health", "/api/devices", "/api/devices/jetson-01", "/api/events",
                                  "/api/devices/jetson-01/metrics", "/api/stats"])
def test_every_route_needs_the_token_when_one_is_set(locked_client, path):
    # Execute
    missing = locked_client.get(path)
    wrong = locked_client.get(path, headers={"Authorization": "Bearer nope"})
    right = locked_client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

    # Assert
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.headers["www-authenticate"] == "Bearer"


def test_the_dashboard_accepts_the_token_in_its_address(locked_client):
    # Execute
    page = locked_client.get("/", params={"token": TOKEN})
    api = locked_client.get("/api/devices", params={"token": TOKEN})

    # Assert
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    assert api.status_code == 401  # only the page takes ?token=; its requests send the header


def test_the_page_assets_hold_no_data_and_need_no_token(locked_client):
    # Execute / Assert
    assert locked_client.get("/static/dashboard.css").status_code == 200


def test_a_non_ascii_token_attempt_is_refused_not_crashed(locked_client):
    # Execute
    response = locked_client.get("/api/devices", headers={"Authorization": "Bearer s3crét".encode("latin-1")})

    # Assert
    assert response.status_code == 401

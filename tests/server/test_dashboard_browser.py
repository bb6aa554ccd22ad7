"""The dashboard in a real browser: headless Chromium renders what a device sent over MQTT."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from support.telemetry import make_event, make_status, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _rendered_dom(url: str, profile) -> str:
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=4000",
                             "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_dashboard_shows_the_fleet_and_events_escaped(make_server, publisher, tmp_path):
    # Prepare: a server with a token; a device announces itself and sends an event whose label
    # is markup (a device's text must show as text, never run as HTML).
    server = make_server(token="browser-secret")
    server.start()
    assert server.wait_subscribed(5.0)
    publisher.send(make_status("jetson-dash-01", 1, bundle_id="kws", bundle_version="2.0.0"), retain=True)
    publisher.send(make_event("jetson-dash-01", 2, label="<b>seven</b>"))
    publisher.send(make_event("jetson-dash-01", 3, label="espresso", pipeline="camera", head="objects",
                              modality="image", source="v4l2:0"))
    wait_for(lambda: server.store.stats()["stored"].get("event", 0) >= 2, timeout_s=5)

    # Execute
    dom = _rendered_dom(f"{server.url}?token=browser-secret", tmp_path / "profile")
    refused = _rendered_dom(server.url, tmp_path / "profile2")

    # Assert: the script ran, filled both tables, and escaped the label.
    assert "jetson-dash-01" in dom and "kws 2.0.0" in dom
    assert "&lt;b&gt;seven&lt;/b&gt;" in dom and "<b>seven</b>" not in dom
    # The camera's event shows beside the microphone's, with its pipeline and head.
    assert '<tr class="modality-image">' in dom and "<td>camera</td><td>objects</td><td>espresso</td>" in dom
    assert '<tr class="modality-audio">' in dom and "<td>audio</td><td>keywords</td>" in dom
    assert "jetson-dash-01" not in refused

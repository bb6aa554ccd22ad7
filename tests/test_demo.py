"""`edgetune demo` as a new user runs it: the whole path on one machine, exit status 0."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from edgetune.contract.manifest import verify_bundle
from edgetune.localbroker import find_mosquitto

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.espeak]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)")
def test_demo_fine_tunes_on_the_device_and_the_server_stores_every_event(tmp_path):
    # Execute: fewer epochs than the default keep the suite short; the path is the same.
    result = subprocess.run([sys.executable, "-m", "edgetune.cli", "demo", "--out", str(tmp_path), "--epochs", "4",
                             "--json"], capture_output=True, text=True, timeout=600)

    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    device, telemetry = summary["device"], summary["telemetry"]
    assert device["new_words"]["before"] == 0.0 and device["new_words"]["after"] > 0.5
    assert device["accuracy_after"] > device["accuracy_before"]
    assert telemetry["events_published"] > 0
    assert telemetry["events_stored"] == telemetry["events_published"]
    assert "[1/8]" in result.stderr and "training" in result.stderr  # progress while it trains
    # The second modality and the fusion: a camera and fused heads ran beside the microphone.
    camera, fusion = summary["camera"], summary["fusion"]["table"]
    assert camera["frames"] > 0 and camera["fused_steps"] == camera["frames"]
    assert summary["image"]["test_accuracy"] > 0.5
    assert fusion["clean"]["gated"] > max(fusion["clean"]["audio"], fusion["clean"]["image"]) - 0.02
    assert fusion["image:noise"]["gated"] > fusion["image:noise"]["concat"]  # the gate turns to the clean modality
    assert camera["scored"]["fused:digits_gated"]["hits"] > camera["digits_shown"] / 2
    verify_bundle(tmp_path / "bundle")  # --out keeps the bundle, intact
    db = sqlite3.connect(tmp_path / "server.db")
    n_events = db.execute("SELECT COUNT(*) FROM messages WHERE type = 'event'").fetchone()[0]
    assert n_events == telemetry["events_published"]
    pipelines = {row[0] for row in db.execute(
        "SELECT DISTINCT json_extract(body, '$.pipeline') FROM messages WHERE type = 'event'")}
    assert pipelines == {"audio", "camera", "fused"}  # the dashboard's events table shows all three

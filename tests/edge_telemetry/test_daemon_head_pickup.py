"""A running `edgetune edge run` picks up a head version promoted beside it, by another process,
through the real head store, and tells the server in its retained status."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from support.telemetry import wait_for

from edgetune.edge.bundle import load_bundle
from support.bundles import device_trust
from edgetune.edge.head import Head
from edgetune.edge.head_store import HeadStore

pytestmark = [pytest.mark.slow, pytest.mark.broker]

DEVICE = "jetson-pickup-01"


@pytest.fixture
def bundle_dir(tmp_path):
    pytest.importorskip("torch")
    from support.bundles import make_bundle

    return make_bundle(tmp_path / "bundle")


def _always(bundle, label: str) -> Head:
    """A head whose bias makes ``label`` win every window (weights zero); a new label is appended."""
    labels = bundle.head.labels + (() if label in bundle.head.labels else (label,))
    bias = np.where(np.array(labels) == label, 10.0, 0.0)
    return Head(np.zeros((len(labels), bundle.head.embedding_size)), bias, labels)


def _tone_pcm(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def test_a_head_promoted_by_another_process_is_used_and_announced(bundle_dir, tmp_path, broker, subscribe, serve):
    # Prepare: the store already has v1 (always 'yes'); the daemon reads raw PCM from a pipe we feed;
    # the server's ingest acknowledges what it sends (else the daemon would send it again).
    serve(broker)
    state = tmp_path / "state"
    bundle = load_bundle(bundle_dir, trust=device_trust())
    store = HeadStore(bundle, state)
    store.add(_always(bundle, "yes"), parent=0, n_samples=1, accuracy_before=None, accuracy_after=None, promote=True)
    sub = subscribe(broker, DEVICE)
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetune.cli", "edge", "run", "--bundle", str(bundle_dir), "--state-dir", str(state),
         "--audio", "-", "--json", "--providers", "cpu", "--hop-ms", "100", "--refractory-ms", "500",
         "--device-id", DEVICE, "--broker", f"{broker.host}:{broker.port}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in proc.stdout), daemon=True)
    reader.start()
    try:
        proc.stdin.write(_tone_pcm(2.0))
        proc.stdin.flush()
        wait_for(lambda: any(e["head_version"] == 1 for e in lines), 60.0)
        # Execute: another process (this one) promotes v2, which knows a new label and always picks it.
        v2 = store.add(_always(bundle, "whistle"), parent=1, n_samples=1, accuracy_before=None,
                       accuracy_after=None, promote=True)
        time.sleep(0.2)
        for _ in range(8):  # 4 s more, in pieces, so the daemon polls the store between chunks
            proc.stdin.write(_tone_pcm(0.5))
            proc.stdin.flush()
            time.sleep(0.1)
        proc.stdin.close()
        assert proc.wait(60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        proc.stdout.close()
        log.close()

    # Assert: 'yes' from v1 first, then 'whistle' from v2, each event naming its version ...
    seen = [(e["label"], e["head_version"]) for e in lines]
    assert seen[0] == ("yes", 1) and ("whistle", v2.version) in seen
    first_v2 = seen.index(("whistle", v2.version))
    assert all(v == 1 for _, v in seen[:first_v2]) and all(v == 2 for _, v in seen[first_v2:])
    # ... and the retained status says v2, for the pipeline's head too.
    def announced() -> bool:
        bodies = [env["body"] for env, _ in sub.statuses() if env["body"]["state"] == "online"]
        return any(b.get("head_version") == 2 and b["pipelines"][0]["heads"] == {"keywords": 2} for b in bodies)

    assert wait_for(announced, 10.0)
    published = [env["body"] for env in sub.envelopes("events")]
    assert [(b["label"], b["head_version"]) for b in published] == seen

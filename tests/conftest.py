"""Fixtures every test folder shares: a real Mosquitto broker of the test's own, and the test
signing key (``support/bundles.py``) as the exporter's key and the device CLIs' trusted key."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.broker import require_mosquitto
from support.bundles import install_test_signing_key

from edgetune.localbroker import LocalBroker

# Bundles are signed: the exporter (in this process and the CLIs it starts) signs with the fixed
# test key, and the device CLIs trust it. No test touches the user's own signing key.
install_test_signing_key()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private Mosquitto on a free loopback port for this test. A broker that is installed but
    will not start fails the test (it is not skipped)."""
    require_mosquitto()
    with LocalBroker(tmp_path / "broker") as b:
        yield b

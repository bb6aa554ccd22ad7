"""Fixtures every test folder shares: a real Mosquitto broker of the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.broker import require_mosquitto

from edgetune.localbroker import LocalBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private Mosquitto on a free loopback port for this test. A broker that is installed but
    will not start fails the test (it is not skipped)."""
    require_mosquitto()
    with LocalBroker(tmp_path / "broker") as b:
        yield b

"""The test side of the local broker (the broker itself is edgetune.localbroker.LocalBroker)."""

import pytest

from edgetune.localbroker import find_mosquitto


def require_mosquitto() -> None:
    """Skip the test where the broker binary is missing (make test installs it; CI always has it)."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto, or set $MOSQUITTO to the binary)")

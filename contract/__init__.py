"""Contracts between exporter, device and server: defined once here, imported by the others.

- :mod:`.tensors`: file names and tensor names inside a bundle.
- :mod:`.manifest`: the bundle's ``manifest.json`` and its integrity check.
- :mod:`.topics`: MQTT topic names.
- :mod:`.messages`: the telemetry envelope and the bodies of each message type.
"""

from .errors import ContractError, IntegrityError

__all__ = ["ContractError", "IntegrityError"]

"""The telemetry and config modules stay light: no torch, and paho only when a client is made."""

import subprocess
import sys


def test_importing_telemetry_and_config_loads_neither_torch_nor_paho() -> None:
    code = (
        "import sys\n"
        "import edgetune.edge.config, edgetune.edge.telemetry\n"
        "from edgetune.edge.telemetry import publisher, sink, outbox\n"
        "print(sorted(m for m in ('torch', 'paho', 'edgetune.export', 'edgetune.server') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

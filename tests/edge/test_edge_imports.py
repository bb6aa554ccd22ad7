"""`edge` runs on a Jetson without torch: importing every module of it loads neither torch nor the other programs."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import edgetune.edge

FORBIDDEN = ("torch", "torchvision", "onnx", "edgetune.export", "edgetune.server")


def _edge_modules():
    return sorted(m.name for m in pkgutil.walk_packages(edgetune.edge.__path__, "edgetune.edge."))


def test_the_walk_finds_the_device_modules():
    found = _edge_modules()
    for name in ("edgetune.edge.cli", "edgetune.edge.wiring", "edgetune.edge.pipeline.loop", "edgetune.edge.audio.embed",
                 "edgetune.edge.runtime.providers", "edgetune.edge.enroll", "edgetune.edge.head_store"):
        assert name in found


def test_importing_every_edge_module_loads_no_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {_edge_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m in {FORBIDDEN!r} or m.startswith(('torch.', 'edgetune.export.', "
        "'edgetune.server.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]", out.stdout

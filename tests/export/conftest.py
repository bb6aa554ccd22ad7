"""Fixtures for the exporter's tests; they need the ``export`` extra (torch, onnx, onnxruntime)."""

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) leaves the repository off sys.path
    sys.path.append(str(_ROOT))

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory):
    """A real bundle with random weights (tests.support.bundles.make_bundle); do not modify it."""
    from tests.support.bundles import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "random")

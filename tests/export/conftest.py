"""Fixtures for the exporter's tests; they need the ``export`` extra (torch, onnx, onnxruntime)."""


import pytest


pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory):
    """A real bundle with random weights (support.bundles.make_bundle); do not modify it."""
    from support.bundles import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "random")

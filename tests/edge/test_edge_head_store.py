"""Versioned heads: v0 is the bundle's, new versions, promotion, rollback, crash-safe writes."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgetune.edge import head_store as head_store_module
from edgetune.edge.bundle import Bundle, BundleHead
from edgetune.contract import ContractError
from edgetune.contract.manifest import AudioSpec, HeadSpec, Manifest, MfccParams
from edgetune.edge.head import Head
from edgetune.edge.head_store import HeadStore
from edgetune.edge.state import default_state_dir, resolve_state_dir
from edgetune.errors import UsageError

D = 8
LABELS = ("_background_", "yes", "no")


@pytest.fixture
def small_bundle(tmp_path) -> Bundle:
    """A Bundle built in memory (the store needs only its ids and head, not its graphs)."""
    spec = HeadSpec(name="keywords", labels=LABELS, background_label="_background_")
    manifest = Manifest(bundle_id="store-test", bundle_version="1.0", created_at="2026-01-01T00:00:00+00:00",
                        heads=(spec,), audio=AudioSpec.whole_clip(MfccParams(), 16000, D))
    head = Head(np.zeros((3, D)), np.zeros(3), LABELS)
    return Bundle(directory=tmp_path / "bundle", manifest=manifest, content_id="0123456789abcdef",
                  heads={"keywords": BundleHead(spec, head, None)})


def _head(labels=LABELS, value=1.0):
    return Head(np.full((len(labels), D), value), np.arange(len(labels), dtype=np.float32), labels)


def test_a_new_store_has_the_bundle_head_as_version_zero(small_bundle, tmp_path):
    store = HeadStore(small_bundle, tmp_path / "state")
    assert store.current_version == 0
    assert [v.version for v in store.versions()] == [0]
    assert store.head() is small_bundle.head
    assert not (tmp_path / "state").exists()  # reading creates nothing


def test_promoted_versions_become_current_and_others_do_not(small_bundle, tmp_path):
    store = HeadStore(small_bundle, tmp_path / "state")
    v1 = store.add(_head(LABELS + ("wow",), 1.0), parent=0, n_samples=12, accuracy_before=0.5,
                   accuracy_after=0.9, promote=True)
    v2 = store.add(_head(LABELS, 2.0), parent=1, n_samples=4, accuracy_before=0.9, accuracy_after=0.7,
                   promote=False)
    assert (v1.version, v2.version, store.current_version) == (1, 2, 1)
    assert store.head().labels == LABELS + ("wow",)
    assert np.all(store.head(2).weight == 2.0)
    entries = {v.version: v for v in store.versions()}
    assert entries[1].parent == 0 and entries[1].n_samples == 12 and entries[1].promoted
    assert entries[2].accuracy_after == 0.7 and not entries[2].promoted
    assert entries[1].created_at and entries[1].labels == LABELS + ("wow",)


def test_rollback_points_current_at_an_older_version(small_bundle, tmp_path):
    store = HeadStore(small_bundle, tmp_path / "state")
    store.add(_head(value=1.0), parent=0, n_samples=1, accuracy_before=0.5, accuracy_after=0.6, promote=True)
    store.add(_head(value=2.0), parent=1, n_samples=1, accuracy_before=0.6, accuracy_after=0.7, promote=True)
    store.rollback(1)
    assert store.current_version == 1 and np.all(store.head().weight == 1.0)
    store.rollback(0)
    assert store.head() is small_bundle.head
    with pytest.raises(UsageError, match="version 7 does not exist"):
        store.rollback(7)


def test_a_crash_while_writing_the_index_leaves_the_previous_store(small_bundle, tmp_path, monkeypatch):
    store = HeadStore(small_bundle, tmp_path / "state")
    store.add(_head(value=1.0), parent=0, n_samples=1, accuracy_before=0.5, accuracy_after=0.6, promote=True)
    before = (store.root / "index.json").read_bytes()
    real_replace = os.replace

    def crash_on_index(src, dst):
        if Path(dst).name == "index.json":
            raise OSError("simulated power cut")
        real_replace(src, dst)

    monkeypatch.setattr(head_store_module.os, "replace", crash_on_index)
    with pytest.raises(OSError, match="power cut"):
        store.add(_head(value=2.0), parent=1, n_samples=1, accuracy_before=0.6, accuracy_after=0.7, promote=True)
    monkeypatch.undo()
    # Assert: the index is the old one, whole; version 1 still loads; the next save reuses number 2.
    assert (store.root / "index.json").read_bytes() == before
    assert store.current_version == 1 and np.all(store.head().weight == 1.0)
    assert store.add(_head(value=3.0), parent=1, n_samples=1, accuracy_before=None, accuracy_after=None,
                     promote=False).version == 2


def test_a_changed_version_file_is_refused(small_bundle, tmp_path):
    store = HeadStore(small_bundle, tmp_path / "state")
    store.add(_head(), parent=0, n_samples=1, accuracy_before=0.5, accuracy_after=0.6, promote=True)
    path = store.root / "v1.npz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="v1.npz does not match"):
        store.head(1)


def test_an_unreadable_index_gives_an_actionable_error(small_bundle, tmp_path):
    store = HeadStore(small_bundle, tmp_path / "state")
    store.root.mkdir(parents=True)
    (store.root / "index.json").write_text("{not json")
    with pytest.raises(UsageError, match="index.json is unreadable"):
        store.current_version


def test_index_is_plain_json_keyed_by_bundle_and_head(small_bundle, tmp_path):
    store = HeadStore(small_bundle, tmp_path / "state")
    store.add(_head(), parent=0, n_samples=3, accuracy_before=0.5, accuracy_after=0.6, promote=True)
    index = json.loads((tmp_path / "state" / "heads" / "0123456789abcdef" / "keywords" / "index.json").read_text())
    assert index["bundle_id"] == "store-test" and index["head"] == "keywords" and index["current"] == 1
    assert index["versions"][0]["file"] == "v1.npz" and len(index["versions"][0]["sha256"]) == 64


def test_state_dir_precedence(tmp_path):
    env = {"EDGETUNE_STATE_DIR": str(tmp_path / "a"), "XDG_STATE_HOME": str(tmp_path / "x"), "HOME": str(tmp_path)}
    assert default_state_dir(env) == tmp_path / "a"
    assert default_state_dir({k: v for k, v in env.items() if k != "EDGETUNE_STATE_DIR"}) == tmp_path / "x" / "edgetune"
    assert default_state_dir({"HOME": str(tmp_path)}) == tmp_path / ".local" / "state" / "edgetune"
    assert resolve_state_dir(tmp_path / "flag", env) == tmp_path / "flag"

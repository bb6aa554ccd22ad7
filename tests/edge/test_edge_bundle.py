"""Loading a bundle: verified first, then its head and replay set held in memory."""

import json

import numpy as np
import pytest

from edgetune.edge.bundle import load_bundle
from edgetune.contract import IntegrityError
from edgetune.errors import UsageError
from support.bundles import device_trust

TRUST = device_trust()


def test_a_bundle_loads_with_its_head_and_replay(bundle_dir):
    bundle = load_bundle(bundle_dir, trust=TRUST)
    assert bundle.head.labels == bundle.manifest.head().labels
    assert bundle.head.weight.shape == (len(bundle.head.labels), bundle.manifest.audio.embedding_size)
    assert bundle.replay is not None and set(bundle.replay.labels) <= set(bundle.head.labels)
    assert bundle.replay.embeddings.shape[1] == bundle.head.embedding_size
    assert len(bundle.content_id) == 16 and int(bundle.content_id, 16) >= 0
    assert bundle.background_label == "_background_"


def _files(bundle_dir):
    return ["manifest.json"] + sorted(json.loads((bundle_dir / "manifest.json").read_text())["files"])


@pytest.mark.parametrize("index", range(5))
def test_a_flipped_byte_in_any_file_is_refused_naming_the_file(bundle_dir, index):
    names = _files(bundle_dir)
    assert len(names) == 5  # manifest, two graphs, head, replay
    name = names[index]
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=name.replace(".", r"\.")):
        load_bundle(bundle_dir, trust=TRUST)


def test_content_id_changes_with_the_bundle(bundle_dir, tmp_path):
    from support.bundles import make_bundle

    other = make_bundle(tmp_path / "other", seed=1)
    assert load_bundle(bundle_dir, trust=TRUST).content_id != load_bundle(other, trust=TRUST).content_id


def test_a_missing_bundle_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_bundle(tmp_path / "nope", trust=TRUST)


def test_head_matches_the_npz(bundle_dir):
    bundle = load_bundle(bundle_dir, trust=TRUST)
    with np.load(bundle_dir / "head_keywords.npz") as head:
        np.testing.assert_array_equal(bundle.head.weight, head["weight"])


def test_a_tar_bundle_is_unpacked_once_and_verified(bundle_dir, tmp_path):
    import tarfile

    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(bundle_dir, arcname="random")
    first = load_bundle(archive, state_dir=tmp_path / "state", trust=TRUST)
    second = load_bundle(archive, state_dir=tmp_path / "state", trust=TRUST)
    assert first.directory == second.directory and first.directory.parent == (tmp_path / "state" / "bundles").resolve()
    assert first.content_id == load_bundle(bundle_dir, trust=TRUST).content_id


def test_a_tar_with_a_path_outside_is_refused(tmp_path):
    import io
    import tarfile

    from edgetune.contract import ContractError

    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ContractError, match="not allowed"):
        load_bundle(archive, state_dir=tmp_path / "state", trust=TRUST)
    assert not (tmp_path / "outside.txt").exists()

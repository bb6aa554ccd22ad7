"""A written bundle: verified, tamper-evident, and its graphs agree with PyTorch."""

import shutil
import tarfile

import numpy as np
import pytest
import torch

from edgetune.edge.contract import tensors
from edgetune.edge.contract.errors import IntegrityError
from edgetune.edge.contract.manifest import AudioSpec, MfccParams, verify_bundle
from edgetune.errors import UsageError
from edgetune.export.audio.model import DsCnn, DsCnnConfig
from edgetune.export.bundle import pack_bundle, write_audio_bundle
from edgetune.export.onnx_export import export_embedder, measure_parity, onnx_session


def test_bundle_passes_verification_and_lists_its_files(random_bundle):
    manifest = verify_bundle(random_bundle)
    assert set(manifest.files) == {tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE, tensors.HEAD_FILE,
                                   tensors.REPLAY_FILE}
    assert manifest.heads[0].labels == ("_background_", "yes", "no", "zero", "one")
    assert manifest.audio.frames_per_clip == 97 and manifest.audio.embedding_size == 64


def test_bundle_arrays_use_the_contract_names_and_float32(random_bundle):
    head = np.load(random_bundle / tensors.HEAD_FILE)
    replay = np.load(random_bundle / tensors.REPLAY_FILE)
    assert head[tensors.HEAD_WEIGHT].shape == (5, 64) and head[tensors.HEAD_WEIGHT].dtype == np.float32
    assert head[tensors.HEAD_BIAS].shape == (5,) and head[tensors.HEAD_BIAS].dtype == np.float32
    assert replay[tensors.REPLAY_EMBEDDINGS].dtype == np.float32 and replay[tensors.REPLAY_LABELS].dtype == np.int64
    assert set(replay[tensors.REPLAY_LABELS]) == set(range(5))


def test_parity_is_recorded_per_onnx_file_and_small(random_bundle):
    parity = verify_bundle(random_bundle).parity
    assert set(parity) == {tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE}
    for report in parity.values():
        assert report["n_inputs"] >= 2 and report["max_rel_error"] < 1e-4


@pytest.mark.parametrize("name", [tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE, tensors.HEAD_FILE,
                                  tensors.REPLAY_FILE, tensors.MANIFEST_FILE])
def test_a_flipped_byte_in_any_file_is_refused(random_bundle, tmp_path, name):
    # Prepare
    bundle = shutil.copytree(random_bundle, tmp_path / "b")
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / name).write_bytes(bytes(data))
    # Execute / Assert
    with pytest.raises(IntegrityError):
        verify_bundle(bundle)


def test_embedder_onnx_matches_torch_for_several_batch_sizes(tmp_path):
    # Prepare
    torch.manual_seed(0)
    embedder = DsCnn(DsCnnConfig(n_frames=97, n_features=13)).eval()
    path = export_embedder(embedder, tmp_path / "e.onnx", n_frames=97, n_features=13)
    session = onnx_session(path)
    for batch in (1, 2, 7):
        features = torch.randn(batch, 97, 13) * 50
        # Execute
        (got,) = session.run(None, {tensors.AUDIO_EMBEDDER_INPUT: features.numpy()})
        report = measure_parity(embedder, path, features.numpy())
        # Assert
        assert got.shape == (batch, 64)
        assert report["max_rel_error"] < 1e-5, report


def test_pack_bundle_writes_a_tar_of_the_directory(random_bundle, tmp_path):
    bundle = shutil.copytree(random_bundle, tmp_path / "kw")
    tar_path = pack_bundle(bundle)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    verify_bundle(tmp_path / "unpacked" / "kw")


def test_writing_over_a_directory_that_is_not_a_bundle_is_refused(tmp_path):
    # Prepare
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    params = MfccParams()
    n_frames = AudioSpec(frontend=params, clip_samples=16000, embedding_size=1).frames_per_clip
    embedder = DsCnn(DsCnnConfig(n_frames=n_frames, n_features=13, channels=8, n_blocks=1))
    # Execute / Assert
    with pytest.raises(UsageError, match="not a bundle"):
        write_audio_bundle(tmp_path / "out", bundle_id="x", bundle_version="1", params=params, clip_samples=16000,
                           embedder=embedder, head_weight=np.zeros((2, 8)), head_bias=np.zeros(2), labels=("a", "b"),
                           overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind


def test_a_head_that_does_not_fit_the_labels_is_refused(tmp_path):
    embedder = DsCnn(DsCnnConfig(n_frames=97, n_features=13, channels=8, n_blocks=1))
    with pytest.raises(ValueError, match="head weight"):
        write_audio_bundle(tmp_path / "out", bundle_id="x", bundle_version="1", params=MfccParams(),
                           clip_samples=16000, embedder=embedder, head_weight=np.zeros((3, 8)), head_bias=np.zeros(3),
                           labels=("a", "b"))


def test_a_bad_bundle_id_fails_before_anything_is_exported(tmp_path):
    from edgetune.edge.contract.errors import ContractError

    embedder = DsCnn(DsCnnConfig(n_frames=97, n_features=13, channels=8, n_blocks=1))
    with pytest.raises(ContractError, match="bundle_id"):
        write_audio_bundle(tmp_path / "out", bundle_id="a/b", bundle_version="1", params=MfccParams(),
                           clip_samples=16000, embedder=embedder, head_weight=np.zeros((2, 8)), head_bias=np.zeros(2),
                           labels=("a", "b"))
    assert list(tmp_path.iterdir()) == []

"""A written bundle: verified, tamper-evident, and its graphs agree with PyTorch."""

import shutil
import tarfile

import numpy as np
import pytest
import torch

from edgetune.contract import tensors
from edgetune.contract.errors import IntegrityError
from edgetune.contract.manifest import AudioSpec, MfccParams, verify_bundle
from edgetune.errors import UsageError
from edgetune.export.audio.model import DsCnn, DsCnnConfig
from edgetune.export.audio.frontend import MfccFrontend
from edgetune.export.bundle import HeadArrays, pack_bundle, write_bundle
from edgetune.export.onnx_export import export_embedder, measure_parity, onnx_session, torch_audio_graphs

HEAD_FILE, REPLAY_FILE = tensors.head_file("keywords"), tensors.replay_file("keywords")


def test_bundle_passes_verification_and_lists_its_files(random_bundle):
    manifest = verify_bundle(random_bundle)
    assert set(manifest.files) == {tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE, HEAD_FILE,
                                   REPLAY_FILE}
    assert manifest.heads[0].labels == ("_background_", "yes", "no", "zero", "one")
    assert manifest.audio.frames_per_clip == 97 and manifest.audio.embedding_size == 64


def test_bundle_arrays_use_the_contract_names_and_float32(random_bundle):
    head = np.load(random_bundle / HEAD_FILE)
    replay = np.load(random_bundle / REPLAY_FILE)
    assert head[tensors.HEAD_WEIGHT].shape == (5, 64) and head[tensors.HEAD_WEIGHT].dtype == np.float32
    assert head[tensors.HEAD_BIAS].shape == (5,) and head[tensors.HEAD_BIAS].dtype == np.float32
    assert replay[tensors.REPLAY_EMBEDDINGS].dtype == np.float32 and replay[tensors.REPLAY_LABELS].dtype == np.int64
    assert set(replay[tensors.REPLAY_LABELS]) == set(range(5))


def test_parity_is_recorded_per_onnx_file_and_small(random_bundle):
    parity = verify_bundle(random_bundle).parity
    assert set(parity) == {tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE}
    for report in parity.values():
        assert report["n_inputs"] >= 2 and report["max_rel_error"] < 1e-4


@pytest.mark.parametrize("name", [tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE, HEAD_FILE,
                                  REPLAY_FILE, tensors.MANIFEST_FILE])
def test_a_flipped_byte_in_any_file_is_refused(random_bundle, tmp_path, name):
    # Prepare
    bundle = shutil.copytree(random_bundle, tmp_path / "b")
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / name).write_bytes(bytes(data))
    # Execute / Assert
    with pytest.raises(IntegrityError):
        verify_bundle(bundle)


def test_a_file_added_to_the_bundle_is_refused_by_name(random_bundle, tmp_path):
    # Prepare: a file the manifest does not list (a swapped-in graph under another name, say).
    bundle = shutil.copytree(random_bundle, tmp_path / "b")
    (bundle / "extra.onnx").write_bytes(b"not listed")
    # Execute / Assert
    with pytest.raises(IntegrityError, match="extra.onnx: not listed in the manifest"):
        verify_bundle(bundle)


@pytest.mark.parametrize("name", [tensors.AUDIO_EMBEDDER_FILE, REPLAY_FILE])
def test_a_listed_file_deleted_from_the_bundle_is_refused_by_name(random_bundle, tmp_path, name):
    bundle = shutil.copytree(random_bundle, tmp_path / "b")
    (bundle / name).unlink()
    with pytest.raises(IntegrityError, match=f"{name}: missing"):
        verify_bundle(bundle)


def test_a_schema_1_bundle_is_refused_with_how_to_re_export_it(random_bundle, tmp_path):
    # Prepare: the manifest rewritten as the first release wrote it (schema 1), with a valid digest.
    import hashlib
    import json

    from edgetune.contract.errors import ContractError
    from edgetune.contract.manifest import read_manifest

    bundle = shutil.copytree(random_bundle, tmp_path / "old")
    data = json.loads((bundle / tensors.MANIFEST_FILE).read_text())
    data = {"schema_version": 1, "bundle_id": data["bundle_id"], "bundle_version": "1.0.0",
            "created_at": data["created_at"], "modalities": ["audio"], "fusion": "none",
            "heads": [{"name": "keywords", "labels": ["_background_", "yes"], "file": "head.npz", "input": "audio",
                       "background_label": "_background_"}], "files": data["files"]}
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    data["manifest_sha256"] = hashlib.sha256(body).hexdigest()
    (bundle / tensors.MANIFEST_FILE).write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    # Execute / Assert
    with pytest.raises(ContractError, match=r"schema_version 1 .* re-export it .*edgetune export train"):
        read_manifest(bundle)


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


def _writer_args(embedder_channels=8, labels=("a", "b"), width=8, bundle_id="x"):
    params = MfccParams()
    audio = AudioSpec.whole_clip(params, 16000, width)
    embedder = DsCnn(DsCnnConfig(n_frames=audio.frames_per_clip, n_features=13, channels=embedder_channels,
                                 n_blocks=1))
    heads = [HeadArrays("keywords", labels, np.zeros((len(labels), width)), np.zeros(len(labels)))]
    return dict(bundle_id=bundle_id, bundle_version="1", audio=audio,
                write_graphs=torch_audio_graphs(MfccFrontend(params), embedder, audio), heads=heads)


def test_writing_over_a_directory_that_is_not_a_bundle_is_refused(tmp_path):
    # Prepare
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    # Execute / Assert
    with pytest.raises(UsageError, match="not a bundle"):
        write_bundle(tmp_path / "out", overwrite=True, **_writer_args())
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind


def test_a_head_that_does_not_fit_the_labels_is_refused(tmp_path):
    args = _writer_args()
    args["heads"] = [HeadArrays("keywords", ("a", "b"), np.zeros((3, 8)), np.zeros(3))]
    with pytest.raises(ValueError, match="head keywords: weight"):
        write_bundle(tmp_path / "out", **args)


def test_a_bad_bundle_id_fails_before_anything_is_exported(tmp_path):
    from edgetune.contract.errors import ContractError

    with pytest.raises(ContractError, match="bundle_id"):
        write_bundle(tmp_path / "out", **_writer_args(bundle_id="a/b"))
    assert list(tmp_path.iterdir()) == []

"""Real bundles for tests, made in seconds.

:func:`make_bundle` writes a bundle through the exporter's own :func:`write_bundle`: the
real MFCC front-end graph, a real DS-CNN embedder graph, the head and its replay set, parity
figures and a manifest that passes ``verify_bundle``. The only thing not real is the learning:
with ``trained=False`` the DS-CNN and the head have random (seeded) weights, so the bundle's
predictions are meaningless; its replay embeddings are the embedder's actual outputs for seeded
noise clips, labelled round-robin. ``trained=True`` trains a small keyword model on espeak-ng
speech first (10-40 s on 2 cores; needs espeak-ng; renderings cached in
``~/.cache/edgetune/espeak`` or ``$EDGETUNE_CACHE``), for tests that need predictions that mean
something.

Needs the ``export`` extra (torch, onnx). Each argument set is exported once per test process
into a private temporary directory and then copied to ``out_dir``, so a test may change its copy.

Every bundle is signed with :func:`signing_key` (a fixed test key); :func:`device_trust` is the
device's trust policy for it. :func:`install_test_signing_key` (called by ``tests/conftest.py``)
makes that key the exporter's key (``$EDGETUNE_KEY_DIR``) and the CLI's trusted key
(``$EDGETUNE_TRUSTED_KEYS``) for the test process and the subprocesses it starts, so no test
reads or creates a key in the user's home.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_LABELS = ("_background_", "yes", "no", "zero", "one")
_REPLAY_PER_CLASS = 4
_CACHE: dict[tuple, Path] = {}
#: The test key's seed: fixed, so that every test process has the same key (never use it elsewhere).
_TEST_KEY_SEED = bytes(range(32))


def signing_key():
    """The fixed Ed25519 key the test bundles are signed with (an ``export.signing.SigningKey``)."""
    from edgetune.export.signing import SigningKey

    return SigningKey.from_seed(_TEST_KEY_SEED)


def public_key_text() -> str:
    """The test key's public key as ``ed25519:<base64>`` (what a config's trusted_keys holds)."""
    from edgetune.contract.signing import PublicKey
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return PublicKey.from_cryptography(ed25519.Ed25519PrivateKey.from_private_bytes(_TEST_KEY_SEED)).to_text()


def device_trust(*, allow_unsigned: bool = False):
    """A device's trust policy that trusts the test key."""
    from edgetune.contract.signing import TrustPolicy

    return TrustPolicy.of([public_key_text()], allow_unsigned=allow_unsigned)


def install_test_signing_key() -> None:
    """Make the test key the exporter's key and the CLI's trusted key, in ``os.environ``."""
    try:
        key = signing_key()
    except ImportError:  # no cryptography: the tests that sign are skipped with their extra
        return
    key_dir = Path(tempfile.mkdtemp(prefix="edgetune-test-keys-"))
    atexit.register(shutil.rmtree, key_dir, ignore_errors=True)
    key.save(key_dir)
    os.environ["EDGETUNE_KEY_DIR"] = str(key_dir)
    os.environ["EDGETUNE_TRUSTED_KEYS"] = public_key_text()


def _sign(bundle_dir: Path) -> None:
    from edgetune.export.signing import sign_bundle

    sign_bundle(bundle_dir, signing_key())


def make_bundle(out_dir: Path, *, labels: tuple[str, ...] = DEFAULT_LABELS, trained: bool = False,
                seed: int = 0) -> Path:
    """Write a real audio bundle to ``out_dir`` (created; must not hold another bundle) and return it.

    ``labels``: the head's classes (the first one ``_background_`` by convention). ``trained=False``:
    random seeded weights, a few seconds. ``trained=True``: a keyword model trained on
    espeak-ng clips of ``labels`` (background included), tens of seconds.
    """
    out_dir = Path(out_dir)
    key = (tuple(labels), bool(trained), int(seed))
    cached = _CACHE.get(key)
    if cached is None or not cached.is_dir():
        root = Path(tempfile.mkdtemp(prefix="edgetune-test-bundle-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        cached = root / "bundle"
        if trained:
            _make_trained(cached, tuple(labels), seed)
        else:
            _make_random(cached, tuple(labels), seed)
        _CACHE[key] = cached
    shutil.copytree(cached, out_dir, dirs_exist_ok=True)
    return out_dir


def _make_random(out_dir: Path, labels: tuple[str, ...], seed: int) -> None:
    import torch

    from edgetune.contract.manifest import AudioSpec, MfccParams
    from edgetune.export.audio.frontend import MfccFrontend
    from edgetune.export.audio.model import DsCnn, DsCnnConfig
    from edgetune.export.bundle import KEYWORD_HEAD, HeadArrays, write_bundle
    from edgetune.export.onnx_export import torch_audio_graphs

    params = MfccParams()
    clip_samples = params.sample_rate_hz
    n_frames = AudioSpec.whole_clip(params, clip_samples, 1).frames_per_clip
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    embedder = DsCnn(DsCnnConfig(n_frames=n_frames, n_features=params.n_features)).eval()

    # Noise clips at several levels: normalisation statistics and replay embeddings come from them.
    n_clips = _REPLAY_PER_CLASS * len(labels)
    gains = 10.0 ** rng.uniform(-3.0, -0.5, size=(n_clips, 1))
    clips = (gains * rng.standard_normal((n_clips, clip_samples + params.lookback_samples))).astype(np.float32)
    with torch.no_grad():
        features = MfccFrontend(params)(torch.from_numpy(clips))  # [n_clips, T, F]
        embedder.set_normalization(features.mean(dim=(0, 1)), features.std(dim=(0, 1)))
        # Batch-norm statistics re-estimated on these clips, so that embeddings are of order one.
        for module in embedder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average
        embedder.train()
        embedder(features)
        embedder.eval()
        replay = embedder(features).numpy()
    dim = embedder.config.embedding_size
    weight = (rng.standard_normal((len(labels), dim)) / np.sqrt(dim)).astype(np.float32)
    bias = np.zeros(len(labels), dtype=np.float32)
    frontend = MfccFrontend(params)
    write_bundle(
        out_dir,
        bundle_id="test-random",
        bundle_version=f"0.0.{seed}",
        audio=AudioSpec.whole_clip(params, clip_samples, dim),
        write_graphs=torch_audio_graphs(frontend, embedder, AudioSpec.whole_clip(params, clip_samples, dim),
                                        clips[:2]),
        heads=[HeadArrays(KEYWORD_HEAD, labels, weight, bias, replay_embeddings=replay,
                          replay_labels=np.arange(n_clips) % len(labels))],
        metrics={"note": "random weights: no accuracy claimed"},
        provenance={"made_by": "tests.support.bundles.make_bundle", "trained": False, "seed": seed},
    )
    _sign(out_dir)


def _make_trained(out_dir: Path, labels: tuple[str, ...], seed: int) -> None:
    from edgetune.export.train import TrainConfig, train_keyword_bundle

    if labels[0] != "_background_" or "_background_" in labels[1:]:
        raise ValueError(f"labels {labels!r}: a trained bundle's labels are '_background_' then the keywords")
    config = TrainConfig.small(words=labels[1:], seed=seed)
    train_keyword_bundle(out_dir, config, progress=False)
    _sign(out_dir)


def make_speech_bundle(out_dir: Path, *, labels: tuple[str, ...] = DEFAULT_LABELS, n_windows: int = 3,
                       pooling: str = "seg3", seed: int = 0) -> Path:
    """A real ``speech_embedding`` bundle (the pretrained graphs from the openwakeword wheel,
    rewritten by the exporter) with a random seeded head; no torch needed. Cached like
    :func:`make_bundle`."""
    out_dir = Path(out_dir)
    key = ("speech", tuple(labels), n_windows, pooling, seed)
    cached = _CACHE.get(key)
    if cached is None or not cached.is_dir():
        from edgetune.export.audio.speech_embedding_export import audio_spec, speech_embedding_graphs
        from edgetune.export.bundle import KEYWORD_HEAD, HeadArrays, write_bundle

        root = Path(tempfile.mkdtemp(prefix="edgetune-test-speech-bundle-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        cached = root / "bundle"
        spec = audio_spec(n_windows, pooling)
        rng = np.random.default_rng(seed)
        width = spec.embedding_size
        weight = (rng.standard_normal((len(labels), width)) / np.sqrt(width)).astype(np.float32)
        write_bundle(cached, bundle_id="test-speech", bundle_version=f"0.0.{seed}", audio=spec,
                     write_graphs=speech_embedding_graphs(spec),
                     heads=[HeadArrays(KEYWORD_HEAD, labels, weight, np.zeros(len(labels), np.float32))],
                     metrics={"note": "random head: no accuracy claimed"},
                     provenance={"made_by": "tests.support.bundles.make_speech_bundle", "seed": seed})
        _sign(cached)
        _CACHE[key] = cached
    shutil.copytree(cached, out_dir, dirs_exist_ok=True)
    return out_dir

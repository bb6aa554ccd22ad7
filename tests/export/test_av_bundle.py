"""An audio-visual bundle: two single-modality bundles combined, with fused concat and gated heads."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.contract import ContractError, tensors
from edgetune.contract.manifest import verify_bundle
from edgetune.edge.bundle import load_bundle
from edgetune.edge.fusion.gated import GatedHead
from edgetune.edge.head import Head
from edgetune.export.av_bundle import write_av_bundle
from edgetune.export.bundle import HeadArrays
from support.bundles import make_speech_bundle, signing_key
from support.image_bundles import EMBEDDING, trust, image_spec, make_image_bundle


def _fused(da: int, labels=("red", "green", "blue"), seed: int = 0) -> list[HeadArrays]:
    rng = np.random.default_rng(seed)
    d, c = da + EMBEDDING, len(labels)
    w = rng.standard_normal((c, d)).astype(np.float32)
    gate = {tensors.GATE_WEIGHT: rng.standard_normal((2, d)).astype(np.float32),
            tensors.GATE_BIAS: np.zeros(2, np.float32), tensors.INPUT_MEAN: np.zeros(d, np.float32),
            tensors.INPUT_SCALE: np.ones(d, np.float32)}
    return [HeadArrays("both_concat", labels, w, np.zeros(c), input="fused", fusion="concat"),
            HeadArrays("both_gated", labels, w, np.zeros(c), input="fused", fusion="gated", extra=gate)]


@pytest.fixture()
def parts(tmp_path):
    audio = make_speech_bundle(tmp_path / "audio", n_windows=3, pooling="mean")
    image = make_image_bundle(tmp_path / "image")
    return audio, image, verify_bundle(audio).audio.embedding_size


def test_the_combined_bundle_keeps_both_bundles_and_runs_its_fused_heads(parts, tmp_path):
    audio, image, da = parts
    manifest = write_av_bundle(tmp_path / "av", audio_bundle=audio, image_bundle=image, fused=_fused(da),
                               window_s=0.8, bundle_id="test-av", bundle_version="1", key=signing_key())
    assert manifest.modalities == ("audio", "image") and manifest.fusion.inputs == ("audio", "image")
    assert [(h.name, h.input, h.fusion) for h in manifest.heads] == [
        ("keywords", "audio", None), ("colours", "image", None), ("both_concat", "fused", "concat"),
        ("both_gated", "fused", "gated")]
    for file in manifest.audio.files + manifest.image.files:  # the graphs are the very same bytes
        src = audio if file in manifest.audio.files else image
        assert (tmp_path / "av" / file).read_bytes() == (src / file).read_bytes()
    bundle = load_bundle(tmp_path / "av", **trust())
    concat, gated = bundle.heads["both_concat"].head, bundle.heads["both_gated"].head
    assert isinstance(concat, Head) and isinstance(gated, GatedHead)
    x = np.random.default_rng(1).standard_normal((4, da + EMBEDDING)).astype(np.float32)
    assert gated.predict_proba(x).shape == (4, 3) and concat.predict_proba(x).shape == (4, 3)
    np.testing.assert_allclose(gated.gates(x).sum(axis=1), 1.0, rtol=1e-5)
    assert bundle.heads["colours"].replay is not None  # the image head keeps its replay set


def test_a_gated_head_without_its_gate_or_of_the_wrong_width_is_refused(parts, tmp_path):
    audio, image, da = parts
    concat, gated = _fused(da)
    broken = HeadArrays("both_gated", gated.labels, gated.weight, gated.bias, input="fused", fusion="gated",
                        extra={k: v for k, v in gated.extra.items() if k != tensors.GATE_BIAS})
    with pytest.raises(ValueError, match=r"extra arrays .*; expected \['gate_bias', 'gate_weight'"):
        write_av_bundle(tmp_path / "a", audio_bundle=audio, image_bundle=image, fused=[broken],
                        bundle_id="x", bundle_version="1")
    narrow = HeadArrays("both_concat", concat.labels, concat.weight[:, :-1], concat.bias, input="fused",
                        fusion="concat")
    with pytest.raises(ValueError, match=f"embedding size {da + EMBEDDING}"):
        write_av_bundle(tmp_path / "b", audio_bundle=audio, image_bundle=image, fused=[narrow],
                        bundle_id="x", bundle_version="1")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_fused_head_in_a_bundle_without_fusion_is_refused():
    from edgetune.contract.manifest import HeadSpec, Manifest

    with pytest.raises(ContractError, match=r"heads\[both\].input is 'fused'"):
        Manifest(bundle_id="x", bundle_version="1", created_at="now",
                 heads=(HeadSpec("both", ("a", "b"), input="fused", fusion="concat"),), image=image_spec())

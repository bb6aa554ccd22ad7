"""Audio-visual pairs, raw-input corruptions and the fused heads (export/fusion)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgetune.contract import tensors
from edgetune.edge.fusion import GatedHead, load_fused_head
from edgetune.edge.head import Head
from edgetune.export.data.speech import DIGITS, SpeechDataConfig
from edgetune.export.fusion import (FusionFitConfig, PairConfig, PairEmbeddings, corrupt_audio, corrupt_frames,
                                    corrupted_training_set, digit_frame, embed_pairs, evaluate_heads,
                                    fit_concat_head, fit_gated_head, fit_heads, gated_logits_torch,
                                    load_digit_frames, make_pairs, pair_indices, writer_blocks)
from edgetune.export.fusion.corrupt import BLANK_GREY

LABELS = ("p", "q", "r", "s")
DA, DI = 6, 10


# -- data made by the tests -------------------------------------------------------------------

def _blobs(n: int, seed: int) -> PairEmbeddings:
    """Gaussian-blob embeddings of 4 classes, each modality informative but noisy on its own.

    A corrupted modality carries no class at all: ``noise`` is Gaussian around an offset of its own
    (what a backbone makes of hiss or random pixels: a region away from every class), ``silence`` /
    ``blank`` one constant vector (what it makes of an all-zero clip or a grey frame).
    """
    rng = np.random.default_rng([seed, 1])
    centres = np.random.default_rng(99)  # the same class centres in every split
    mu_a, mu_i = centres.normal(0, 1.0, (4, DA)), centres.normal(0, 1.0, (4, DI))
    off_a, off_i = centres.normal(0, 3.0, DA), centres.normal(0, 3.0, DI)
    const_a, const_i = centres.normal(0, 3.0, DA), centres.normal(0, 3.0, DI)
    y = rng.integers(0, 4, n)
    audio = mu_a[y] + rng.normal(0, 0.9, (n, DA))
    image = mu_i[y] + rng.normal(0, 1.0, (n, DI))
    f = np.float32
    return PairEmbeddings(
        labels=y,
        audio={"clean": audio.astype(f), "noise": (off_a + rng.normal(0, 1.0, (n, DA))).astype(f),
               "silence": np.tile(const_a, (n, 1)).astype(f)},
        image={"clean": image.astype(f), "blank": np.tile(const_i, (n, 1)).astype(f),
               "noise": (off_i + rng.normal(0, 1.0, (n, DI))).astype(f)})


@pytest.fixture(scope="module")
def blobs() -> dict[str, PairEmbeddings]:
    return {"train": _blobs(600, 0), "val": _blobs(300, 1), "test": _blobs(600, 2)}


@pytest.fixture(scope="module")
def fitted(blobs):
    config = FusionFitConfig(l2_grid=(1e-2, 1e-1), seed=0)
    return fit_heads(blobs["train"], blobs["val"], LABELS, config)


# -- pairs --------------------------------------------------------------------------------------

def test_writer_blocks_are_contiguous_and_nearly_equal():
    block = writer_blocks(1797)
    assert block[0] == 0 and block[-1] == 12 and np.all(np.diff(block) >= 0)
    sizes = np.bincount(block)
    assert sizes.size == 13 and sizes.max() - sizes.min() <= 1


def test_digit_splits_use_disjoint_writer_blocks():
    config = PairConfig()
    images = load_digit_frames(config)
    blocks = {split: set(b.tolist()) for split, (_, _, b) in images.items()}
    assert blocks["train"] == set(range(9)) and blocks["val"] == {9, 10} and blocks["test"] == {11, 12}
    frames, labels, _ = images["test"]
    assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3) and set(labels.tolist()) == set(range(10))
    assert sum(len(v[1]) for v in images.values()) == 1797


def test_overlapping_writer_blocks_are_refused():
    with pytest.raises(ValueError, match="disjoint blocks"):
        PairConfig(writer_blocks={"train": (0, 1, 2), "val": (2,), "test": (3,)})


def test_digit_frame_is_dark_ink_on_white():
    digit = np.zeros((8, 8))
    digit[2:6, 3:5] = 16.0  # a bar of full ink
    frame = digit_frame(digit, 64)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert frame[0, 0].tolist() == [255, 255, 255]  # paper
    assert frame[32, 32].tolist() == [0, 0, 0]  # ink
    assert np.array_equal(frame[..., 0], frame[..., 2])
    with pytest.raises(ValueError, match=r"expected \[8, 8\]"):
        digit_frame(np.zeros((8, 9)))


def test_pairs_are_same_class_and_use_every_item():
    rng = np.random.default_rng(0)
    a_lab = np.array([0] * 5 + [1] * 3)
    i_lab = np.array([0] * 2 + [1] * 7)
    ai, ii, y = pair_indices(a_lab, i_lab, rng)
    assert np.array_equal(a_lab[ai], y) and np.array_equal(i_lab[ii], y)
    assert set(ai.tolist()) == set(range(8)) and set(ii.tolist()) == set(range(9))
    assert y.size == 5 + 7
    again = pair_indices(a_lab, i_lab, np.random.default_rng(0))
    assert all(np.array_equal(u, v) for u, v in zip((ai, ii, y), again))


@pytest.mark.espeak
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_pairs_never_share_voices_or_writer_blocks_across_splits(tmp_path):
    speech = SpeechDataConfig(words=DIGITS, background_ratio=0.0, renderings_per_voice=1, train_copies=1,
                              train_voices=("en-us", "en+f3"), val_voices=("en+m3",), test_voices=("en+f4",),
                              clip_samples=8000, cache_dir=str(tmp_path / "espeak"))
    pairs = make_pairs(PairConfig(speech=speech, seed=3))
    voices = {split: set(p.voices) for split, p in pairs.items()}
    blocks = {split: set(p.blocks.tolist()) for split, p in pairs.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not voices[a] & voices[b], (a, b)
        assert not blocks[a] & blocks[b], (a, b)
    assert voices["test"] == {"en+f4"}
    test = pairs["test"]
    # Same class on both sides: the clip's word and the image's digit.
    images = load_digit_frames(PairConfig(speech=speech))["test"]
    assert np.array_equal(images[1][test.image_index], test.labels)
    assert test.clips.shape == (len(test), 8000) and len(test.frames) == len(test)


# -- corruptions and embedding --------------------------------------------------------------------

def test_audio_noise_has_the_clip_rms_and_silence_is_zero():
    rng = np.random.default_rng(0)
    clips = (rng.standard_normal((3, 16000)) * np.array([[0.01], [0.1], [0.3]])).astype(np.float32)
    noisy = corrupt_audio(clips, "noise", np.random.default_rng(1))
    rms = np.sqrt(np.mean(np.square(clips), axis=1))
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(noisy), axis=1)), rms, rtol=0.05)
    assert abs(float(np.corrcoef(noisy[1], clips[1])[0, 1])) < 0.05  # the word is gone
    assert not corrupt_audio(clips, "silence", rng).any()
    with pytest.raises(ValueError, match=r"audio corruption is 'hum'; expected one of \['noise', 'silence'\]"):
        corrupt_audio(clips, "hum", rng)


def test_frame_corruptions_keep_the_shape():
    frames = [np.zeros((64, 64, 3), np.uint8), np.full((32, 48, 3), 9, np.uint8)]
    blank = corrupt_frames(frames, "blank", np.random.default_rng(0))
    noise = corrupt_frames(frames, "noise", np.random.default_rng(0))
    assert [f.shape for f in blank] == [f.shape for f in noise] == [(64, 64, 3), (32, 48, 3)]
    assert all((f == BLANK_GREY).all() for f in blank)
    assert noise[0].std() > 50 and noise[0].dtype == np.uint8


def test_embed_pairs_corrupts_raw_inputs_and_embeds_each_source_once():
    from edgetune.export.fusion.pairs import PairSet

    rng = np.random.default_rng(0)
    pairs = PairSet(source_clips=rng.uniform(-0.5, 0.5, (3, 100)).astype(np.float32), source_voices=("v",) * 3,
                    source_frames=np.zeros((2, 8, 8, 3), np.uint8), source_blocks=np.zeros(2, np.int64),
                    audio_index=np.array([0, 1, 2, 0]), image_index=np.array([0, 1, 1, 0]),
                    labels=np.array([0, 0, 0, 0]))
    seen: dict[str, list] = {"audio": [], "image": []}

    def audio_embed(clips):
        seen["audio"].append(clips.shape[0])
        return np.stack([np.abs(clips).max(axis=1), clips.std(axis=1)], axis=1)

    def image_embed(frames):
        seen["image"].append(len(frames))
        return np.stack([[f.mean(), f.std()] for f in frames])

    audio, image = embed_pairs(pairs, audio_embed, image_embed, audio_corruption="silence",
                               image_corruption="blank")
    assert seen == {"audio": [3], "image": [2]}  # sources, not pairs
    assert audio.shape == (4, 2) and not audio.any()  # the embedder saw silent clips
    np.testing.assert_allclose(image, [[BLANK_GREY, 0.0]] * 4)  # and grey frames


# -- heads ----------------------------------------------------------------------------------------

def test_corrupted_training_set_corrupts_the_share_asked():
    data = _blobs(200, 5)
    audio, image, y, conditions = corrupted_training_set(data, 0.5, seed=0)
    counts = {c: conditions.count(c) for c in set(conditions)}
    assert counts["clean"] == 100
    assert counts["audio:noise"] == counts["audio:silence"] == counts["image:blank"] == counts["image:noise"] == 25
    k = conditions.index("audio:silence")
    np.testing.assert_array_equal(audio[k], data.audio["silence"][k])
    np.testing.assert_array_equal(image[k], data.image["clean"][k])


def test_fused_arrays_have_the_contract_keys_and_load(fitted):
    concat, gated = fitted["concat"], fitted["gated"]
    assert set(concat.arrays) == {tensors.HEAD_WEIGHT, tensors.HEAD_BIAS} and concat.fusion == "concat"
    assert concat.arrays[tensors.HEAD_WEIGHT].shape == (4, DA + DI)
    assert set(gated.arrays) == set(tensors.GATED_HEAD_ARRAYS) and gated.fusion == "gated"
    shapes = {k: v.shape for k, v in gated.arrays.items()}
    assert shapes == {"weight": (4, DA + DI), "bias": (4,), "gate_weight": (2, DA + DI), "gate_bias": (2,),
                      "input_mean": (DA + DI,), "input_scale": (DA + DI,)}
    assert all(v.dtype == np.float32 for v in gated.arrays.values())
    assert isinstance(load_fused_head(concat.arrays, "concat", concat.labels, (DA, DI)), Head)
    assert isinstance(load_fused_head(gated.arrays, "gated", gated.labels, (DA, DI)), GatedHead)
    assert gated.labels == concat.labels == LABELS
    # And as the exporter's HeadArrays, ready for write_bundle.
    shipped = gated.head_arrays("digits_gated")
    assert shipped.input == "fused" and shipped.fusion == "gated"
    assert set(shipped.arrays(shipped.weight, shipped.bias)) == set(tensors.GATED_HEAD_ARRAYS)
    assert concat.head_arrays("digits_concat").extra is None


def test_the_torch_forward_that_is_trained_is_the_one_the_device_runs(fitted, blobs):
    torch = pytest.importorskip("torch")
    gated = fitted["gated"]
    x = np.concatenate(blobs["test"].condition("audio:noise"), axis=1)
    logits, gates = gated_logits_torch(torch.from_numpy(x), gated.arrays, (DA, DI))
    head = GatedHead(**gated.arrays, labels=gated.labels, splits=(DA, DI))
    np.testing.assert_allclose(head.predict_proba(x), torch.softmax(logits, dim=1).numpy(), atol=1e-5)
    np.testing.assert_allclose(head.gates(x), gates.numpy(), atol=1e-5)


def test_the_gate_turns_to_the_clean_modality(fitted, blobs):
    table = evaluate_heads(fitted, blobs["test"])
    for condition in ("audio:noise", "audio:silence"):
        assert table.gates[condition]["image"] > 0.8, (condition, table.gates)
    for condition in ("image:blank", "image:noise"):
        assert table.gates[condition]["audio"] > 0.8, (condition, table.gates)
    acc = table.accuracy
    # Fused beats each modality alone on clean pairs; the gate beats plain concat when one is corrupted.
    assert acc["clean"]["gated"] > max(acc["clean"]["audio"], acc["clean"]["image"])
    assert acc["clean"]["concat"] > max(acc["clean"]["audio"], acc["clean"]["image"])
    for condition in table.conditions[1:]:
        assert acc[condition]["gated"] >= acc[condition]["concat"] + 0.1, (condition, acc[condition])
    text = table.render()
    assert "image:blank" in text and "gated" in text and f"n = {len(blobs['test'])}" in text


def test_gated_fit_is_deterministic(blobs):
    config = FusionFitConfig(l2_grid=(1e-1,), max_steps=50, seed=4)
    a = fit_gated_head(blobs["train"], LABELS, config=config)
    b = fit_gated_head(blobs["train"], LABELS, config=config)
    for key in tensors.GATED_HEAD_ARRAYS:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])


def test_concat_head_reads_raw_embeddings(blobs):
    # The standardisation is folded in: the shipped head on raw [audio; image] is the fit's own decision.
    head = fit_concat_head(blobs["train"], LABELS, config=FusionFitConfig(l2_grid=(1e-2,)))
    x = np.concatenate(blobs["test"].condition("clean"), axis=1)
    pred = np.argmax(Head(head.arrays["weight"], head.arrays["bias"], LABELS).predict_proba(x), axis=1)
    assert np.mean(pred == blobs["test"].labels) > 0.9

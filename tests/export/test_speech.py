"""Keyword clips synthesised with espeak-ng: shapes, rate, split by voice, cache."""

import shutil

import numpy as np
import pytest

from edgetune.export.data import augment
from edgetune.export.data.speech import SpeechDataConfig, parse_wav, synthesize, synthesize_splits

pytestmark = [pytest.mark.espeak,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return SpeechDataConfig(words=("yes", "seven"), train_voices=("en-us", "en+f3"), val_voices=("en-gb",),
                            test_voices=("en+m5", "en-029"), renderings_per_voice=2, train_copies=2,
                            background_ratio=1.5, seed=3,
                            cache_dir=str(tmp_path_factory.mktemp("espeak")))


@pytest.fixture(scope="module")
def splits(config):
    return synthesize_splits(config)


def test_clips_are_one_second_float32_at_16_khz(splits, config):
    for clips in splits.values():
        assert clips.audio.shape[1] == config.clip_samples == 16000 and clips.audio.dtype == np.float32
        assert np.all(np.abs(clips.audio) <= 1.0)
        assert clips.label_names == ("_background_", "yes", "seven")


def test_every_split_has_every_label_in_expected_numbers(splits):
    # train: 2 words x 2 voices x 2 renderings x 2 copies; background 1.5 x one word's count
    assert splits["train"].counts() == {"_background_": 12, "yes": 8, "seven": 8}
    assert splits["test"].counts() == {"_background_": 6, "yes": 4, "seven": 4}


def test_splits_use_disjoint_voices(splits, config):
    voices = {name: set(clips.voices) - {""} for name, clips in splits.items()}
    assert voices == {"train": set(config.train_voices), "val": set(config.val_voices),
                      "test": set(config.test_voices)}


def test_the_same_seed_gives_the_same_clips(splits, config):
    again = synthesize_splits(config, splits=("test",))
    np.testing.assert_array_equal(again["test"].audio, splits["test"].audio)


def test_a_rendering_is_cached_on_disk(config, tmp_path):
    first = synthesize("yes", "en-us", 175, 50, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    second = synthesize("yes", "en-us", 175, 50, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, second)
    assert 0.1 < first.size / 16000 < 1.0  # a short word, silence trimmed, at 16 kHz


def test_overlapping_voices_are_refused():
    with pytest.raises(ValueError, match="disjoint"):
        SpeechDataConfig(train_voices=("en-us", "en+f3"), test_voices=("en+f3",))


def test_wav_with_a_placeholder_length_is_read_to_the_end():
    header = (b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00\x44\xac\x00\x00"
              b"\x02\x00\x10\x00data\x00\xf0\xff\x7f")
    samples, rate = parse_wav(header + np.array([0, 16384, -32768], dtype="<i2").tobytes())
    assert rate == 22050
    np.testing.assert_array_equal(samples, [0.0, 0.5, -1.0])


@pytest.mark.parametrize("colour", sorted(augment.NOISE_COLOURS))
def test_coloured_noise_has_unit_rms(colour):
    noise = augment.coloured_noise(16000, colour, np.random.default_rng(0))
    assert abs(augment.rms(noise) - 1.0) < 1e-3

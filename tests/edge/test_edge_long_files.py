"""Long recordings in enrolment and evaluation folders: bounded memory, a limit that names itself.

A clip file may be at most ``MAX_CLIP_FILE_S`` seconds; a longer one is refused from its header
before a sample is decoded (the folder readers skip it and say why), and a file within the limit
is decoded in blocks. The test recordings are written in chunks, as a recorder would, so the
test itself never holds a long file in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgetune.edge.audio.io import (MAX_CLIP_FILE_S, READ_BLOCK_FRAMES, AudioTooLongError, fit_clip, load_clip,
                                    read_audio)
from edgetune.errors import UsageError

RATE = 16000
CLIP = 16000


def _write_long_wav(path: Path, seconds: float, *, burst_at_s: float | None = None, seed: int = 0) -> Path:
    """Quiet noise for ``seconds`` (16 kHz PCM_16), written a minute at a time; with
    ``burst_at_s`` a loud half-second tone there (the clip a reader should find)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = int(seconds * RATE)
    burst = None if burst_at_s is None else int(burst_at_s * RATE)
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16") as out:
        for start in range(0, total, 60 * RATE):
            n = min(60 * RATE, total - start)
            chunk = (0.01 * rng.standard_normal(n)).astype(np.float32)
            if burst is not None and start <= burst < start + n:
                t = np.arange(min(RATE // 2, start + n - burst)) / RATE
                chunk[burst - start:burst - start + t.size] += 0.5 * np.sin(2 * np.pi * 440 * t)
            out.write(chunk)
    return path


@pytest.fixture(scope="module")
def twenty_minutes(tmp_path_factory) -> Path:
    return _write_long_wav(tmp_path_factory.mktemp("long") / "lecture.wav", 20 * 60)


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """The frame count of every block soundfile decodes during the test."""
    counted: list[int] = []
    original = sf.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        out = original(self, frames, *args, **kwargs)
        counted.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", read)
    return counted


def test_a_clip_file_over_the_limit_is_refused_from_its_header_without_decoding(twenty_minutes, reads):
    # Execute
    with pytest.raises(AudioTooLongError) as refused:
        load_clip(twenty_minutes, RATE, CLIP)
    # Assert: the message says how long the file is and what the limit is; nothing was decoded.
    assert f"1200.0 s long; a clip file may be at most {MAX_CLIP_FILE_S:g} s" in str(refused.value)
    assert str(twenty_minutes) in str(refused.value)
    assert sum(reads) == 0


def test_a_file_within_the_limit_gives_the_loudest_clip_decoded_in_blocks(tmp_path, reads):
    # Prepare: 50 s of quiet with a tone 31.2 s in, longer than one block.
    path = _write_long_wav(tmp_path / "take.wav", 50.0, burst_at_s=31.2)
    whole, _ = sf.read(str(path), dtype="float32")
    reads.clear()
    # Execute
    clip = load_clip(path, RATE, CLIP)
    # Assert: the same clip as the whole-file rule, found while reading block by block.
    np.testing.assert_array_equal(clip, fit_clip(whole, CLIP))
    assert clip.shape == (CLIP,) and np.abs(clip).max() > 0.4  # the tone is in it
    assert max(reads) <= READ_BLOCK_FRAMES and sum(reads) == whole.size and len(reads) > 1


def test_read_audio_takes_any_length_without_a_limit(tmp_path):
    path = _write_long_wav(tmp_path / "two-minutes.wav", 120.0)
    assert read_audio(path, RATE).shape == (120 * RATE,)
    with pytest.raises(AudioTooLongError, match="120.0 s long; a clip file may be at most 90 s"):
        read_audio(path, RATE, max_duration_s=90.0)


def test_the_folder_readers_skip_a_long_file_saying_why_and_read_the_rest(twenty_minutes, tmp_path, reads):
    from edgetune.edge.dataset import read_folder

    # Prepare: a label folder with two short takes and the twenty-minute recording.
    data = tmp_path / "data"
    for i in range(2):
        _write_long_wav(data / "yes" / f"yes_{i}.wav", 1.0, burst_at_s=0.2, seed=i)
    (data / "yes" / "lecture.wav").symlink_to(twenty_minutes)
    reads.clear()
    # Execute
    result = read_folder(data, RATE, CLIP)
    # Assert
    assert len(result) == 2 and result.clips.shape == (2, CLIP)
    (skipped,) = result.skipped
    assert skipped.path.endswith("lecture.wav") and f"at most {MAX_CLIP_FILE_S:g} s" in skipped.reason
    assert sum(reads) == 2 * RATE  # the two short files, and nothing of the long one


def test_enrolment_refuses_a_folder_of_more_files_than_it_holds_in_memory(tmp_path):
    from edgetune.edge.dataset import read_folder

    for i in range(4):
        _write_long_wav(tmp_path / "data" / "yes" / f"{i}.wav", 0.5, seed=i)
    with pytest.raises(UsageError, match="holds 4 audio files; enrolment reads at most 3"):
        read_folder(tmp_path / "data", RATE, CLIP, max_files=3)


def test_evaluation_embeds_the_short_files_and_lists_the_long_one(models, twenty_minutes, tmp_path):
    from edgetune.edge.dataset import embed_folder

    data = tmp_path / "data"
    for label in ("yes", "no"):
        _write_long_wav(data / label / "take.wav", 1.0, burst_at_s=0.3)
    (data / "no" / "lecture.wav").symlink_to(twenty_minutes)
    result = embed_folder(models, data)
    assert result.labels == ("no", "yes") and result.embeddings.shape[0] == 2
    assert [s.path for s in result.skipped] == [str(data / "no" / "lecture.wav")]
    assert "a clip file may be at most" in result.skipped[0].reason


"""The fuse stage: pairing the newest embedding of each stream within the window, never guessing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgetune.edge.pipeline.fuse import Pairing, PairedPreprocessor


def _drain(pairing: Pairing) -> list:
    return list(pairing)


def test_each_camera_frame_is_paired_with_the_newest_audio_at_or_before_it():
    p = Pairing(("audio", "image"), window_s=0.5)
    for t in (0.08, 0.16, 0.24, 0.32, 0.40, 0.48):
        p.post("audio", t, np.full(2, t, np.float32))
    p.post("image", 0.2, np.array([9.0], np.float32))
    p.post("image", 0.45, np.array([8.0], np.float32))
    p.finish("audio")
    p.finish("image")
    out = _drain(p)
    assert [x.offset_s for x in out] == [0.2, 0.45]
    np.testing.assert_allclose(out[0].embedding, [0.16, 0.16, 9.0], rtol=1e-6)  # audio first: fusion.inputs order
    np.testing.assert_allclose(out[1].embedding, [0.40, 0.40, 8.0], rtol=1e-6)


def test_a_stale_or_missing_modality_is_counted_and_not_guessed():
    p = Pairing(("audio", "image"), window_s=0.5)
    p.post("image", 0.1, np.ones(1, np.float32))          # no audio yet: missing
    p.post("audio", 0.3, np.ones(2, np.float32))
    p.post("image", 0.5, np.ones(1, np.float32))          # audio 0.2 s old: paired
    p.post("image", 1.5, np.ones(1, np.float32))          # audio 1.2 s old: stale, missing
    p.finish("audio")
    p.finish("image")
    out = _drain(p)
    assert [(x.offset_s, x.missing) for x in out] == [(0.1, ("audio",)), (0.5, ()), (1.5, ("audio",))]
    assert out[0].embedding is None and out[2].embedding is None
    assert p.counters == {"fusion_missing_audio": 2}
    pre = PairedPreprocessor(p)
    steps = [s for x in out for s in pre.push(x)]
    assert [s.failed for s in steps] == [True, False, True]
    assert pre.errors == {"fusion_missing_audio": 2}


def test_pairing_depends_on_stream_times_not_on_which_thread_runs_ahead():
    """The camera's thread posts all its frames before the microphone's thread starts: the pairs
    are those of the interleaved run, because a frame waits until the audio has passed it."""

    def run(camera_first: bool) -> list:
        p = Pairing(("audio", "image"), window_s=0.3)
        got = []
        consumer = threading.Thread(target=lambda: got.extend(p))
        consumer.start()

        def audio():
            for k in range(1, 40):
                p.post("audio", 0.08 * k, np.full(1, k, np.float32))
            p.finish("audio")

        def camera():
            for k in range(1, 15):
                p.post("image", 0.2 * k, np.full(1, -k, np.float32))
            p.finish("image")

        first, second = (camera, audio) if camera_first else (audio, camera)
        first()
        second()
        consumer.join(10)
        assert not consumer.is_alive()
        return [(x.offset_s, None if x.embedding is None else x.embedding.tolist()) for x in got]

    assert run(True) == run(False)
    assert len(run(True)) == 14


def test_close_ends_a_pairing_that_waits():
    p = Pairing(("audio", "image"), window_s=1.0)
    p.post("image", 1.0, np.ones(1, np.float32))  # waits for audio to pass 1.0 s
    got = []
    consumer = threading.Thread(target=lambda: got.extend(p))
    consumer.start()
    p.close()
    consumer.join(5)
    assert not consumer.is_alive() and got == []


def test_unknown_modalities_are_refused():
    with pytest.raises(ValueError, match="'radar' is not a fusion input"):
        Pairing(("audio", "image"), 1.0).tap("radar")

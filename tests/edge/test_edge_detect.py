"""The detector on crafted posterior sequences: one event per word, never the background."""

import numpy as np
import pytest

from edgetune.edge.audio.detect import Detector, DetectorSettings
from edgetune.errors import UsageError

LABELS = ("_background_", "yes", "no")
HOP_S = 0.1


def _posteriors(scores_yes, background=None):
    """[n, 3] posteriors: 'yes' as given, the rest on the background (or as given)."""
    out = []
    for i, s in enumerate(scores_yes):
        bg = (1.0 - s) if background is None else background[i]
        out.append(np.array([bg, s, max(0.0, 1.0 - s - bg)]))
    return out


def _run(detector, seq):
    return [d for i, p in enumerate(seq) if (d := detector.update(p, (i + 1) * HOP_S, latency_ms=1.5))]


def _detector(**kwargs):
    return Detector(LABELS, DetectorSettings(**kwargs), clip_s=1.0, background_label="_background_")


def test_one_word_long_burst_gives_one_event():
    # A word keeps the window high for 1.5 s, longer than the 1 s refractory period.
    seq = _posteriors([0.0] * 5 + [0.9] * 15 + [0.0] * 10)
    events = _run(_detector(smoothing_hops=3, threshold=0.5), seq)
    assert len(events) == 1
    assert events[0].label == "yes" and 0.5 <= events[0].score <= 1.0 and events[0].latency_ms == 1.5
    assert events[0].offset_s == pytest.approx(0.7)  # the third high hop lifts the 3-hop mean past 0.5


def test_two_words_apart_give_two_events():
    seq = _posteriors([0.9] * 5 + [0.0] * 15 + [0.9] * 5)
    events = _run(_detector(smoothing_hops=1, threshold=0.5), seq)
    assert [round(e.offset_s, 1) for e in events] == [0.1, 2.1]


def test_refractory_period_suppresses_a_second_burst_soon_after():
    seq = _posteriors([0.9] * 3 + [0.0] * 3 + [0.9] * 3)
    assert len(_run(_detector(smoothing_hops=1, threshold=0.5, refractory_s=1.0), seq)) == 1
    assert len(_run(_detector(smoothing_hops=1, threshold=0.5, refractory_s=0.2), seq)) == 2


def test_background_never_fires():
    seq = [np.array([0.99, 0.005, 0.005])] * 30
    assert _run(_detector(smoothing_hops=1, threshold=0.5), seq) == []


def test_smoothing_ignores_a_one_hop_spike():
    seq = _posteriors([0.0] * 5 + [0.95] + [0.0] * 5)
    assert _run(_detector(smoothing_hops=3, threshold=0.5), seq) == []
    assert len(_run(_detector(smoothing_hops=1, threshold=0.5), seq)) == 1


@pytest.mark.parametrize("kwargs, field", [({"threshold": 0.0}, "threshold"), ({"threshold": 1.5}, "threshold"),
                                           ({"smoothing_hops": 0}, "smoothing_hops"),
                                           ({"refractory_s": -1.0}, "refractory_s")])
def test_settings_name_the_bad_field(kwargs, field):
    with pytest.raises(UsageError, match=f"detector.{field}"):
        DetectorSettings(**kwargs)

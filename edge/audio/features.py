"""Front-end features over a sliding window, computed incrementally, one hop at a time.

The stream is the audio preceded by one clip of zeros (plus the look-back sample), so that a
full window exists from the start. Feature frame ``g`` starts at stream sample
``lookback + g * frame_hop_samples`` and reads ``frame_length_samples`` samples, plus the
``lookback`` samples before it (MFCC's pre-emphasis needs one; the speech_embedding mel none). Each hop of ``hop_samples`` new samples completes exactly
``hop_samples / frame_hop_samples`` new frames; only those are computed, from the
``lookback + frame_length + (r - 1) * frame_hop_samples`` samples they need, and appended to a ring of
``frames_per_clip`` frames. The ring then holds the features of the last clip, as the front-end
would compute them on that clip whole (to float rounding).

Because the front-end is called once per hop on a slice fixed by the hop count alone, the
features do not depend on how the input was chunked, to the last bit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgetune.errors import UsageError

from edgetune.contract.audio_spec import FrontendParams

#: float32 [1, N] PCM -> float32 [1, T, F] features
FrontendFn = Callable[[np.ndarray], np.ndarray]


def check_hop(hop_samples: int, params: FrontendParams, clip_samples: int) -> int:
    """``hop_samples`` if it is a positive multiple of ``frame_hop_samples`` and at most a clip."""
    fh = params.frame_hop_samples
    if not (isinstance(hop_samples, int) and hop_samples > 0 and hop_samples % fh == 0
            and hop_samples <= clip_samples):
        rate = params.sample_rate_hz
        example = max(fh, (rate // 10) // fh * fh)
        raise UsageError(f"hop_samples is {hop_samples!r}; expected a positive multiple of frame_hop_samples "
                         f"({fh} samples = {1000 * fh / rate:g} ms at {rate} Hz), at most clip_samples "
                         f"({clip_samples}); for example {example} ({1000 * example / rate:g} ms)")
    return hop_samples


class FeatureRing:
    """The last clip's features, float32 [frames_per_clip, n_features], advanced hop by hop."""

    def __init__(self, frontend: FrontendFn, params: FrontendParams, clip_samples: int, hop_samples: int) -> None:
        self.params = params
        self.hop_samples = check_hop(hop_samples, params, clip_samples)
        self.clip_samples = clip_samples
        lookback, fh = params.lookback_samples, params.frame_hop_samples
        self.frames_per_clip = params.n_frames(clip_samples + lookback)
        self._frontend = frontend
        self._new_frames = hop_samples // fh  # frames each hop completes
        self._need = lookback + params.frame_length_samples + (self._new_frames - 1) * fh  # samples they read
        history = np.zeros(lookback + clip_samples, dtype=np.float32)
        #: features of one clip of zeros: the ring's start, and the stand-in for a failed hop
        self.silence = self._run(history[None, :], self.frames_per_clip)
        self._ring = self.silence.copy()
        self._buf = history  # stream samples from index self._buf_start on
        self._buf_start = 0
        self._next_frame = self.frames_per_clip  # index of the next frame to compute
        self.hops = 0

    def _run(self, pcm: np.ndarray, n_frames: int) -> np.ndarray:
        out = np.asarray(self._frontend(pcm))[0]
        if out.shape != (n_frames, self.params.n_features):
            raise ValueError(f"front-end gave features {out.shape}; expected [{n_frames}, {self.params.n_features}]")
        return out

    def window(self) -> np.ndarray:
        """The current window's features, float32 [frames_per_clip, n_features] (a view; copy to keep)."""
        return self._ring

    def advance(self, hop: np.ndarray) -> np.ndarray:
        """Append ``hop`` (float32 [hop_samples]) and return the new window.

        If the front-end fails, the hop's frames become silence frames (keeping the ring aligned)
        and the exception propagates for the caller to count.
        """
        hop = np.asarray(hop, dtype=np.float32)
        if hop.shape != (self.hop_samples,):
            raise ValueError(f"hop has shape {hop.shape}; expected [{self.hop_samples}]")
        fh = self.params.frame_hop_samples
        self._buf = np.concatenate([self._buf, hop])
        start = self._next_frame * fh - self._buf_start  # first sample the new frames read (look-back)
        pcm = self._buf[start:start + self._need]
        self._next_frame += self._new_frames
        self.hops += 1
        drop = self._next_frame * fh - self._buf_start
        self._buf = self._buf[drop:]
        self._buf_start += drop
        try:
            new = self._run(pcm[None, :], self._new_frames)
        except Exception:
            self._append(self.silence[-self._new_frames:])
            raise
        self._append(new)
        return self._ring

    def _append(self, frames: np.ndarray) -> None:
        self._ring = np.concatenate([self._ring, frames])[-self.frames_per_clip:]

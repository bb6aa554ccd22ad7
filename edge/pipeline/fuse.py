"""The fuse stage: pairs the newest embedding of each modality's stream for the fused heads.

Each modality's pipeline hands every embedding it computes to :meth:`Pairing.tap` (the loop calls
a pipeline's taps after its embedder). The fused heads run in a pipeline of their own whose
source is the :class:`Pairing`: one fused step per step of the *driver* modality (the camera
when there is one: a frame is the natural unit for "what is in view and what is being said"),
at the driver's stream time ``t``, with each other modality's newest embedding at or before
``t``. A modality whose newest embedding is older than ``window_s`` (or that has none yet) is
*missing* for that step: the fused heads are not run on a guess, the step is counted under
``fusion_missing_<modality>``.

Streams run in their own threads at their own pace (two files are read as fast as each
pipeline goes), so a driver step waits until every other stream has passed ``t`` (or ended):
the pairing depends on stream times only, not on which thread ran ahead, and a recorded pair of
files gives the same fused steps on every run.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .stages import Step

#: Driver steps waiting for the other streams; beyond this the oldest are dropped (counted).
MAX_PENDING = 4096
#: Embeddings kept per other stream (a camera that is gone for hours must not grow memory).
MAX_HISTORY = 4096


@dataclass(frozen=True, eq=False)
class Paired:
    """A fused input at stream time ``offset_s``: the inputs' embeddings side by side (``None``
    when one was missing: then ``missing`` names it)."""

    offset_s: float
    embedding: np.ndarray | None
    missing: tuple[str, ...] = ()


class Pairing:
    """The fused pipeline's source: feed it with :meth:`tap`, end each stream with :meth:`finish`."""

    def __init__(self, inputs: Sequence[str], window_s: float, driver: str | None = None) -> None:
        self.inputs = tuple(inputs)
        self.window_s = float(window_s)
        self.driver = driver if driver is not None else ("image" if "image" in self.inputs else self.inputs[0])
        if self.driver not in self.inputs:
            raise ValueError(f"fusion driver {self.driver!r} is not one of the inputs {list(self.inputs)}")
        self.others = tuple(m for m in self.inputs if m != self.driver)
        self.uri = f"fusion:{'+'.join(self.inputs)}"
        self._cond = threading.Condition()
        self._history: dict[str, deque[tuple[float, np.ndarray]]] = {m: deque() for m in self.others}
        self._position = {m: -np.inf for m in self.inputs}
        self._finished: set[str] = set()
        self._pending: deque[tuple[float, np.ndarray]] = deque()
        self._closed = False
        self.counters: dict[str, int] = {}

    # -- producers (modality threads) ------------------------------------------------------------

    def tap(self, modality: str):
        """The callback a modality's pipeline calls with (step, embedding)."""
        if modality not in self.inputs:
            raise ValueError(f"{modality!r} is not a fusion input; inputs are {list(self.inputs)}")

        def tap(step: Step, embedding: np.ndarray) -> None:
            self.post(modality, step.offset_s, embedding)

        return tap

    def post(self, modality: str, offset_s: float, embedding: np.ndarray) -> None:
        emb = np.asarray(embedding, dtype=np.float32).reshape(-1)
        with self._cond:
            self._position[modality] = max(self._position[modality], offset_s)
            if modality == self.driver:
                if len(self._pending) >= MAX_PENDING:
                    self._pending.popleft()
                    self._count("fusion_dropped_steps")
                self._pending.append((offset_s, emb))
            else:
                history = self._history[modality]
                history.append((offset_s, emb))
                if len(history) > MAX_HISTORY:
                    history.popleft()
            self._cond.notify_all()

    def finish(self, modality: str) -> None:
        """``modality``'s stream ended: nothing newer will come from it."""
        with self._cond:
            self._finished.add(modality)
            self._cond.notify_all()

    def close(self) -> None:
        """End iteration now (the daemon stops)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the consumer (the fused pipeline's loop) -------------------------------------------------

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _ready(self) -> bool:
        if not self._pending:
            return False
        t = self._pending[0][0]
        return all(self._position[m] >= t or m in self._finished for m in self.others)

    def _done(self) -> bool:
        return self._closed or (not self._pending and self.driver in self._finished)

    def _pair(self, t: float, driver_emb: np.ndarray) -> Paired:
        parts: dict[str, np.ndarray] = {self.driver: driver_emb}
        missing = []
        for m in self.others:
            history = self._history[m]
            times = [x[0] for x in history]
            i = bisect.bisect_right(times, t + 1e-9) - 1
            if i < 0 or t - times[i] > self.window_s + 1e-9:
                missing.append(m)
            else:
                parts[m] = history[i][1]
            # Keep only what a later driver step (time >= t) can still use.
            while len(history) > 1 and history[1][0] <= t + 1e-9:
                history.popleft()
        if missing:
            for m in missing:
                self._count(f"fusion_missing_{m}")
            return Paired(t, None, tuple(missing))
        return Paired(t, np.concatenate([parts[m] for m in self.inputs]))

    def __iter__(self) -> Iterator[Paired]:
        while True:
            with self._cond:
                while not (self._ready() or self._done()):
                    self._cond.wait(timeout=1.0)
                if self._closed or not self._pending:
                    return
                t, emb = self._pending.popleft()
                paired = self._pair(t, emb)
            yield paired


class PairedPreprocessor:
    """The fused pipeline's preprocessing: a :class:`Paired` is one step; a missing modality
    makes a failed step (counted by the :class:`Pairing`, whose counters it reports)."""

    def __init__(self, pairing: Pairing) -> None:
        self.pairing = pairing
        self._index = 0
        self._position_s = 0.0

    @property
    def errors(self) -> dict[str, int]:
        return dict(self.pairing.counters)

    @property
    def position_s(self) -> float:
        return self._position_s

    def push(self, paired: Paired) -> Iterator[Step]:
        self._index += 1
        self._position_s = max(self._position_s, paired.offset_s)
        yield Step(self._index, paired.offset_s, paired.embedding, failed=paired.embedding is None)

    def flush(self) -> Iterator[Step]:
        return iter(())


class PassEmbedder:
    """The fused pipeline's embedder: the paired embeddings are the input already."""

    def __call__(self, step: Step) -> np.ndarray:
        return step.data

    def skip(self, step: Step) -> None:
        """Nothing to keep aligned."""

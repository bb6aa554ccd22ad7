"""What each stage of a pipeline must do, and the records that pass between them.

A pipeline (:class:`Pipeline`) is one modality's stages over one source:

- **source**: iterable of chunks (audio: float32 samples; camera: frames), with ``uri``,
  ``close()`` (ends a live source from another thread) and optional ``stats.errors()``.
- **preprocess** (:class:`Preprocessor`): chunks of any size in, :class:`Step` records out, one per
  unit of inference (an audio hop, a camera frame), with the stream time it ends at. The result
  must not depend on how the input was chunked.
- **embed** (:class:`Embedder`): a step to the embedding the heads read, float32 [D].
- **fuse** (optional, :mod:`.fuse`): the pipeline's *taps* get each embedding; a fused pipeline
  pairs those of several modalities for its heads.
- **heads**: :class:`~.heads.HeadSet`, every named head of the pipeline's modality.
- **postprocess** (:class:`Postprocessor`, one per head): per-step posteriors to events.

The loop (:mod:`.loop`) calls them in that order, times each step, and counts failures: a stage
that fails on one step reports it (``Step.failed``, or an exception from ``embed``) and the stream
goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from .heads import HeadSet


@dataclass(frozen=True, eq=False)
class Step:
    """One unit of inference: step ``index`` (1-based) ends ``offset_s`` seconds into the stream.

    ``data`` is what the preprocessor prepared for the embedder (audio: the feature window);
    ``failed`` is true when preprocessing this step failed (the step is counted, not embedded).
    """

    index: int
    offset_s: float
    data: Any = None
    failed: bool = False


@dataclass(frozen=True)
class Detection:
    """One event: ``label`` scored ``score`` (smoothed posterior, 0..1) at ``offset_s`` seconds into
    the stream; ``latency_ms`` is that step's inference time."""

    label: str
    score: float
    offset_s: float
    latency_ms: float


class Preprocessor(Protocol):
    """Chunks -> steps. ``errors`` counts its own failures by name."""

    errors: dict[str, int]

    def push(self, chunk: np.ndarray) -> Iterator[Step]: ...

    def flush(self) -> Iterator[Step]: ...

    @property
    def position_s(self) -> float: ...


class Embedder(Protocol):
    """A step -> the embedding float32 [D] its heads read. Raises on failure (the loop counts it);
    ``skip`` is called instead for a step that failed upstream (a stateful embedder keeps aligned)."""

    def __call__(self, step: Step) -> np.ndarray: ...

    def skip(self, step: Step) -> None: ...


class Postprocessor(Protocol):
    """One head's posteriors per step -> an event or ``None``."""

    def update(self, posteriors: np.ndarray, offset_s: float, latency_ms: float = 0.0) -> Detection | None: ...


@dataclass(eq=False)
class Pipeline:
    """One modality's stages over one source.

    name: the pipeline's name in telemetry (``audio``, ``camera``, ...). modality: ``audio`` or
    ``image``. postprocessor: makes the postprocessor of a head from its labels (called again
    when a head swap changes them). provider: the execution provider its embedder runs on.
    bundle_id, bundle_version: the bundle it runs.
    """

    name: str
    modality: str
    source: Iterable[np.ndarray]
    preprocess: Preprocessor
    embed: Embedder
    heads: HeadSet
    postprocessor: Callable[[str, Sequence[str]], Postprocessor]
    provider: str
    bundle_id: str
    bundle_version: str
    info: dict[str, Any] = field(default_factory=dict)
    #: Called with (step, embedding) after each embedding, before the heads: the fuse stage
    #: (:mod:`.fuse`) pairs the modalities' embeddings this way.
    taps: list[Callable[[Step, np.ndarray], None]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return str(getattr(self.source, "uri", "<chunks>"))

    def describe(self) -> dict[str, Any]:
        """The status message's entry for this pipeline."""
        return {"name": self.name, "modality": self.modality, "source": self.uri[:512], "bundle_id": self.bundle_id,
                "bundle_version": self.bundle_version, "provider": self.provider,
                "heads": {name: version for name, version in self.heads.versions().items()}}

"""Embeddings of a folder of labelled audio files: the input of enrolment and evaluation.

Every file is read as one clip (:func:`~edgetune.edge.audio.io.load_clip`) and embedded with the
bundle's front-end and embedder on the whole clip, in batches. A file that cannot be used is
skipped and reported by name; it never stops the rest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from edgetune.errors import UsageError

from .audio.io import AudioFileError, SkippedFile, iter_labelled_folder, load_clip
from .audio.models import DEFAULT_BATCH, AudioModels

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FolderEmbeddings:
    """``embeddings`` float32 [N, D] of the readable files, their ``labels`` and ``paths`` (N
    each), and the files ``skipped`` with the reason."""

    embeddings: np.ndarray
    labels: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]

    def __len__(self) -> int:
        return len(self.labels)


def embed_folder(models: AudioModels, data_dir: str | os.PathLike[str], *,
                 batch_size: int = DEFAULT_BATCH) -> FolderEmbeddings:
    """Embed every audio file under ``data_dir/<label>/``.

    Raises :class:`UsageError` when the folder holds no readable audio file at all.
    """
    listing = iter_labelled_folder(data_dir)
    skipped = list(listing.skipped)
    parts: list[np.ndarray] = []
    labels: list[str] = []
    paths: list[str] = []
    clips: list[np.ndarray] = []

    def flush() -> None:
        if clips:
            parts.append(models.embed_clips(np.stack(clips), batch_size=batch_size))
            clips.clear()

    for label, path in listing:
        try:
            clip = load_clip(path, models.rate_hz, models.clip_samples)
        except AudioFileError as exc:
            log.warning("skipping %s", exc)
            skipped.append(SkippedFile(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        clips.append(clip)
        labels.append(label)
        paths.append(str(path))
        if len(clips) >= batch_size:
            flush()
    flush()
    if not labels:
        first = next(s for s in skipped if s.path in {str(p) for _, p in listing})
        raise UsageError(f"data folder {listing.root}: none of its {len(listing)} audio files could be read; "
                         f"the first: {first.path}: {first.reason}")
    embeddings = np.concatenate(parts) if parts else np.zeros((0, models.embedding_size), np.float32)
    return FolderEmbeddings(embeddings, tuple(labels), tuple(paths), tuple(skipped))

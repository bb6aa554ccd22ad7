"""Photos from disk: one decoder (OpenCV) for the device's enrolment and evaluation and the
exporter's training, so both see the same pixels.

:func:`read_image` returns uint8 RGB [H, W, 3] (grey and RGBA photos are converted; 16-bit ones
scaled); :func:`iter_image_folder` lists ``DIR/<label>/*.{png,jpg,...}``; a file that cannot be
decoded raises :class:`ImageFileError` naming it, and folder readers skip it with that reason.
Large photos are refused above :data:`MAX_PIXELS` (a decompression bomb must not eat the memory).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgetune.errors import UsageError

from ..audio.io import SkippedFile

log = logging.getLogger(__name__)

#: Photo suffixes read from a labelled folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Largest photo read (pixels); a 50-megapixel phone photo fits.
MAX_PIXELS = 64_000_000
#: Largest photo file read (bytes).
MAX_BYTES = 200 * 1024 * 1024


class ImageFileError(ValueError):
    """A photo that cannot be used; the message names the file and the problem."""


def import_cv2() -> Any:
    """OpenCV, or a :class:`UsageError` that says how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise UsageError(f"reading photos and cameras needs OpenCV ({exc}); install it with "
                         "`pip install 'edgetune[camera]'` (opencv-python-headless)") from None
    return cv2


def to_rgb(array: np.ndarray, where: str) -> np.ndarray:
    """An OpenCV-decoded image (BGR, BGRA, grey; 8 or 16 bit) as uint8 RGB [H, W, 3]."""
    cv2 = import_cv2()
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ImageFileError(f"{where}: pixels are {array.dtype}; expected 8- or 16-bit images")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    raise ImageFileError(f"{where}: decoded shape {list(array.shape)}; expected a grey, RGB or RGBA image")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The photo at ``path`` as uint8 RGB [H, W, 3]; :class:`ImageFileError` when it cannot be."""
    cv2 = import_cv2()
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageFileError(f"{path}: {size} bytes; photos up to {MAX_BYTES} bytes are read")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    header = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8) if data.size else None
    if header is not None and header.size * 64 > MAX_PIXELS:
        raise ImageFileError(f"{path}: about {header.size * 64} pixels; photos up to {MAX_PIXELS} are read")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.size == 0:
        raise ImageFileError(f"{path}: not a photo OpenCV can decode (PNG, JPEG, BMP, WebP, TIFF)")
    return to_rgb(image, str(path))


@dataclass(frozen=True)
class LabelledImages:
    """Photos of a folder-per-label tree: ``items`` (label, path) pairs in sorted order, ``skipped``."""

    root: Path
    items: tuple[tuple[str, Path], ...]
    skipped: tuple[SkippedFile, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({label for label, _ in self.items}))

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        return iter(self.items)


def iter_image_folder(data_dir: str | os.PathLike[str]) -> LabelledImages:
    """Photos under ``data_dir/<label>/`` (searched recursively), sorted; other files listed as skipped."""
    root = Path(data_dir)
    expected = "DIR/<label>/<photo>.jpg (or .png), one subfolder per label"
    if not root.is_dir():
        raise UsageError(f"data folder {root} does not exist or is not a folder; expected {expected}")
    items: list[tuple[str, Path]] = []
    skipped: list[SkippedFile] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() != ".csv":
                skipped.append(SkippedFile(str(entry), "not inside a label folder"))
            continue
        for path in sorted(entry.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(entry).parts) or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((entry.name, path))
            else:
                skipped.append(SkippedFile(str(path), f"not a photo (suffix {path.suffix or 'none'!r})"))
    if not items:
        raise UsageError(f"data folder {root} holds no photos in label folders; expected {expected}")
    for s in skipped:
        log.warning("skipping %s: %s", s.path, s.reason)
    return LabelledImages(root=root, items=tuple(items), skipped=tuple(skipped))


@dataclass(frozen=True)
class ImageFolder:
    """Decoded photos of a labelled folder: ``frames`` (uint8 RGB), ``labels`` (names), ``paths``, ``skipped``."""

    frames: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]


def decode_photos(listed: LabelledImages) -> ImageFolder:
    """Decode every photo ``listed``; undecodable ones join ``skipped`` with their reason."""
    frames, labels, paths, skipped = [], [], [], list(listed.skipped)
    for label, path in listed:
        try:
            frames.append(read_image(path))
        except ImageFileError as exc:
            skipped.append(SkippedFile(str(path), str(exc).replace(f"{path}: ", "", 1)))
            log.warning("skipping %s", exc)
            continue
        labels.append(label)
        paths.append(str(path))
    return ImageFolder(tuple(frames), tuple(labels), tuple(paths), tuple(skipped))


def read_image_folder(data_dir: str | os.PathLike[str]) -> ImageFolder:
    """Every photo of ``DIR/<label>/``; undecodable ones skipped with their reason."""
    photos = decode_photos(iter_image_folder(data_dir))
    if not photos.frames:
        skipped = photos.skipped
        raise UsageError(f"no usable photos in {data_dir}: {len(skipped)} files skipped"
                         + (f" (first: {skipped[0].path}: {skipped[0].reason})" if skipped else ""))
    return photos

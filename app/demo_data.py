"""The demo's on-site data: what a user would record at the device, made with espeak-ng.

- an *enrolment* folder: a few clips per new keyword (and background) from the "site" voices,
  which the device fine-tunes its head on;
- an *evaluation* folder: the source model's held-out-voice test clips plus the new keywords
  spoken by the same held-out voices, to measure accuracy before and after fine-tuning;
- a *stream*: one WAV of held-out clips in a row, with a list of what was said where, for the
  device's streaming loop.

Every folder has one subfolder of 16-bit WAV files per label, the layout of a user's own data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.edge.audio.io import import_soundfile
from edgetune.contract.tensors import BACKGROUND_LABEL

#: Words the source model never heard; the device learns them on site.
NEW_WORDS = ("marvin", "sheila", "robot")
#: The people at the site who record the enrolment clips (voices also used for the source
#: model's other words, never the held-out test voices).
SITE_VOICES = ("en-us", "en-gb", "en+f3", "en+m3")


@dataclass(frozen=True)
class StreamTruth:
    """One clip placed in the demo stream: its label and where it starts, in seconds."""

    label: str
    start_s: float


def write_site_data(out_dir: Path, test_voices: tuple[str, ...], *, seed: int = 0,
                    progress: bool = False) -> Path:
    """Synthesise the new keywords into ``out_dir`` (train = site voices, test = ``test_voices``).

    Returns ``out_dir``; its ``train/`` is the enrolment folder and ``test/`` holds the new
    keywords and background spoken by the held-out voices.
    """
    from edgetune.export.data.speech import SpeechDataConfig, write_dataset_folder

    config = SpeechDataConfig(words=NEW_WORDS, train_voices=SITE_VOICES, val_voices=("en-029",),
                              test_voices=test_voices, renderings_per_voice=2, train_copies=1,
                              background_ratio=1.0, seed=seed + 1)
    write_dataset_folder(out_dir, config, progress=progress)
    return out_dir


def merge_label_folders(out_dir: Path, *sources: Path) -> Path:
    """Copy several folder-per-label trees into one (``<source index>_<name>`` avoids clashes)."""
    for i, source in enumerate(sources):
        for label_dir in sorted(p for p in source.iterdir() if p.is_dir()):
            target = out_dir / label_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(label_dir.iterdir()):
                if f.is_file():
                    shutil.copy2(f, target / f"{i}_{f.name}")
    return out_dir


def write_stream(eval_dir: Path, out_wav: Path, *, per_label: int = 2, gap_s: float = 0.5,
                 seed: int = 0, rate_hz: int = 16000) -> list[StreamTruth]:
    """Concatenate ``per_label`` evaluation clips of every keyword (and some background) into one WAV.

    Clips are shuffled and separated by ``gap_s`` seconds of quiet noise, the way words come in a
    live microphone. Writes ``out_wav`` and ``out_wav.with_suffix('.json')`` (the truth), returns
    the truth.
    """
    sf = import_soundfile()
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, Path]] = []
    for label_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
        files = sorted(label_dir.glob("*.wav"))
        for i in rng.permutation(len(files))[:per_label]:
            chosen.append((label_dir.name, files[i]))
    order = rng.permutation(len(chosen))
    gap = (rng.standard_normal(int(gap_s * rate_hz)) * 1e-3).astype(np.float32)
    pieces, truth, t = [gap], [], gap_s
    for i in order:
        label, path = chosen[i]
        clip, rate = sf.read(str(path), dtype="float32")
        if rate != rate_hz:
            raise ValueError(f"{path}: {rate} Hz; expected {rate_hz}")
        pieces += [clip, gap]
        truth.append(StreamTruth(label, t))
        t += (len(clip) + len(gap)) / rate_hz
    sf.write(str(out_wav), np.concatenate(pieces), rate_hz, subtype="PCM_16")
    out_wav.with_suffix(".json").write_text(json.dumps([t.__dict__ for t in truth], indent=1) + "\n")
    return truth


def score_stream(truth: list[StreamTruth], detections: list[tuple[str, float]], clip_s: float) -> dict[str, int]:
    """Match detections (label, offset_s) to spoken keywords.

    A detection is a hit when a keyword with its label was spoken in the clip that ends at most
    ``clip_s`` seconds before it (the detector fires once the word is in its window). Returns
    counts of keywords spoken, hits, misses, wrong labels and detections with no word nearby.
    """
    keywords = [t for t in truth if t.label != BACKGROUND_LABEL]
    matched: set[int] = set()
    hits = wrong = spurious = 0
    for label, offset_s in detections:
        near = [i for i, t in enumerate(keywords) if t.start_s <= offset_s <= t.start_s + 2 * clip_s and i not in matched]
        same = [i for i in near if keywords[i].label == label]
        if same:
            matched.add(same[0])
            hits += 1
        elif near:
            wrong += 1
        else:
            spurious += 1
    return {"keywords": len(keywords), "hits": hits, "missed": len(keywords) - hits, "wrong_label": wrong,
            "spurious": spurious}

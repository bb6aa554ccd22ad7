"""Synthesised speech in, a real voice out: the exporter's own path, tested on the one real voice we have.

Debian's ``alsa-utils`` ships eight clips of one human voice saying "front center", "front left",
... "side right" (``/usr/share/sounds/alsa``). This script writes a folder per label the way a
user would -- ``train/`` and ``val/`` from espeak-ng voices (the study's renderings: each voice with
its own speed and pitch, takes jittered, levels, places and background noise drawn per take), and
``test/`` the eight real clips as shipped (48 kHz; the exporter resamples) -- then runs
``export train --data DIR`` (:func:`~edgetune.export.transfer.train_transfer_bundle`), whose test
accuracy is therefore on the real voice, beside the baselines trained on the same synthetic
split. Eight clips: one clip is 12.5 points; read it as a smoke test of the real-speech path, not
as a figure about speakers.

    python benchmarks/real_speech_alsa.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info  # noqa: E402
from study_enrollment import ALSA_DIR, PHRASES, PHRASE_CLIP_S, make_takes  # noqa: E402

from edgetune.export.data import speech  # noqa: E402

TAKES_PER_VOICE = 2


def write_folder(root: Path) -> dict[str, int]:
    """DIR/{train,val}/<label>/*.wav from espeak-ng, DIR/test/<label>/<stem>.wav the real clips."""
    import soundfile as sf

    counts = {}
    for split, voices, salt in (("train", speech.TRAIN_VOICES, 1), ("val", speech.VAL_VOICES, 2)):
        takes = make_takes(list(PHRASES.values()), list(voices), {v: TAKES_PER_VOICE for v in voices},
                           PHRASE_CLIP_S, salt)
        for i, (clip, phrase, voice) in enumerate(zip(takes.audio, takes.labels, takes.voices)):
            folder = root / split / phrase.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            tag = "".join(c if c.isalnum() else "_" for c in voice)
            sf.write(str(folder / f"{i:04d}_{tag}.wav"), clip, 16000, subtype="PCM_16")
        counts[split] = len(takes.labels)
    for stem, phrase in PHRASES.items():
        folder = root / "test" / phrase.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ALSA_DIR / f"{stem}.wav", folder / f"{stem}.wav")
    counts["test"] = len(PHRASES)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="write the folder and the bundle here and keep them")
    args = parser.parse_args()
    if not ALSA_DIR.is_dir():
        print(f"{ALSA_DIR} is missing: apt-get install alsa-utils", file=sys.stderr)
        return 2
    from edgetune.export.transfer import TransferConfig, train_transfer_bundle

    print(machine_info())
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edgetune-alsa-"))
    try:
        t0 = time.perf_counter()
        counts = write_folder(work / "data")
        result = train_transfer_bundle(work / "bundle", TransferConfig(bundle_id="alsa-phrases"), progress=False,
                                       data_dir=work / "data", overwrite=True)
        m = result.metrics
        print(f"folder: {counts} clips (train/val: espeak-ng voices; test: the real alsa-utils voice)")
        print(f"edgetune export train --data DIR (speech_embedding + linear head, L2 {m['l2']:g}): "
              f"real voice {m['test']['accuracy']:.3f} (n={m['test']['n']})")
        for name, base in m.get("baselines", {}).items():
            print(f"  baseline {name}: {base['accuracy']:.3f} (same synthetic training split)")
        print("  validation accuracy by L2 (synthetic voices): "
              + json.dumps({k: round(v, 3) for k, v in m["val_accuracy_by_l2"].items()}))
        print(f"  per class on the real voice: {json.dumps({k: round(v, 2) for k, v in m['test']['per_class_accuracy'].items()})}")
        print(f"wall time {time.perf_counter() - t0:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

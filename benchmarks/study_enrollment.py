"""Study: how to enrol words on the device from a few clips with the ``speech_embedding`` backbone.

Run: ``.venv/bin/python benchmarks/study_enrollment.py`` (about 5 minutes on 2 cores, 3 with
``--quick``, which runs fewer repeats; needs espeak-ng, the ``openwakeword==0.4.0`` wheel for its
two ONNX graphs, soxr, soundfile, and alsa-utils' sample clips for scenario C). Writes nothing
but espeak-ng's own cache (``export/data/speech.py``: ``~/.cache/edgetune/espeak``).

What it compares, all on one frozen backbone (openWakeWord 0.4.0's ``melspectrogram.onnx`` +
``embedding_model.onnx``, Google's ``speech_embedding``; embeddings computed with openWakeWord's
own ``AudioFeatures._get_embeddings``: one 96-d vector per 76 mel frames, stepped by 8 frames,
so a 1.5 s clip gives 9, a 2 s clip 13) and one head (``edge.head.fit_head``, multinomial
logistic regression, class-balanced):

- the head's input (``edge.audio.pooling``): the clip's embedding sequence [E, 96] pooled (mean,
  max, mean+max, mean+std, 2 or 3 time segments, flattened) for both fit and inference; or
  ``win>mean``: the fit on every window as a sample (``window_samples``), inference on the mean
  (for a linear head, the mean of the windows' logits), so the device's inference stays plain
  mean pooling;
- augmentation of the enrolment clips (``edge.audio.augment.augment_clips``): none, each kind
  alone (gain, noise, shift, speed), all together, with n copies per clip;
- the L2 strength: constants, or chosen by grouped cross-validation on the enrolment data
  (``edge.head_select.select_l2``): ``cv-clip`` groups by source take (an augmented copy never
  validates its own original), ``cv-voice`` by voice (leave-voices-out).

Scenarios (the stand-in for speakers is espeak-ng voices: robotic, and no claim on real speech
follows from A and B):

- A: the digits "zero".."nine", 5 takes per digit from ONE voice (takes differ in speed and
  pitch around the voice's own), tested on every other voice (2 takes per digit each).
- B: 2 takes per digit from each of 4 voices, tested on every other voice.
- C: REAL speech: alsa-utils' 8 clips (``/usr/share/sounds/alsa/Front_Center.wav`` ...; one real
  human voice, 48 kHz) as an 8-class phrase task; the head is trained on espeak-ng renderings of
  the phrases ("front center", ...) by 26 voices only. n = 8 real clips (C40: the same 8 placed
  at 5 offsets in the window, 40 views, not independent).

Every espeak-ng take is "recorded": random peak level, random place in the clip, background
noise (white / pink / brown) at a random SNR, so no two takes are alike even at one setting.
Repeats: A over 6 enrolment voices, B over 3 sets of 4 voices, C over 3 sets of training voices;
the tables give mean and min accuracy over the repeats, and n (test clips per repeat). The last
table times the device's side of an enrolment (augment, embed the copies, fit) on this CPU.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # BLAS on one thread: the fits are small, threads only contend

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _machine import machine_info  # noqa: E402

from edgetune.edge.audio.augment import KINDS as AUG_KINDS, augment_clips  # noqa: E402
from edgetune.edge.audio.pooling import KINDS as POOL_KINDS, pool, window_samples  # noqa: E402
from edgetune.edge.head import DEFAULT_L2, fit_head, predict_proba  # noqa: E402
from edgetune.edge.head_select import DEFAULT_L2_GRID, select_l2  # noqa: E402
from edgetune.export.data import speech  # noqa: E402

RATE = 16000
DIGIT_CLIP_S = 1.5  # -> 9 embeddings per clip
PHRASE_CLIP_S = 2.0  # the real clips are 1.3-1.5 s -> 13 embeddings
ALSA_DIR = Path("/usr/share/sounds/alsa")
PHRASES = {"Front_Center": "front center", "Front_Left": "front left", "Front_Right": "front right",
           "Rear_Center": "rear center", "Rear_Left": "rear left", "Rear_Right": "rear right",
           "Side_Left": "side left", "Side_Right": "side right"}
#: espeak-ng voices checked to sound distinct (see export/data/speech.py): 39.
VOICES = speech.TRAIN_VOICES + speech.VAL_VOICES + speech.TEST_VOICES
#: A "recording": word peak level (dBFS), background noise SNR against the word (dB).
PEAK_DBFS = (-25.0, -3.0)
RECORD_SNR_DB = (15.0, 40.0)
EDGE_MARGIN_S = 0.05
#: A voice's own speed (wpm) and pitch, and how far one take strays from them.
VOICE_SPEED_WPM = (145, 195)
VOICE_PITCH = (30, 70)
TAKE_SPEED_JITTER = 20
TAKE_PITCH_JITTER = 8
CONST_L2 = (DEFAULT_L2, 1e-1, 1.0, 3.0)
C_VOICES = 26  # training voices per repeat in C
COPIES = 4  # augmented copies per enrolment clip in the main table
SEED = 20261201


# ----------------------------------------------------------------------------------------------
# data


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    slope_db = float(rng.choice([0.0, -3.0, -6.0]))  # white, pink, brown
    x = rng.standard_normal(n)
    if slope_db:
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        spec *= f ** (slope_db / (20 * np.log10(2)))
        x = np.fft.irfft(spec, n=n)
    return x / np.sqrt(np.mean(x ** 2))


def record(word: np.ndarray, clip_samples: int, rng: np.random.Generator, *, noise: bool = True,
           offset_frac: float | None = None) -> np.ndarray:
    """``word`` as a take: random peak level, random place in the clip, background noise."""
    peak = float(np.max(np.abs(word))) or 1.0
    w = word / peak * 10 ** (rng.uniform(*PEAK_DBFS) / 20)
    margin = int(EDGE_MARGIN_S * RATE)
    room = clip_samples - 2 * margin - w.size
    if room < 0:  # longer than the clip: keep the middle
        cut = (w.size - (clip_samples - 2 * margin)) // 2
        w, room = w[cut:cut + clip_samples - 2 * margin], 0
    frac = rng.uniform() if offset_frac is None else offset_frac
    start = margin + int(round(frac * room))
    out = np.zeros(clip_samples)
    out[start:start + w.size] = w
    if noise:
        level = np.sqrt(np.mean(w ** 2))
        out += _noise(clip_samples, rng) * level * 10 ** (-rng.uniform(*RECORD_SNR_DB) / 20)
    return np.clip(out, -1, 1).astype(np.float32)


@dataclass
class Takes:
    """Recorded takes: audio [N, S], label names, voice of each, take index within (voice, word)."""

    audio: np.ndarray
    labels: list[str]
    voices: list[str]
    take: np.ndarray
    seq: np.ndarray | None = None  # embedding sequences [N, E, 96]

    def subset(self, mask: np.ndarray) -> "Takes":
        idx = np.flatnonzero(mask)
        return Takes(self.audio[idx], [self.labels[i] for i in idx], [self.voices[i] for i in idx],
                     self.take[idx], None if self.seq is None else self.seq[idx])


def make_takes(words: list[str], voices: list[str], takes_of: dict[str, int], clip_s: float,
               salt: int) -> Takes:
    """Each voice speaks each word ``takes_of[voice]`` times (own speed/pitch, jittered per take)."""
    s = int(round(clip_s * RATE))
    audio, labels, vs, take = [], [], [], []
    jobs = []
    for voice in voices:
        vr = np.random.default_rng([SEED, salt, VOICES.index(voice)])
        speed0, pitch0 = vr.integers(*VOICE_SPEED_WPM), vr.integers(*VOICE_PITCH)
        for wi, word in enumerate(words):
            for t in range(takes_of[voice]):
                tr = np.random.default_rng([SEED, salt, VOICES.index(voice), wi, t])
                speed = int(np.clip(speed0 + tr.integers(-TAKE_SPEED_JITTER, TAKE_SPEED_JITTER + 1), 80, 450))
                pitch = int(np.clip(pitch0 + tr.integers(-TAKE_PITCH_JITTER, TAKE_PITCH_JITTER + 1), 0, 99))
                jobs.append((word, voice, speed, pitch, t, tr))
    with ThreadPoolExecutor(max_workers=4) as ex:
        raws = list(ex.map(lambda j: speech.synthesize(j[0], j[1], j[2], j[3]), jobs))
    for (word, voice, _, _, t, tr), raw in zip(jobs, raws):
        audio.append(record(raw, s, tr))
        labels.append(word)
        vs.append(voice)
        take.append(t)
    return Takes(np.stack(audio), labels, vs, np.array(take))


def real_clips(clip_s: float, offsets: tuple[float, ...]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """alsa-utils' 8 real clips at 16 kHz, each placed at ``offsets`` (fractions of the free room)."""
    import soundfile as sf

    from edgetune.edge.audio.io import resample

    s = int(round(clip_s * RATE))
    audio, labels, view = [], [], []
    for stem, phrase in PHRASES.items():
        x, rate = sf.read(str(ALSA_DIR / f"{stem}.wav"), dtype="float32", always_2d=True)
        x = resample(x.mean(axis=1), rate, RATE)
        for k, off in enumerate(offsets):
            audio.append(record(x, s, np.random.default_rng(k), noise=False, offset_frac=off))
            labels.append(phrase)
            view.append(k)
    return np.stack(audio), labels, np.array(view)


# ----------------------------------------------------------------------------------------------
# embeddings (openWakeWord's own code)


class Embedder:
    def __init__(self, threads: int = 2) -> None:
        import openwakeword
        from openwakeword.utils import AudioFeatures

        models = Path(openwakeword.__file__).parent / "resources" / "models"
        with warnings.catch_warnings():  # it asks for CUDA first and warns that it is absent
            warnings.simplefilter("ignore")
            self.af = AudioFeatures(melspec_onnx_model_path=str(models / "melspectrogram.onnx"),
                                    embedding_onnx_model_path=str(models / "embedding_model.onnx"), ncpu=1)
        self.threads = threads
        self.clips = 0
        self.seconds = 0.0

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """float32 [N, S] in [-1, 1] -> embedding sequences float32 [N, E, 96]."""
        t0 = time.perf_counter()
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
        with ThreadPoolExecutor(max_workers=self.threads) as ex:
            out = np.stack(list(ex.map(self.af._get_embeddings, pcm))).astype(np.float32)
        self.clips += len(audio)
        self.seconds += time.perf_counter() - t0
        return out


# ----------------------------------------------------------------------------------------------
# fitting and scoring


@dataclass
class FitSet:
    """Enrolment data after augmentation: sequences [M, E, 96], labels, groups, which are originals."""

    seq: np.ndarray
    labels: list[str]
    clip_groups: np.ndarray
    voice_groups: np.ndarray
    original: np.ndarray


def augmented_fitset(enrol: Takes, name: str, embed: Embedder, kinds: tuple[str, ...], copies: int, seed: int,
                     cache: dict, at_least: int = 0) -> FitSet:
    """The enrolment takes plus ``copies`` augmented copies each.

    Copy k of a clip does not depend on how many copies are asked for, so the embeddings of
    ``max(copies, at_least)`` copies are made once per (name, kinds, seed) and sliced.
    """
    n = len(enrol.labels)
    seqs = [enrol.seq]
    if copies:
        key = (name, kinds, seed)
        have = cache.get(key)
        if have is None or have.shape[0] < n * copies:
            audio, _ = augment_clips(enrol.audio, RATE, max(copies, at_least), seed, kinds=kinds)
            have = embed(audio[n:])
            cache[key] = have
        seqs.append(have[: n * copies])
    vindex = {v: i for i, v in enumerate(sorted(set(enrol.voices)))}
    voice_g = np.array([vindex[v] for v in enrol.voices])
    return FitSet(seq=np.concatenate(seqs), labels=enrol.labels * (1 + copies),
                  clip_groups=np.tile(np.arange(n), 1 + copies), voice_groups=np.tile(voice_g, 1 + copies),
                  original=np.arange(n * (1 + copies)) < n)


METHODS = POOL_KINDS + ("win>mean",)
"""Head inputs: a pooling kind (fit and infer on the pooled clip), or ``win>mean``: fit on every
window (``edge.audio.pooling.window_samples``), infer on the clip's mean (the same logits as
the mean of the windows' logits)."""


def fit_and_score(train: FitSet, tests: dict[str, tuple[np.ndarray, list[str]]], method: str, l2_mode: str,
                  pooled_cache: dict) -> tuple[dict[str, float], float]:
    """({test name: accuracy}, l2 used) of one head fitted on ``train`` with ``method`` and ``l2_mode``."""
    labels = np.asarray(train.labels)
    if method == "win>mean":
        x, src = window_samples(train.seq)
        y = labels[src].tolist()
        clip_g, voice_g = train.clip_groups[src], train.voice_groups[src]
        o = np.ones_like(train.original) if l2_mode == "cv-aug" else train.original
        score = (pool(train.seq[o], "mean"), labels[o].tolist())
        score_groups = {"cv-clip": train.clip_groups[o], "cv-aug": train.clip_groups[o],
                        "cv-voice": train.voice_groups[o]}
    else:
        x, y = pool(train.seq, method), train.labels
        clip_g, voice_g = train.clip_groups, train.voice_groups
        score, score_groups = None, {}
    if l2_mode.startswith("cv"):
        groups = voice_g if l2_mode == "cv-voice" else clip_g
        if score is None:
            validate = None if l2_mode == "cv-aug" else train.original
            l2 = select_l2(x, y, groups, validate=validate).l2
        else:
            l2 = select_l2(x, y, groups, score_on=(*score, score_groups[l2_mode])).l2
    else:
        l2 = float(l2_mode)
    w, b, out_labels = fit_head(x, y, l2=l2)
    infer = "mean" if method == "win>mean" else method
    accs = {}
    for name, (seq, test_labels) in tests.items():
        key = (name, infer)
        if key not in pooled_cache:
            pooled_cache[key] = pool(seq, infer)
        pred = np.asarray(out_labels)[np.argmax(predict_proba(pooled_cache[key], w, b), axis=1)]
        accs[name] = float(np.mean(pred == np.asarray(test_labels)))
    return accs, l2


@dataclass
class Job:
    """One fit set against one test set, over methods x L2 modes."""

    scenario: str
    aug: str
    train: FitSet
    test_seq: np.ndarray
    test_labels: list[str]
    methods: tuple[str, ...]
    l2_modes: tuple[str, ...]
    extra_tests: dict = field(default_factory=dict)  # scenario name -> (seq, labels)


_JOBS: list[Job] = []  # filled before the worker processes fork; they read it by index


def run_job(index: int) -> list[tuple[tuple[str, str, str, str], float, float, int, float]]:
    job = _JOBS[index]
    cache: dict = {}
    out = []
    tests = {job.scenario: (job.test_seq, job.test_labels), **job.extra_tests}
    for method in job.methods:
        for mode in job.l2_modes:
            t0 = time.perf_counter()
            accs, l2 = fit_and_score(job.train, tests, method, mode, cache)
            seconds = time.perf_counter() - t0
            for name, acc in accs.items():
                out.append(((name, job.aug, method, mode), acc, l2, len(tests[name][1]), seconds))
    return out


@dataclass
class Cell:
    accs: list[float] = field(default_factory=list)
    l2s: list[float] = field(default_factory=list)
    n: int = 0
    seconds: float = 0.0


def print_table(results: dict, scenario: str, title: str, plain: tuple[str, str, str]) -> None:
    rows: dict[tuple[str, str], dict[str, Cell]] = {}
    modes: list[str] = []
    for (sc, aug, method, mode), cell in results.items():
        if sc == scenario:
            rows.setdefault((aug, method), {})[mode] = cell
            if mode not in modes:
                modes.append(mode)
    base = results[(scenario, *plain)]
    reps = len(base.accs)
    print(f"\n## {title}\n")
    print(f"n = {base.n} test clips per repeat, {reps} repeats; accuracy % as mean/min over the repeats; "
          f"plain = {' / '.join(plain)} (mean {100 * np.mean(base.accs):.1f})")
    head = f"{'augmentation':<13} {'head input':<10}" + "".join(f" {m:>11}" for m in modes)
    print(head)
    print("-" * len(head))
    for (aug, method), cells in rows.items():
        line = f"{aug:<13} {method:<10}"
        for m in modes:
            c = cells.get(m)
            line += f" {100 * np.mean(c.accs):>5.1f}/{100 * np.min(c.accs):<5.1f}" if c else f" {'':>11}"
        print(line)
    chosen = []
    for (aug, method), cells in rows.items():
        for m, c in cells.items():
            if m.startswith("cv"):
                vals = " ".join(f"{v:g}" for v in c.l2s)
                chosen.append(f"{aug}/{method}/{m}: {vals}")
    if chosen:
        print("L2 chosen by cv, per repeat: " + "; ".join(chosen))


def summary(results: dict, recipe: dict[str, tuple[str, str, str]], plain: tuple[str, str, str]) -> None:
    print("\n## Summary: plain linear head vs the recommended recipe (accuracy %, mean/min over repeats)\n")
    print(f"{'scenario':<9} {'n':>5} {'plain (' + '/'.join(plain) + ')':>24} {'L2=1 only':>11} "
          f"{'window fit, mean pooling, L2=1':>31} {'recipe':>34}")
    for sc, (aug, method, l2) in recipe.items():
        base, only, win, rec = (results.get((sc, *plain)), results.get((sc, "none", "mean", "1")),
                                results.get((sc, "none", "win>mean", "1")), results.get((sc, aug, method, l2)))
        fmt = lambda c: f"{100 * np.mean(c.accs):.1f}/{100 * np.min(c.accs):.1f}" if c else "-"  # noqa: E731
        print(f"{sc:<9} {base.n:>5} {fmt(base):>24} {fmt(only):>11} {fmt(win):>31} "
              f"{fmt(rec) + ' (' + '/'.join((aug, method, l2)) + ')':>34}")


def device_cost(enrol: Takes, embed: Embedder, copies: int = COPIES) -> None:
    """What enrolment costs on the device side for 10 words x 5 clips, on this CPU, one thread."""
    print(f"\n## Device-side cost: {len(enrol.labels)} clips of {DIGIT_CLIP_S} s (10 words x 5), "
          f"{copies} copies each, this CPU, one thread\n")
    n = len(enrol.labels)

    def best_of(fn, repeats=3):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return value, min(times)

    (audio, _), t_aug = best_of(lambda: augment_clips(enrol.audio, RATE, copies, 0))
    threads, embed.threads = embed.threads, 1
    seq, t_emb = best_of(lambda: embed(audio[n:]), repeats=1)
    embed.threads = threads
    full = np.concatenate([enrol.seq, seq])
    labels = enrol.labels * (1 + copies)
    lab = np.asarray(labels)

    def fit_windows():
        x, src = window_samples(full)
        return fit_head(x, lab[src].tolist(), l2=1.0)

    _, t_fit_w = best_of(fit_windows)
    _, t_fit_m = best_of(lambda: fit_head(pool(full, "mean"), labels, l2=1.0))
    x, src = window_samples(full)
    groups = np.tile(np.arange(n), 1 + copies)
    _, t_cv = best_of(lambda: select_l2(x, lab[src].tolist(), groups[src],
                                        score_on=(pool(enrol.seq, "mean"), enrol.labels, np.arange(n))), repeats=1)
    rows = [(f"augment_clips, {n} clips -> {n * copies} copies", t_aug),
            (f"embed the {n * copies} copies (ORT CPU, openWakeWord graphs)", t_emb),
            (f"fit_head on windows ({x.shape[0]} x {x.shape[1]}), l2=1", t_fit_w),
            (f"fit_head on clip means ({n * (1 + copies)} x 96), l2=1", t_fit_m),
            (f"select_l2 on windows ({len(DEFAULT_L2_GRID)} values x 5 folds), for reference", t_cv)]
    for what, t in rows:
        print(f"{what:<66} {1000 * t:>8.0f} ms")


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and variants (about a minute)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the head fits (default 2)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import onnxruntime
    import openwakeword
    import scipy

    print(machine_info(numpy=np.__version__, scipy=scipy.__version__, onnxruntime=onnxruntime.__version__,
                       openwakeword=getattr(openwakeword, "__version__", "0.4.0"), espeak=speech.espeak_version()))
    embed = Embedder(threads=2)
    rng = np.random.default_rng(SEED)
    order = [VOICES[i] for i in rng.permutation(len(VOICES))]
    n_a, n_abl, n_b, n_c = (2, 1, 2, 2) if args.quick else (6, 2, 3, 3)
    a_voices = order[:n_a]
    b_sets = [order[n_a + 4 * i:n_a + 4 * i + 4] for i in range(n_b)]
    all_kinds = tuple(AUG_KINDS)
    consts = tuple(f"{v:g}" for v in CONST_L2)

    # ---- data and embeddings (openWakeWord's code, 2 threads)
    digits = list(speech.DIGITS)
    data = make_takes(digits, list(VOICES), {v: (5 if v in a_voices else 2) for v in VOICES}, DIGIT_CLIP_S, salt=1)
    data.seq = embed(data.audio)
    print(f"\ndigits: {len(data.labels)} takes, {len(VOICES)} voices, embedding sequences {data.seq.shape[1:]}")
    aug_cache: dict = {}

    for ai, voice in enumerate(a_voices):  # A: one voice enrols, every other voice tests
        is_v = np.array([v == voice for v in data.voices])
        enrol, test = data.subset(is_v), data.subset(~is_v & (data.take < 2))
        for aug, kinds, copies in [("none", (), 0), (f"all x{COPIES}", all_kinds, COPIES)]:
            fs = augmented_fitset(enrol, f"A{ai}", embed, kinds, copies, SEED + ai, aug_cache,
                                  at_least=8 if ai < n_abl else 0)
            _JOBS.append(Job("A", aug, fs, test.seq, test.labels, METHODS, consts))
            _JOBS.append(Job("A", aug, fs, test.seq, test.labels, ("mean", "win>mean"), ("cv-clip",)))
        if ai < n_abl:
            ablations = [("none", (), 0)] + [(f"{k} x{COPIES}", (k,), COPIES) for k in AUG_KINDS]
            ablations += [(f"all x{c}", all_kinds, c) for c in (1, 2, COPIES, 8)]
            for aug, kinds, copies in ablations:
                fs = augmented_fitset(enrol, f"A{ai}", embed, kinds, copies, SEED + ai, aug_cache)
                _JOBS.append(Job("A-ablation", aug, fs, test.seq, test.labels, ("mean", "win>mean"), consts))
    for bi, voices in enumerate(b_sets):  # B: four voices enrol, every other voice tests
        in_b = np.array([v in voices for v in data.voices])
        enrol, test = data.subset(in_b & (data.take < 2)), data.subset(~in_b & (data.take < 2))
        for aug, kinds, copies in [("none", (), 0), (f"all x{COPIES}", all_kinds, COPIES)]:
            fs = augmented_fitset(enrol, f"B{bi}", embed, kinds, copies, SEED + 100 + bi, aug_cache)
            _JOBS.append(Job("B", aug, fs, test.seq, test.labels, METHODS, consts))
            _JOBS.append(Job("B", aug, fs, test.seq, test.labels, ("mean",), ("cv-clip",)))
            _JOBS.append(Job("B", aug, fs, test.seq, test.labels, ("mean", "win>mean"), ("cv-voice",)))
    print(f"A, B embedded at {time.perf_counter() - t_start:.0f} s", flush=True)

    phrases = list(PHRASES.values())  # C: many synthetic voices train, the real voice tests
    c_takes = make_takes(phrases, list(VOICES), {v: 2 for v in VOICES}, PHRASE_CLIP_S, salt=2)
    c_takes.seq = embed(c_takes.audio)
    real_audio, real_labels, real_view = real_clips(PHRASE_CLIP_S, (0.5, 0.0, 0.25, 0.75, 1.0))
    real_seq = embed(real_audio)
    centre = real_view == 0
    real_centre = (real_seq[centre], [lab for lab, c in zip(real_labels, centre) if c])
    c_methods = ("mean", "max", "mean_max", "seg2", "flat", "win>mean")
    c_augs = [("none", (), None), ("all x1", all_kinds, None), ("no-noise x1", ("speed", "shift", "gain"), None)]
    n_all = len(c_takes.labels)
    for i, (aug, kinds, _) in enumerate(c_augs):  # every take augmented once; repeats take subsets
        if kinds:
            audio, _ = augment_clips(c_takes.audio, RATE, 1, SEED + 200 + i, kinds=kinds)
            c_augs[i] = (aug, kinds, embed(audio[n_all:]))
    vindex = {v: i for i, v in enumerate(VOICES)}
    for ci in range(n_c):
        pick = set(np.random.default_rng([SEED, 7, ci]).choice(len(VOICES), size=C_VOICES, replace=False).tolist())
        m = np.array([vindex[v] in pick for v in c_takes.voices])
        n = int(m.sum())
        labels = [lab for lab, keep in zip(c_takes.labels, m) if keep]
        voice_g = np.array([vindex[v] for v, keep in zip(c_takes.voices, m) if keep])
        for aug, kinds, aug_seq in c_augs:
            parts = [c_takes.seq[m]] + ([aug_seq[m]] if aug_seq is not None else [])
            k = len(parts)
            fs = FitSet(seq=np.concatenate(parts), labels=labels * k, clip_groups=np.tile(np.arange(n), k),
                        voice_groups=np.tile(voice_g, k), original=np.arange(n * k) < n)
            extra = {"C40": (real_seq, real_labels)}
            _JOBS.append(Job("C", aug, fs, *real_centre, c_methods, consts, extra))
            _JOBS.append(Job("C", aug, fs, *real_centre, ("mean",), ("cv-voice",), extra))
    print(f"C embedded at {time.perf_counter() - t_start:.0f} s ({embed.clips} clips embedded in "
          f"{embed.seconds:.0f} s); fitting {len(_JOBS)} jobs in {args.workers} processes", flush=True)

    # ---- fits, in worker processes (forked: they see _JOBS)
    import multiprocessing

    results: dict = {}
    if args.workers > 1:
        ctx = multiprocessing.get_context("fork")
        def cost(i: int) -> float:  # the costly jobs first, so that no worker is left with one at the end
            job = _JOBS[i]
            per = sum(job.train.seq.shape[1] if m == "win>mean" else 1 for m in job.methods)
            cv = sum(len(DEFAULT_L2_GRID) * 5 if m.startswith("cv") else 1 for m in job.l2_modes)
            return job.train.seq.shape[0] * per * cv * (1 + len(job.extra_tests))

        by_cost = sorted(range(len(_JOBS)), key=lambda i: -cost(i))
        with ctx.Pool(args.workers) as workers:
            done = dict(zip(by_cost, workers.imap(run_job, by_cost, chunksize=1)))
        outputs = [done[i] for i in range(len(_JOBS))]
    else:
        outputs = [run_job(i) for i in range(len(_JOBS))]
    for out in outputs:
        for key, acc, l2, n, seconds in out:
            cell = results.setdefault(key, Cell())
            cell.accs.append(acc)
            cell.l2s.append(l2)
            cell.n = n
            cell.seconds += seconds
    t_fit = time.perf_counter() - t_start

    plain = ("none", "mean", f"{DEFAULT_L2:g}")
    print_table(results, "A", f"A: 5 takes per digit from ONE voice -> the {len(VOICES) - 1} other voices "
                "(espeak-ng stand-in for speakers)", plain)
    print_table(results, "A-ablation", f"A, augmentation ablation ({n_abl} of the enrolment voices)", plain)
    print_table(results, "B", f"B: 2 takes per digit from each of 4 voices -> the other {len(VOICES) - 4} voices "
                "(espeak-ng stand-in)", plain)
    print_table(results, "C", f"C: trained on espeak-ng phrases ({C_VOICES} voices x 2 takes) -> the 8 REAL "
                "alsa-utils clips (one human voice)", plain)
    print_table(results, "C40", "C, the same 8 real clips each at 5 places in the 2 s window (40 views, "
                "not independent)", plain)
    print(f"\nL2 grid of cv: {list(DEFAULT_L2_GRID)}; cv-clip: folds grouped by source take (an augmented copy "
          "never validates its original), scored on the originals; cv-voice: folds grouped by voice")
    summary(results, {"A": (f"all x{COPIES}", "win>mean", "1"), "B": (f"all x{COPIES}", "win>mean", "1"),
                      "C": ("none", "mean", "1"), "C40": ("none", "mean", "1")}, plain)
    device_cost(data.subset(np.array([v == a_voices[0] for v in data.voices])), embed)
    slow = sorted(results.items(), key=lambda kv: -kv[1].seconds)[:6]
    print("slowest cells (fit + cv seconds, all repeats): " + "; ".join(
        f"{'/'.join(k)} {c.seconds:.0f}" for k, c in slow))
    print(f"embedded {embed.clips} clips in {embed.seconds:.0f} s; total {t_fit:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ONNX Runtime sessions on the best execution provider the device has.

Preference: TensorRT (fp16, engines cached on the device, keyed by GPU and TensorRT version:
engines are built here, never shipped) -> CUDA -> CPU, keeping only what
``onnxruntime.get_available_providers()`` lists. ``require_accelerator`` turns a session that
ended up on the CPU into an error instead of a silent fallback. The provider a session actually
uses (``session.get_providers()[0]``) is logged, and reported in metrics and status.
"""

from __future__ import annotations

import ctypes
import difflib
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgetune.errors import UsageError, missing_extra

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Providers ``auto`` chooses from, best first.
PREFERENCE = (TENSORRT, CUDA, CPU)
ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
ENGINE_CACHE_SUBDIR = "trt-engines"


@dataclass(frozen=True)
class ProviderSettings:
    """Which execution providers sessions use.

    providers: ``"auto"`` (TensorRT -> CUDA -> CPU, whichever are available) or an explicit
        list, best first, of provider names or aliases (``tensorrt``, ``cuda``, ``cpu``). Every
        provider an explicit list names must be available.
    require_accelerator: raise instead of running on the CPU alone.
    intra_op_threads: threads ONNX Runtime uses inside one operator; 0 = its default (all cores).
        1 by default: the graphs are small, and on 2 CPU cores one thread gave hop latency p99
        0.41 ms against 4.3 ms with ONNX Runtime's default (benchmarks/bench_stream.py).
    trt_fp16: let TensorRT build fp16 engines.
    """

    providers: str | tuple[str, ...] = "auto"
    require_accelerator: bool = False
    intra_op_threads: int = 1
    trt_fp16: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.providers, str):
            if self.providers != "auto":
                object.__setattr__(self, "providers", parse_provider_list(self.providers))
        else:
            object.__setattr__(self, "providers", parse_provider_list(",".join(self.providers)))
        if not (isinstance(self.intra_op_threads, int) and 0 <= self.intra_op_threads <= 256):
            raise UsageError(f"runtime.intra_op_threads is {self.intra_op_threads!r}; "
                             "expected an integer 0..256 (0 = ONNX Runtime's default)")


def resolve_provider(raw: str) -> str | None:
    """An alias (``tensorrt``, ``trt``, ``cuda``, ``cpu``) or full name -> the full ONNX Runtime
    name, or None when ``raw`` names no execution provider."""
    name = ALIASES.get(raw.lower(), raw)
    return name if name.endswith("ExecutionProvider") and len(name) <= 64 else None


def provider_hint(raw: str) -> str:
    """``" (did you mean 'cuda'?)"`` for a misspelt provider, or ``""``."""
    close = difflib.get_close_matches(raw.lower(), list(ALIASES) + list(PREFERENCE), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_provider_list(text: str) -> str | tuple[str, ...]:
    """``"auto"`` or ``"tensorrt,cuda,cpu"`` (aliases or full names) -> ``"auto"`` or full names."""
    if text.strip() == "auto":
        return "auto"
    names = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        name = resolve_provider(raw)
        if name is None:
            raise UsageError(f"runtime.providers: {raw!r} is not an execution provider{provider_hint(raw)}; "
                             "expected 'auto' or a comma-separated list of tensorrt, cuda, cpu "
                             "(or full ONNX Runtime names such as CUDAExecutionProvider)")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("runtime.providers is empty; expected 'auto' or a list such as 'tensorrt,cuda,cpu'")
    return tuple(names)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or :class:`UsageError` naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise missing_extra("onnxruntime", "edge") from None
    return onnxruntime


def select_providers(settings: ProviderSettings, available: Sequence[str], *,
                     engine_cache_dir: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The (provider, options) list to create a session with, best first.

    ``available`` is ``onnxruntime.get_available_providers()`` (a parameter so the choice can
    be checked without a GPU). Raises :class:`UsageError` when an explicit provider is not
    available, or when ``require_accelerator`` is set and only the CPU is left.
    """
    available = list(available)
    if settings.providers == "auto":
        chosen = [p for p in PREFERENCE if p in available] or [CPU]
    else:
        missing = [p for p in settings.providers if p not in available]
        if missing:
            raise UsageError(f"runtime.providers asks for {missing}, which this onnxruntime does not offer; "
                             f"available: {available}. On a Jetson install NVIDIA's onnxruntime-gpu build "
                             "for your JetPack, or use --providers auto")
        chosen = list(settings.providers)
    if settings.require_accelerator and all(p == CPU for p in chosen):
        raise UsageError(f"require_accelerator is set but only the CPU is available (providers: {available}); "
                         "install an onnxruntime build with CUDA/TensorRT, or unset require_accelerator")
    out: list[tuple[str, dict[str, Any]]] = []
    for name in chosen:
        options: dict[str, Any] = {}
        if name == TENSORRT:
            options = {"trt_fp16_enable": bool(settings.trt_fp16)}
            if engine_cache_dir is not None:
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache_dir),
                               trt_timing_cache_enable=True, trt_timing_cache_path=str(engine_cache_dir))
        out.append((name, options))
    return out


def check_in_use(in_use: Sequence[str], settings: ProviderSettings, model: str) -> str:
    """The provider a session runs on (``in_use[0]``); raise if it is the CPU and an accelerator is required."""
    first = in_use[0] if in_use else CPU
    if settings.require_accelerator and first == CPU:
        raise UsageError(f"{model}: require_accelerator is set but ONNX Runtime fell back to the CPU "
                         f"(session providers: {list(in_use)}); check the CUDA/TensorRT libraries in the log above, "
                         "or unset require_accelerator")
    return first


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def gpu_name() -> str:
    """The GPU's name: the Jetson module's model, or nvidia-smi's; ``"unknown-gpu"`` otherwise."""
    model = Path("/proc/device-tree/model")
    if model.is_file():
        text = model.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
        if text:
            return text
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out:
            return out.splitlines()[0].strip()
    return "unknown-gpu"


def tensorrt_version() -> str:
    """TensorRT's version from its Python package or ``libnvinfer``; ``"unknown"`` if neither loads."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        pass
    for soname in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(soname)
            code = int(lib.getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # 10.3.0 is 100300; 8.6.2 is 8602 (major * 1000 before TensorRT 10).
        if code >= 100000:
            return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
        return f"{code // 1000}.{code // 100 % 10}.{code % 100}"
    return "unknown"


def engine_cache_dir(state_dir: Path, *, gpu: str | None = None, trt_version: str | None = None) -> Path:
    """``<state_dir>/trt-engines/<gpu>--trt-<version>``: engines only fit the GPU and TensorRT that built them."""
    gpu = gpu_name() if gpu is None else gpu
    trt_version = tensorrt_version() if trt_version is None else trt_version
    return Path(state_dir) / ENGINE_CACHE_SUBDIR / f"{_slug(gpu)}--trt-{_slug(trt_version)}"


def create_session(model_path: str | os.PathLike[str], settings: ProviderSettings, *,
                   state_dir: Path | None = None, available: Sequence[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model_path`` on the best allowed provider.

    Graph optimisations are all on. The TensorRT engine cache lives under ``state_dir`` (no cache
    when it is ``None``). Raises :class:`UsageError` as :func:`select_providers` and
    :func:`check_in_use` do.
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers() if available is None else list(available)
    cache = None
    if TENSORRT in available and state_dir is not None and (settings.providers == "auto"
                                                           or TENSORRT in settings.providers):
        cache = engine_cache_dir(state_dir)
        cache.mkdir(parents=True, exist_ok=True)
    chosen = select_providers(settings, available, engine_cache_dir=cache)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    session = ort.InferenceSession(str(model_path), sess_options=options,
                                   providers=[name for name, _ in chosen],
                                   provider_options=[opts for _, opts in chosen])
    in_use = check_in_use(session.get_providers(), settings, Path(model_path).name)
    log.info("%s: running on %s (asked for %s)", Path(model_path).name, in_use, [name for name, _ in chosen])
    return session

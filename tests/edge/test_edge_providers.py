"""Execution provider choice: TensorRT > CUDA > CPU among those available, and no silent CPU fallback.

TensorRT and CUDA cannot be installed here, so the choice is checked against provider lists
passed in (``FAKE_*``, named as fakes), and real sessions are made on the CPU.
"""

import sys

import pytest

from edgetune.edge.runtime.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderSettings,
    check_in_use,
    create_session,
    engine_cache_dir,
    select_providers,
)
from edgetune.errors import UsageError

# What onnxruntime.get_available_providers() says on a Jetson with NVIDIA's onnxruntime-gpu (a fake list).
FAKE_JETSON_AVAILABLE = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
# What the PyPI onnxruntime says on this machine (a fake list, fixed so the test does not depend on it).
FAKE_CPU_ONLY_AVAILABLE = ["AzureExecutionProvider", "CPUExecutionProvider"]


def _names(chosen):
    return [name for name, _ in chosen]


def test_auto_prefers_tensorrt_then_cuda_then_cpu(tmp_path):
    chosen = select_providers(ProviderSettings(), FAKE_JETSON_AVAILABLE, engine_cache_dir=tmp_path)
    assert _names(chosen) == [TENSORRT, CUDA, CPU]
    trt_options = chosen[0][1]
    assert trt_options["trt_fp16_enable"] is True and trt_options["trt_engine_cache_enable"] is True
    assert trt_options["trt_engine_cache_path"] == str(tmp_path)


def test_auto_keeps_only_available_providers():
    assert _names(select_providers(ProviderSettings(), FAKE_CPU_ONLY_AVAILABLE)) == [CPU]
    assert _names(select_providers(ProviderSettings(), [CUDA, CPU])) == [CUDA, CPU]


def test_explicit_list_with_aliases_keeps_its_order():
    settings = ProviderSettings(providers="cuda,cpu")
    assert settings.providers == (CUDA, CPU)
    assert _names(select_providers(settings, FAKE_JETSON_AVAILABLE)) == [CUDA, CPU]


def test_explicit_provider_that_is_not_available_is_an_error():
    with pytest.raises(UsageError, match=r"asks for \['TensorrtExecutionProvider'\].*available"):
        select_providers(ProviderSettings(providers=("tensorrt", "cpu")), FAKE_CPU_ONLY_AVAILABLE)


def test_misspelt_provider_gets_a_hint():
    with pytest.raises(UsageError, match="did you mean 'tensorrt'"):
        ProviderSettings(providers="tensorrtt")


def test_require_accelerator_refuses_a_cpu_only_choice():
    with pytest.raises(UsageError, match="require_accelerator"):
        select_providers(ProviderSettings(require_accelerator=True), FAKE_CPU_ONLY_AVAILABLE)
    assert _names(select_providers(ProviderSettings(require_accelerator=True), FAKE_JETSON_AVAILABLE))[0] == TENSORRT


def test_require_accelerator_refuses_a_session_that_fell_back_to_cpu():
    # ONNX Runtime drops a provider whose libraries fail to load and carries on with the CPU.
    with pytest.raises(UsageError, match="fell back to the CPU"):
        check_in_use([CPU], ProviderSettings(require_accelerator=True), "audio_embedder.onnx")
    assert check_in_use([CUDA, CPU], ProviderSettings(require_accelerator=True), "m.onnx") == CUDA
    assert check_in_use([CPU], ProviderSettings(), "m.onnx") == CPU


def test_engine_cache_is_keyed_by_gpu_and_tensorrt_version(tmp_path):
    a = engine_cache_dir(tmp_path, gpu="NVIDIA Jetson Orin Nano Developer Kit", trt_version="10.3.0")
    b = engine_cache_dir(tmp_path, gpu="NVIDIA Jetson Orin Nano Developer Kit", trt_version="8.6.2")
    assert a != b and a.parent == b.parent == tmp_path / "trt-engines"
    assert a.name == "nvidia-jetson-orin-nano-developer-kit--trt-10.3.0"


def test_real_cpu_session_reports_its_provider(bundle_dir):
    session = create_session(bundle_dir / "audio_frontend.onnx", ProviderSettings(intra_op_threads=1))
    assert session.get_providers()[0] == CPU


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(UsageError, match=r"pip install 'edgetune\[edge\]'"):
        create_session(tmp_path / "m.onnx", ProviderSettings())

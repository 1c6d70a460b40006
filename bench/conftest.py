"""pytest-benchmark configuration of lthgan's benchmark suites.

Options (or environment variables):
  --bench-device cpu|cuda[:N]      (LTHGAN_BENCH_DEVICE, default cpu)
  --bench-preset tiny|quick|paper  (LTHGAN_BENCH_PRESET; GAN size of the step and round
                                    suites; default quick on CPU, paper on CUDA)
  --bench-threads N                (LTHGAN_BENCH_THREADS; torch intra-op threads)
  LTHGAN_BENCH_SCALE=2             more rounds per row (time budget multiplier)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchutil

PRESETS = ("tiny", "quick", "paper")


def pytest_addoption(parser):
    group = parser.getgroup("lthgan benchmarks")
    group.addoption("--bench-device", default=os.environ.get("LTHGAN_BENCH_DEVICE", "cpu"),
                    help="device to benchmark on: cpu or cuda[:N] (env LTHGAN_BENCH_DEVICE)")
    group.addoption("--bench-threads", type=int,
                    default=int(os.environ["LTHGAN_BENCH_THREADS"])
                    if os.environ.get("LTHGAN_BENCH_THREADS") else None,
                    help="torch intra-op threads (env LTHGAN_BENCH_THREADS; default: torch's, "
                         "one per core)")
    group.addoption("--bench-preset", default=os.environ.get("LTHGAN_BENCH_PRESET") or None,
                    help="GAN size of the step and round suites: tiny, quick or paper "
                         "(env LTHGAN_BENCH_PRESET; default quick on CPU, paper on CUDA)")


def _device(config) -> torch.device:
    raw = config.getoption("--bench-device")
    try:
        dev = torch.device(raw)
    except (RuntimeError, TypeError):
        raise pytest.UsageError(f"--bench-device={raw!r}: expected cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--bench-device={raw!r}: expected cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--bench-device={raw!r}, but torch.cuda.is_available() is False")
    return dev


def pytest_configure(config):
    _device(config)
    threads = config.getoption("--bench-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--bench-threads={threads}: expected a positive int")
        torch.set_num_threads(threads)
    preset = config.getoption("--bench-preset")
    if preset is not None and preset not in PRESETS:
        raise pytest.UsageError(f"--bench-preset={preset!r}: expected one of {', '.join(PRESETS)}")


def pytest_benchmark_update_machine_info(config, machine_info):
    import lthgan

    dev = _device(config)
    machine_info["torch"] = torch.__version__
    machine_info["lthgan"] = lthgan.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["bench_device"] = str(dev)
    machine_info["bench_preset"] = config.getoption("--bench-preset") or (
        "paper" if dev.type == "cuda" else "quick")
    if dev.type == "cuda":
        machine_info["gpu"] = torch.cuda.get_device_name(dev)
        machine_info["cuda"] = torch.version.cuda


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    import lthgan  # noqa: F401  (loads torch.ops.lthgan)

    return _device(pytestconfig)


@pytest.fixture(scope="session")
def preset(pytestconfig, device) -> str:
    return pytestconfig.getoption("--bench-preset") or ("paper" if device.type == "cuda" else "quick")


@pytest.fixture(params=["fp32", "bf16"])
def precision(request, device) -> str:
    if request.param == "bf16" and device.type != "cuda":
        pytest.skip("bf16 autocast rows run on CUDA only")
    return request.param

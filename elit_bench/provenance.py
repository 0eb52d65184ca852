"""Where a result came from: code version, library versions and device, gathered in one place.

Every record writer (suite records, sample sets, metric values, speed
benchmarks) calls `provenance()` or its parts, so they all describe a
result the same way. This module imports nothing else from elit_bench, so
any module may use it without an import cycle.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

# libraries whose version can change a number we report (those not installed are left out)
LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "pandas", "torch-fidelity", "diffusers")


@functools.cache
def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one ("-dirty": uncommitted edits)."""
    from elit_bench import __version__

    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def versions() -> dict[str, str]:
    """Python, elit_bench and the installed LIBRARIES, by name."""
    from elit_bench import __version__

    out = {"python": platform.python_version(), "elit_bench": __version__}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def device_name(device=None) -> str:
    """'cuda:0 (NVIDIA H100 ...)' or 'cpu (x86_64)'; `device` None: the default device of this process."""
    import torch

    device = torch.device(device) if device is not None else (
        torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu"))
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics() -> dict:
    """What decides the floating-point results of CPU kernels besides the code (docs/reproducibility.md):
    the CPU and the instruction set torch dispatches to, and the number of torch threads."""
    import torch

    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}


def provenance(device=None) -> dict:
    """The block every record carries: code_version, versions, device, host, numerics."""
    return {"code_version": code_version(), "versions": versions(), "device": device_name(device),
            "host": platform.node(), "numerics": numerics()}

"""The machine a benchmark figure was measured on: CPU model, cores, memory, load average, library versions.

Plain module (no Dagster; PyTorch only inside `torch_info`), shared by the scripts under ``benchmarks/`` and by
``python -m ww_assets.simulation.benchmark``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name.

    Returns
    -------
    str
        The ``model name`` line of ``/proc/cpuinfo``, else `platform.processor`, else ``"unknown"``.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """This machine and its load right now.

    Returns
    -------
    dict
        ``cpu`` (model name), ``cores`` (logical CPUs), ``ram_gib`` (physical memory), ``load_average`` (1, 5
        and 15 minutes; empty where the system has none), ``python`` and ``platform``. Callers add their own
        library versions to it.
    """
    try:
        ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        ram = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = []
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": ram, "load_average": load,
            "python": platform.python_version(), "platform": platform.platform()}


def torch_info() -> dict:
    """PyTorch's version and threads, and the first GPU where CUDA is available.

    Returns
    -------
    dict
        ``torch``, ``torch_threads``; with CUDA also ``gpu`` (name), ``gpu_memory_gib``, ``cuda`` and ``cudnn``
        (versions).
    """
    import torch

    info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
    return info


def machine_line(info: dict | None = None) -> str:
    """One human line for the machine.

    Parameters
    ----------
    info : dict, optional
        As returned by `machine_info` (default: measured now).

    Returns
    -------
    str
        E.g. ``"AMD EPYC 7B13, 2 cores, 24 GiB RAM, load average 0.12 0.34 0.56, Python 3.11.7"``.
    """
    m = machine_info() if info is None else info
    ram = "? GiB" if m.get("ram_gib") is None else f"{m['ram_gib']:.0f} GiB"
    load = " ".join(f"{x:.2f}" for x in m.get("load_average") or []) or "n/a"
    return f"{m['cpu']}, {m['cores']} cores, {ram} RAM, load average {load}, Python {m['python']}"

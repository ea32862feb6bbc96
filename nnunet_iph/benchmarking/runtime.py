"""The environment a benchmark runs in: nnU-Net's folders and CPU settings, the machine, a memory cap.

Why here and not in the pipeline: the run record (:mod:`.report`) writes down exactly the
environment the trainings got, so both read it from this one place.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Iterator

from nnunet_iph.benchmarking.protocol import Protocol
from nnunet_iph.benchmarking.workspace import Workspace

DEFAULT_CPU_ENV = {"nnUNet_n_proc_DA": "2", "nnUNet_def_n_proc": "2", "nnUNet_compile": "f",
                   "OMP_WAIT_POLICY": "PASSIVE"}


def runtime_env(protocol: Protocol, ws: Workspace) -> dict[str, str]:
    """nnU-Net folders, our trainers, and the CPU settings (a value already exported wins)."""
    from nnunet_iph.environment import nnunet_env

    env = nnunet_env(ws.nnunet)
    if protocol.device == "cpu":
        for key, value in DEFAULT_CPU_ENV.items():
            env[key] = os.environ.get(key, value)
        threads = os.environ.get("NNUNET_IPH_TORCH_THREADS", str(protocol.torch_threads))
        env["NNUNET_IPH_TORCH_THREADS"] = threads
    env["PYTHONUNBUFFERED"] = "1"
    return env


def training_env(protocol: Protocol, env: dict[str, str]) -> dict[str, str]:
    """``env`` for ``nnUNetv2_train``: with a training seed, seeded and with augmentation in the training
    process (repeatable). Only there: nnU-Net's planner would call ``torch.set_num_threads(0)``."""
    if protocol.training_seed is None:
        return env
    return {**env, "NNUNET_IPH_SEED": str(protocol.training_seed), "nnUNet_n_proc_DA": "0"}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "processor": platform.processor() or platform.machine()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


@contextlib.contextmanager
def memory_cap(limit_gb: float = 0.0) -> Iterator[None]:
    """Cap this process's address space while scoring (0: half the RAM), so that a runaway metric
    raises a clear MemoryError instead of the kernel's OOM killer ending other people's jobs on a
    shared machine. (A model predicting nearly the whole head as hemorrhage makes the surface
    distances of ``nnunet_iph.analysis.metrics`` need > 20 GB for one 512x512x46 case.)"""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if limit_gb <= 0:
        try:
            limit_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30 / 2
        except (ValueError, OSError):
            limit_gb = 0
    cap = int(limit_gb * 2 ** 30) if limit_gb > 0 else soft
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    except MemoryError:
        raise MemoryError(f"scoring the predictions needed more than {limit_gb:.1f} GB (address-space cap of the "
                          "benchmark's analysis): usually a model that predicts most of the head as hemorrhage; "
                          "see the models' validation Dice in nnU-Net's summary.json, or set [analysis] "
                          "metric_source = \"summary\"") from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

"""Device names: the one place a ``--device`` / ``"device"`` setting is read.

Accepted: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` and ``mps``.
The config dataclasses check the spelling (:data:`DEVICE_PATTERN`); :func:`resolve_device` also
checks that the hardware is there. Under a launcher that starts several processes (``torchrun``,
``accelerate launch``: ``WORLD_SIZE`` > 1) ``cuda`` and ``auto`` mean the GPU of the process's
``LOCAL_RANK``, one GPU per process (:mod:`corarec.utils.distributed`).
"""

from __future__ import annotations

import os
import re

import torch

from corarec.errors import CorarecError
from corarec.utils.distributed import launched_processes

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
"""The device names corarec accepts (a whole-string regular expression)."""
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
"""The accepted names, as written in errors and help texts."""


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device that ``name`` means; an unknown name or missing hardware is a clear error."""
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise CorarecError(f"unknown device {name!r}; use {DEVICE_NAMES}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and launched_processes() > 1 and torch.cuda.is_available():
        name = f"cuda:{_local_rank()}"  # one GPU per process
    elif name.startswith("cuda:") and launched_processes() > 1:
        raise CorarecError(f"device '{name}': with several processes each one uses the GPU of its LOCAL_RANK; "
                           "pass --device cuda (or auto), and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CorarecError(f"device '{name}' requested but CUDA is not available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CorarecError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) "
                               f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CorarecError("device 'mps' requested but MPS (Apple GPU) is not available")
    return torch.device(name)


def _local_rank() -> int:
    """``LOCAL_RANK`` as a launcher sets it: this process's place on its machine."""
    value = os.environ.get("LOCAL_RANK", "")
    if not value.isdigit():
        raise CorarecError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but LOCAL_RANK={value!r}: start several "
                           "processes with torchrun or accelerate launch, which set both")
    return int(value)

"""Device names: the one place a ``--device`` / ``"device"`` setting is read.

Accepted: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` and ``mps``.
The config dataclasses check the spelling (:data:`DEVICE_PATTERN`); :func:`resolve_device` also
checks that the hardware is there.
"""

from __future__ import annotations

import re

import torch

from corarec.errors import CorarecError

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
"""The device names corarec accepts (a whole-string regular expression)."""
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
"""The accepted names, as written in errors and help texts."""


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device that ``name`` means; an unknown name or missing hardware is a clear error."""
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        raise CorarecError(f"unknown device {name!r}; use {DEVICE_NAMES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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

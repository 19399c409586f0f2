"""The one place that chooses where torch runs: ``"auto"`` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """A torch device from ``"auto"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"``; refuses missing ones."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no CUDA GPU is available; use --device auto or cpu.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError("Apple MPS was requested but is not available; use --device auto or cpu.")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise InputError(f"Unknown device '{device}': use auto, cuda, mps or cpu.") from error


def describe(device: torch.device) -> str:
    """A short human description of a device, e.g. ``"CUDA: NVIDIA H100"`` or ``"CPU (2 threads)"``."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"

"""Which device a command runs on: `--device` checked, or CUDA when there is one."""

from __future__ import annotations

import torch

from alexnet_cli.errors import AlexnetError, UsageError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, or cuda when available else cpu; a clear error for an unusable name (an empty
    one too: `--device ""`, an unset shell variable, is no request for the default)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str) and not device.strip():
        raise UsageError(f"device {device!r} is empty: use cpu, cuda or cuda:N (or leave the option out for the "
                         "default)", field="device", value=device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):      # meta, mps, xpu, ...: nothing here runs on them
        raise UsageError(f"device {device!r}: alexnet runs on cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AlexnetError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AlexnetError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev

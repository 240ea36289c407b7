"""The one place where the compute device and mixed precision are chosen.

Model code receives a ``torch.device`` and wraps forward passes in :func:`autocast`;
it never branches on the device itself.
"""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available, else the CPU. Asking for CUDA on a machine
    without it is an error rather than a silent fallback.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or device='cpu'."
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc


PRECISIONS = ("auto", "fp32", "bf16")


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The mixed-precision context of a forward pass.

    ``"auto"``: bf16 autocast on CUDA where bf16 is native, fp32 elsewhere and on the CPU (exact, and
    on most CPUs faster);
    ``"bf16"``: bf16 autocast on either (worth it on CPUs with AVX512-BF16 or AMX: a Beauty
    two-tower step at dim 256 took 64.8 ms against fp32's 83.9 ms on such a 2-core VM,
    ``experiments/reports/bench_two_tower_step.md`` at 6d48050); ``"fp32"``: never.
    """
    check_precision(device, precision)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and bf16_supported(device)):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16 (Ampere or newer), or a CPU with
    AVX512-BF16 / AMX (oneDNN's check). Elsewhere bf16 autocast runs emulated, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def check_precision(device: torch.device, precision: str) -> None:
    """Raise ``ValueError`` (naming the fix) when ``precision`` is unknown or ``"bf16"`` on a device
    without native bf16; ``"auto"`` picks bf16 only where it is native, so it always passes."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    if precision == "bf16" and not bf16_supported(device):
        what = "this GPU (bf16 needs compute capability 8.0+)" if device.type == "cuda" else \
            f"this {device.type} (bf16 on a CPU needs AVX512-BF16 or AMX)"
        raise ValueError(f"precision='bf16' was set but {what} has no native bf16; set precision = \"fp32\" "
                         "(or \"auto\": bf16 where native, fp32 elsewhere) in the model's config")

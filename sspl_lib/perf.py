"""Speed helpers that do not change what is computed: bf16 autocast (`amp`: "auto" = bf16 on CUDA only,
"bf16", "none"; the measured speed and error: benchmarks/README.md), channels_last, torch.compile with an eager
fallback."""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn as nn

AMP_MODES = ("auto", "bf16", "none")


def device(name: str = "auto") -> torch.device:
    from .distributed import choose_device

    return choose_device(name)


def amp_dtype(device: torch.device | str, amp: str) -> torch.dtype | None:
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    dev = torch.device(device)
    if amp == "bf16" or (amp == "auto" and dev.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, amp: str = "auto"):
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert 4-D parameters / buffers to channels_last in place (same results up to float rounding)."""
    return model.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class CompiledWithFallback(nn.Module):
    """The compiled module, switching to eager (with a warning) at its first compilation error."""

    def __init__(self, eager: nn.Module, compiled):
        super().__init__()
        self.eager = eager
        object.__setattr__(self, "_compiled", compiled)  # not a submodule: no duplicate parameters
        self.failure: str | None = None

    @property
    def compiled_active(self) -> bool:
        return self._compiled is not None

    def forward(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure: fall back to eager
                self.failure = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                warnings.warn(f"torch.compile failed ({self.failure}); running eager", RuntimeWarning,
                              stacklevel=2)
                object.__setattr__(self, "_compiled", None)
        return self.eager(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["eager"], name)

    def state_dict(self, *args, **kwargs):
        return self.eager.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.eager.load_state_dict(*args, **kwargs)


def maybe_compile(model: nn.Module, enabled: bool, *, backend="inductor", mode: str | None = None,
                  dynamic: bool | None = None) -> nn.Module:
    """`model`, or a `CompiledWithFallback` around `torch.compile(model)` when `enabled`."""
    if not enabled:
        return model
    try:
        compiled = torch.compile(model, backend=backend, mode=mode, dynamic=dynamic)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running eager", RuntimeWarning,
                      stacklevel=2)
        return model
    return CompiledWithFallback(model, compiled)


def peak_memory_mib(dev: torch.device | str) -> float:
    dev = torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synchronize(dev: torch.device | str) -> None:
    dev = torch.device(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)

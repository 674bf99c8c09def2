"""Speed helpers that do not change what is computed: bf16 autocast, channels_last, optional torch.compile.

    dev = perf.device("auto")                      # CUDA when available, else CPU
    model = perf.to_channels_last(build_model(cfg).to(dev))
    run = perf.maybe_compile(model, cfg.compile)   # the same model (eager) when compilation fails
    with perf.autocast(dev, cfg.amp):
        out = run(frames1, frames2, spects)
    out["loss"].backward()                         # outside autocast (as torch recommends)

`amp`: "auto" = bf16 on CUDA and float32 on CPU; "bf16" = bf16 everywhere (on CPUs with AMX VGG16 runs
~5x faster than float32, with AVX512-BF16 only ~2x; heatmaps then differ from float32 by up to ~2e-2,
cIoU not at all on the quick benchmark: benchmarks/README.md); "none" = float32. Parameters, optimizer
state and the loss stay float32.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn as nn

AMP_MODES = ("auto", "bf16", "none")


def device(name: str = "auto") -> torch.device:
    """"auto": CUDA when available, else CPU; otherwise the named device (the training code's rule)."""
    from .distributed import choose_device

    return choose_device(name)


def amp_dtype(device: torch.device | str, amp: str) -> torch.dtype | None:
    """The autocast dtype of `amp` on `device` (None = float32)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    dev = torch.device(device)
    if amp == "bf16" or (amp == "auto" and dev.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, amp: str = "auto"):
    """A bf16 autocast context on `device` when `amp` asks for one, else a no-op context."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert 4-D parameters/buffers to channels_last in place (oneDNN / cuDNN run NHWC without the
    layout reorders around every convolution). Results are unchanged up to float rounding (~1e-6).
    Inputs may stay NCHW: the first convolution produces channels_last output from channels_last weights."""
    return model.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in channels_last memory format (other tensors unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class CompiledWithFallback(nn.Module):
    """Calls the compiled module; on the first exception raised by compilation it warns and runs eager
    from then on. Attributes (e.g. `heatmap`, `cfg`) and the state dict are those of the eager module."""

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
    """`model` itself when not `enabled`; else a `CompiledWithFallback` around `torch.compile(model)`.

    Compilation errors never stop a run: an error raised by `torch.compile` itself (e.g. an unknown
    backend) returns the eager model with a warning, and one raised lazily at the first call (the usual
    case: missing C++ compiler, unsupported op) switches to eager with a warning. Save/load through the
    eager model (`wrapper.eager` or the `model` you passed); the wrapper's state dict is the same.
    """
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
    """Peak memory of this process in MiB: max allocated on CUDA, max RSS on CPU."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synchronize(dev: torch.device | str) -> None:
    dev = torch.device(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)

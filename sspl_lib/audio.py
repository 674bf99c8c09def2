"""Waveform -> VGGish log-mel examples, batched in torch: the reference front end (16 kHz mono, 25 ms Hann
frames every 10 ms, 64 HTK-mel bands 125-7500 Hz, log(mel + 0.01), examples of 96 frames x 64 bands)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from einops import rearrange

SAMPLE_RATE = 16_000
CLIP_SECONDS = 3
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512  # next power of two >= WINDOW
N_MELS = 64
F_MIN, F_MAX = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
MIN_SAMPLES = WINDOW + HOP * (EXAMPLE_FRAMES - 1)  # 15600: the shortest 16 kHz waveform with one example


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@lru_cache(maxsize=None)
def _mel_matrix() -> np.ndarray:
    """(257, 64) triangular HTK-mel weights on linearly spaced mel edges; the DC bin gets no weight."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


# integer PCM -> float in [-1, 1): (x - offset) / scale, as the VGGish reference divides int16 by 32768
_PCM_SCALE = {torch.int16: (0.0, 32768.0), torch.int32: (0.0, 2147483648.0), torch.int8: (0.0, 128.0),
              torch.uint8: (128.0, 128.0)}


def _as_tensor(waveform, name: str = "waveform") -> torch.Tensor:
    """A float waveform: integer PCM scaled by its dtype's range to [-1, 1); empty or NaN/inf raises."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not torch.is_tensor(waveform):
        raise TypeError(f"{name} must be a numpy array or a tensor, got {type(waveform).__name__}")
    if waveform.dtype in _PCM_SCALE:
        offset, scale = _PCM_SCALE[waveform.dtype]
        waveform = (waveform.to(torch.float64) - offset) / scale
    elif not waveform.is_floating_point():
        raise TypeError(f"{name} has dtype {waveform.dtype}; expected float samples in [-1, 1] or integer PCM "
                        f"({', '.join(str(d).removeprefix('torch.') for d in _PCM_SCALE)})")
    if waveform.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(waveform.shape)}); expected audio samples")
    if not torch.isfinite(waveform).all():
        bad = int((~torch.isfinite(waveform)).sum())
        raise ValueError(f"{name} holds {bad} NaN/inf samples of {waveform.numel()}; expected finite audio")
    return waveform


def resample(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Resample (..., T) to 16 kHz with resampy's `kaiser_best` filter, as the VGGish reference does."""
    if sample_rate == SAMPLE_RATE:
        return waveform
    import resampy

    x = resampy.resample(waveform.detach().cpu().double().numpy(), sample_rate, SAMPLE_RATE, axis=-1)
    return torch.from_numpy(x).to(waveform.device)


def batch_log_mel(waves: torch.Tensor) -> torch.Tensor:
    """16 kHz waveforms (B, T) -> log-mel examples (B, N, 96, 64) float32 (computed in float64)."""
    if waves.dim() != 2:
        raise ValueError(f"waves: expected waveforms of shape (B, T), got {tuple(waves.shape)}")
    if waves.shape[1] < MIN_SAMPLES:
        raise ValueError(f"waves: {waves.shape[1]} samples ({waves.shape[1] / SAMPLE_RATE:.3f} s at 16 kHz) give "
                         f"fewer than the 96 frames of one 0.96 s example (N=0); expected at least {MIN_SAMPLES}")
    x = waves.to(torch.float64)
    frames = x.unfold(-1, WINDOW, HOP)  # (B, F, 400)
    n = torch.arange(WINDOW, dtype=torch.float64, device=x.device)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / WINDOW)  # periodic Hann
    spec = torch.fft.rfft(frames * hann, n=N_FFT).abs()  # (B, F, 257)
    mel = spec @ torch.from_numpy(_mel_matrix()).to(x.device)  # (B, F, 64)
    log_mel = torch.log(mel + LOG_OFFSET)
    n_examples = log_mel.shape[1] // EXAMPLE_FRAMES  # >= 1: T >= MIN_SAMPLES
    log_mel = log_mel[:, : n_examples * EXAMPLE_FRAMES]
    return rearrange(log_mel, "b (n t) m -> b n t m", t=EXAMPLE_FRAMES).float()


def vggish_examples(waveform, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """One waveform (mono or (T, C) / (C, T), float or integer PCM, any `sample_rate`) -> log-mel
    examples (N, 96, 64); NaN/inf or a clip shorter than one example raises ValueError."""
    x = _as_tensor(waveform)
    if x.dim() == 2:  # multichannel: average the shorter axis (channels)
        x = x.mean(dim=int(x.shape[0] > x.shape[1]))
    if x.dim() != 1:
        raise ValueError(f"waveform: expected a 1-D waveform (or 2-D multichannel), got shape {tuple(x.shape)}")
    x = resample(x.to(torch.float64), sample_rate)
    if x.shape[0] < MIN_SAMPLES:
        raise ValueError(f"waveform: {x.shape[0]} samples at 16 kHz ({x.shape[0] / SAMPLE_RATE:.3f} s) give fewer "
                         f"than the 96 frames of one 0.96 s VGGish example (N=0); expected at least {MIN_SAMPLES} "
                         f"samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s)")
    return batch_log_mel(x[None])[0]


@lru_cache(maxsize=1)
def silent_examples() -> torch.Tensor:
    """The log-mel examples (N,96,64) of a silent 3-s clip, the audio control "silent" (computed once: expand it,
    never write to it)."""
    return vggish_examples(np.zeros(CLIP_SAMPLES, dtype=np.float32))


def prepare_clip(waveform, sample_rate: int = SAMPLE_RATE, seconds: int = CLIP_SECONDS) -> np.ndarray:
    """The official audio pipeline: mono 16 kHz, tiled when short, the centred `seconds`, min-max to
    [-1, 1] (1e-3 guard); float32 (seconds * 16000,)."""
    x = _as_tensor(waveform).to(torch.float32)
    if x.dim() == 2:
        x = x.mean(dim=int(x.shape[0] > x.shape[1]))
    x = resample(x, sample_rate).numpy().astype(np.float32)
    if x.size == 0:
        raise ValueError(f"waveform: empty after resampling {tuple(waveform.shape)} samples from {sample_rate} Hz "
                         "to 16 kHz; expected audio samples")
    length = seconds * SAMPLE_RATE
    if x.shape[0] < length:
        x = np.tile(x, length // x.shape[0] + 1)
    start = x.shape[0] // 2 - length // 2
    x = x[start : start + length].copy()
    x -= x.min()
    x /= x.max() + 1e-3
    return (x - 0.5) * 2

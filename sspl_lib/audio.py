"""Waveform -> VGGish log-mel examples, batched in torch.

The VGGish front end (the reference `mel_features.py` / `vggish_input.py` algorithm):
16 kHz mono, 25 ms periodic-Hann frames every 10 ms, |rFFT| over 512 points, 64 HTK-mel bands
from 125 to 7500 Hz, log(mel + 0.01), then non-overlapping examples of 96 frames (0.96 s) x 64 bands.
"""

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


def _as_tensor(waveform) -> torch.Tensor:
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not torch.is_tensor(waveform):
        raise TypeError(f"waveform must be a numpy array or a tensor, got {type(waveform).__name__}")
    return waveform


def resample(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Resample (..., T) to 16 kHz with resampy's `kaiser_best` filter, as the VGGish reference does."""
    if sample_rate == SAMPLE_RATE:
        return waveform
    import resampy

    x = resampy.resample(waveform.detach().cpu().double().numpy(), sample_rate, SAMPLE_RATE, axis=-1)
    return torch.from_numpy(x).to(waveform.device)


def batch_log_mel(waves: torch.Tensor) -> torch.Tensor:
    """16 kHz waveforms (B, T) -> log-mel examples (B, N, 96, 64), N = whole 0.96 s examples in T.

    Computed in float64 like the numpy reference, returned as float32.
    """
    if waves.dim() != 2:
        raise ValueError(f"expected waveforms of shape (B, T), got {tuple(waves.shape)}")
    if waves.shape[1] < WINDOW:
        raise ValueError(f"waveform of {waves.shape[1]} samples is shorter than one 25 ms window")
    x = waves.to(torch.float64)
    frames = x.unfold(-1, WINDOW, HOP)  # (B, F, 400)
    n = torch.arange(WINDOW, dtype=torch.float64, device=x.device)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / WINDOW)  # periodic Hann
    spec = torch.fft.rfft(frames * hann, n=N_FFT).abs()  # (B, F, 257)
    mel = spec @ torch.from_numpy(_mel_matrix()).to(x.device)  # (B, F, 64)
    log_mel = torch.log(mel + LOG_OFFSET)
    n_examples = 1 + (log_mel.shape[1] - EXAMPLE_FRAMES) // EXAMPLE_FRAMES
    if n_examples < 1:
        raise ValueError(f"{waves.shape[1]} samples give fewer than the 96 frames of one example")
    log_mel = log_mel[:, : n_examples * EXAMPLE_FRAMES]
    return rearrange(log_mel, "b (n t) m -> b n t m", t=EXAMPLE_FRAMES).float()


def vggish_examples(waveform, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """One waveform -> VGGish log-mel examples (N, 96, 64) float32.

    Accepts a 1-D numpy array or tensor, or (T, C) / (C, T) multichannel audio (averaged to mono);
    resamples to 16 kHz when `sample_rate` differs.
    """
    x = _as_tensor(waveform)
    if x.dim() == 2:  # multichannel: average the shorter axis (channels)
        x = x.mean(dim=int(x.shape[0] > x.shape[1]))
    if x.dim() != 1:
        raise ValueError(f"expected a 1-D waveform (or 2-D multichannel), got shape {tuple(x.shape)}")
    x = resample(x.to(torch.float64), sample_rate)
    return batch_log_mel(x[None])[0]


def prepare_clip(waveform, sample_rate: int = SAMPLE_RATE, seconds: int = CLIP_SECONDS) -> np.ndarray:
    """The official audio pipeline: mono 16 kHz, tiled when shorter, the centred `seconds`,
    min-max scaled to [-1, 1] (with the official 1e-3 guard). Returns float32 (seconds*16000,)."""
    x = _as_tensor(waveform).to(torch.float32)
    if x.dim() == 2:
        x = x.mean(dim=int(x.shape[0] > x.shape[1]))
    x = resample(x, sample_rate).numpy().astype(np.float32)
    if x.size == 0:
        raise ValueError("empty waveform")
    length = seconds * SAMPLE_RATE
    if x.shape[0] < length:
        x = np.tile(x, length // x.shape[0] + 1)
    start = x.shape[0] // 2 - length // 2
    x = x[start : start + length].copy()
    x -= x.min()
    x /= x.max() + 1e-3
    return (x - 0.5) * 2

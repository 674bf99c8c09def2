"""Synthesized class sounds: 3 s at 16 kHz, one sound type per class over background noise."""

from __future__ import annotations

import numpy as np

SR = 16_000
SECONDS = 3
T = np.arange(SR * SECONDS) / SR  # (48000,) time axis in seconds
_TABLE = 4096

SOUNDS = ("harmonic", "chirp_up", "am_tone", "noise_band", "clicks", "vibrato",
          "chirp_down", "buzz", "rumble", "siren", "whistle", "bell")


def _pulses(rng, rate_range, duty_range=(0.35, 0.7)) -> np.ndarray:
    rate = rng.uniform(*rate_range)
    ph = (T * rate + rng.random()) % 1.0
    duty = rng.uniform(*duty_range)
    attack = np.clip(ph / 0.05, 0, 1)
    release = np.clip((duty - ph) / 0.08, 0, 1)
    return attack * release


def _band_noise(rng, lo: float, hi: float, n: int = SR * SECONDS) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz by zeroing rFFT bins, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-9)


def _harmonics(f0: np.ndarray | float, amps) -> np.ndarray:
    """Harmonics k*f0 (f0 may vary) by wavetable synthesis, without aliasing."""
    f0 = np.broadcast_to(np.asarray(f0, np.float64), T.shape)
    k = np.arange(1, len(amps) + 1)
    amps = np.asarray(amps, np.float64) * (k * f0.max() < SR / 2 - 200)
    grid = np.arange(_TABLE) / _TABLE
    table = amps @ np.sin(2 * np.pi * k[:, None] * grid[None])  # (4096,) one period
    phase = np.cumsum(f0) / SR  # (48000,) in cycles
    return table[((phase % 1.0) * _TABLE).astype(np.int64) % _TABLE]


def class_sound(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One 3 s waveform (48000,) float64 of sound type `kind`, roughly unit RMS."""
    if kind == "harmonic":  # odd harmonics (clarinet-like), sustained notes
        x = _harmonics(rng.uniform(200, 300), [1, 0, 0.6, 0, 0.45, 0, 0.3]) * _pulses(rng, (1, 2.5), (0.6, 0.9))
    elif kind == "chirp_up":
        rate = rng.uniform(1.5, 3.0)
        ph = (T * rate + rng.random()) % 1.0
        lo, hi = rng.uniform(350, 500), rng.uniform(1800, 2400)
        x = _harmonics(lo * (hi / lo) ** ph, [1, 0.3]) * np.clip((0.85 - ph) / 0.05, 0, 1)
    elif kind == "chirp_down":
        rate = rng.uniform(1.5, 3.0)
        ph = (T * rate + rng.random()) % 1.0
        hi, lo = rng.uniform(2400, 3200), rng.uniform(500, 700)
        x = _harmonics(hi * (lo / hi) ** ph, [1, 0.2]) * np.clip((0.85 - ph) / 0.05, 0, 1)
    elif kind == "am_tone":  # carrier with a deep, fast amplitude modulation
        fc, fm = rng.uniform(900, 1300), rng.uniform(6, 11)
        x = np.sin(2 * np.pi * fc * T + rng.uniform(0, 6.3)) * (0.5 + 0.5 * np.sin(2 * np.pi * fm * T))
    elif kind == "noise_band":  # hissing bursts in a high band
        lo = rng.uniform(2500, 3200)
        x = _band_noise(rng, lo, lo + rng.uniform(1200, 1800)) * _pulses(rng, (1.5, 3.5))
    elif kind == "clicks":  # broadband decaying clicks
        rate = rng.uniform(5, 12)
        ph = (T * rate + rng.random()) % 1.0
        x = _band_noise(rng, 1500, 7000) * np.exp(-ph / rate * rng.uniform(250, 400)) * 2.5
    elif kind == "vibrato":
        f0 = rng.uniform(480, 650) * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(5, 7) * T))
        x = _harmonics(f0, [1, 0.5, 0.25])
    elif kind == "buzz":  # sawtooth-like low buzz, many harmonics
        x = _harmonics(rng.uniform(85, 130), 1 / np.arange(1, 40)) * _pulses(rng, (2, 4), (0.5, 0.8))
    elif kind == "rumble":
        x = _band_noise(rng, 60, rng.uniform(220, 320)) * (0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 1) * T))
    elif kind == "siren":  # two alternating tones
        f1 = rng.uniform(650, 800)
        sw = (np.sin(2 * np.pi * rng.uniform(1, 2) * T + rng.uniform(0, 6.3)) > 0)
        x = _harmonics(np.where(sw, f1, f1 * 1.33), [1, 0.4, 0.2])
    elif kind == "whistle":  # high pure tone pulses
        x = np.sin(2 * np.pi * rng.uniform(3200, 4200) * T) * _pulses(rng, (2, 5))
    elif kind == "bell":  # inharmonic partials, struck and decaying
        f0, rate = rng.uniform(300, 450), rng.uniform(1, 2.5)
        ph = (T * rate + rng.random()) % 1.0
        partials = np.array([1, 2.76, 5.40, 8.93])[:, None]
        tone = (np.array([1, 0.6, 0.4, 0.25])[:, None] * np.sin(2 * np.pi * f0 * partials * T)).sum(0)
        x = tone * np.exp(-ph / rate * 4)
    else:
        raise ValueError(f"unknown sound type {kind!r}")
    return x / (x.std() + 1e-9)


def background_noise(rng: np.random.Generator) -> np.ndarray:
    n = SR * SECONDS
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0))
    x = np.fft.irfft(spec, n)
    return x / x.std()


def sound_kinds(n_classes: int) -> list[str]:
    return [SOUNDS[k % len(SOUNDS)] for k in range(n_classes)]


def render_audio(rng: np.random.Generator, kind: str | None, *, snr_db=(8.0, 25.0)) -> np.ndarray:
    """A 3 s clip float32: `kind`'s sound at a random loudness over background noise (`kind=None`: noise only)."""
    gain = rng.uniform(0.2, 1.0)
    noise = background_noise(rng)
    if kind is None:
        return (gain * 0.1 * noise).astype(np.float32)
    snr = rng.uniform(*snr_db)
    return (gain * (class_sound(kind, rng) + 10 ** (-snr / 20) * noise)).astype(np.float32)

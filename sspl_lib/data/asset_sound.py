"""Clips from real recordings: a random 3 s segment, gain, mild pitch and tempo change, ambient noise."""

from __future__ import annotations

import numpy as np

from .assets import SR, LoadedAssets
from .synth_sound import background_noise

N = 3 * SR  # samples of a clip
FADE = int(0.03 * SR)  # crossfade at each loop seam
PITCH_SEMITONES = 1.0  # +- this much
TEMPO = (0.92, 1.08)
SNR_DB = (6.0, 24.0)


def loop_to(x: np.ndarray, n: int, fade: int = FADE) -> np.ndarray:
    """`x` repeated to at least `n` samples, consecutive copies crossfaded over `fade` samples (raised cosine)."""
    if len(x) >= n:
        return x
    fade = min(fade, len(x) // 4)
    if fade < 2:
        return np.tile(x, n // len(x) + 1)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))).astype(np.float32)
    hop = len(x) - fade
    copies = -(-(n - fade) // hop)
    out = np.zeros(copies * hop + fade, np.float32)
    piece = x.astype(np.float32).copy()
    piece[:fade] *= ramp
    piece[-fade:] *= ramp[::-1]
    for c in range(copies):  # overlap-add, a handful of copies
        out[c * hop:c * hop + len(x)] += piece
    out[:fade] = x[:fade]  # the first copy starts unfaded
    return out


def random_segment(rng: np.random.Generator, x: np.ndarray, n: int, rms: float, tries: int = 4) -> np.ndarray:
    """A random n-sample segment of `x` (looped when shorter); avoids near-silent stretches (RMS < 0.3 * `rms`)."""
    x = loop_to(x, n)
    for _ in range(tries):
        start = int(rng.integers(0, len(x) - n + 1))
        seg = x[start:start + n]
        if np.sqrt(np.mean(seg.astype(np.float64) ** 2)) >= 0.3 * rms:
            break
    return seg


def pitch_tempo(x: np.ndarray, semitones: float, tempo: float, n: int = N) -> np.ndarray:
    """Shift `x` by `semitones` and speed it up by `tempo` (phase-vocoder stretch + soxr resampling); n samples."""
    import librosa

    p = 2.0 ** (semitones / 12)
    y = librosa.effects.time_stretch(x, rate=tempo / p)  # tempo x tempo/p, pitch unchanged
    y = librosa.resample(y, orig_sr=SR * p, target_sr=SR)  # tempo and pitch x p
    return librosa.util.fix_length(y, size=n)


def ambient(rng: np.random.Generator, assets: LoadedAssets, n: int = N) -> np.ndarray:
    """Unit-RMS ambient noise (n,): a random segment of a noise/ recording, else synthesized pink noise."""
    if assets.noise:
        rec = assets.noise[int(rng.integers(len(assets.noise)))]
        x = random_segment(rng, rec, n, float(np.sqrt(np.mean(rec.astype(np.float64) ** 2)))).astype(np.float64)
    else:
        x = background_noise(rng)[:n]
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-9)


def render_asset_audio(rng: np.random.Generator, assets: LoadedAssets, label: int | None, *,
                       snr_db=SNR_DB) -> np.ndarray:
    """A 3 s clip float32 (48000,): class `label`'s sound over ambient noise (`label=None`: ambient noise only)."""
    gain = rng.uniform(0.2, 1.0)
    noise = ambient(rng, assets)
    if label is None:
        return (gain * 0.1 * noise).astype(np.float32)
    k = int(rng.integers(len(assets.recordings[label])))
    rec, rms = assets.recordings[label][k], assets.rms[label][k]
    tempo = rng.uniform(*TEMPO)
    seg = random_segment(rng, rec, int(np.ceil(N * tempo)) + 2048, rms)
    src = pitch_tempo(seg, rng.uniform(-PITCH_SEMITONES, PITCH_SEMITONES), tempo).astype(np.float64)
    src /= np.sqrt(np.mean(src ** 2)) + 1e-9
    snr = rng.uniform(*snr_db)
    return (gain * (src + 10 ** (-snr / 20) * noise)).astype(np.float32)

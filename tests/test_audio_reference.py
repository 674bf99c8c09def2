"""The VGGish log-mel front end against the official numbers and an independent numpy computation.

Reference numbers (tests/data/official_reference.npz, ``audio__*`` and ``prepare__*``) were produced by
the official torchvggish ``vggish_input.waveform_to_examples`` and the official audio loader
(``BaseDataset._load_audio``: tile when shorter than 3 s, centre 3 s crop, ``normalize_audio``) on the
seeded waveforms of tests/official_weights.py; see tests/test_official.py for how to regenerate them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from official_weights import prepare_cases, waveform_cases
from sspl_lib.audio import prepare_clip, vggish_examples

REF_PATH = Path(__file__).parent / "data" / "official_reference.npz"
TOL = 1e-4
CASES = waveform_cases()
SR16 = [name for name, (_, sr) in CASES.items() if sr == 16000]


@pytest.fixture(scope="module")
def ref():
    with np.load(REF_PATH) as f:
        return {k: f[k] for k in f.files if k.startswith(("audio__", "prepare__"))}


def numpy_vggish_examples(wave: np.ndarray) -> np.ndarray:
    """Independent numpy implementation of the published VGGish front end (16 kHz input).

    25 ms frames (400 samples) every 10 ms (160), periodic Hann window, |FFT| over 512 points (next power
    of two), 64 mel bands between 125 and 7500 Hz on the HTK scale mel(f) = 1127 ln(1 + f/700) with
    triangular weights over equally spaced mel edges and no weight on the DC bin, log(mel + 0.01),
    then non-overlapping examples of 96 frames.
    """
    wave = np.asarray(wave, dtype=np.float64)
    sr, win, hop, nfft, nmel = 16000, 400, 160, 512, 64
    n_frames = 1 + (len(wave) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    window = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(win) / win))
    mag = np.abs(np.fft.rfft(wave[idx] * window, n=nfft, axis=1))  # (frames, 257)

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    bin_mel = mel(np.arange(nfft // 2 + 1) * (sr / 2) / (nfft // 2))
    edges = np.linspace(mel(125.0), mel(7500.0), nmel + 2)
    weights = np.zeros((nfft // 2 + 1, nmel))
    for m in range(nmel):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        up = (bin_mel - left) / (centre - left)
        down = (right - bin_mel) / (right - centre)
        weights[:, m] = np.clip(np.minimum(up, down), 0.0, None)
    weights[0] = 0.0
    log_mel = np.log(mag @ weights + 0.01)
    n_ex = log_mel.shape[0] // 96
    return log_mel[: n_ex * 96].reshape(n_ex, 96, nmel)


@pytest.mark.parametrize("name", SR16)
def test_vggish_examples_match_official_16k(name, ref):
    wave, sr = CASES[name]
    ours = vggish_examples(wave, sr)
    assert ours.dtype.is_floating_point and ours.ndim == 3 and ours.shape[1:] == (96, 64)
    official = ref[f"audio__{name}"]
    indep = numpy_vggish_examples(wave)
    d_off = float(np.abs(ours.numpy() - official).max())
    d_np = float(np.abs(ours.numpy() - indep).max())
    d_np_off = float(np.abs(indep - official).max())
    print(f"\n[{name}] {tuple(ours.shape)} max abs: ours-official {d_off:.2e}, ours-numpy {d_np:.2e}, "
          f"numpy-official {d_np_off:.2e}")
    assert ours.shape == official.shape == indep.shape
    assert d_off <= TOL and d_np <= TOL and d_np_off <= TOL


def test_vggish_examples_match_official_44k(ref):
    wave, sr = CASES["wave44k_3s"]
    ours = vggish_examples(wave, sr).numpy()
    official = ref["audio__wave44k_3s"]
    assert ours.shape == official.shape
    d = float(np.abs(ours - official).max())
    print(f"\n[wave44k_3s] max abs ours-official {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("name", sorted(prepare_cases()))
def test_prepare_clip_matches_official_loader(name, ref):
    clip = prepare_cases()[name]
    prepared = prepare_clip(clip, 16000)
    d_clip = float(np.abs(np.asarray(prepared, dtype=np.float64) - ref[f"prepare__{name}__clip"]).max())
    ex = vggish_examples(prepared, 16000).numpy()
    d_ex = float(np.abs(ex - ref[f"prepare__{name}__examples"]).max())
    print(f"\n[{name}] prepare_clip max abs {d_clip:.2e}, examples {d_ex:.2e}")
    assert prepared.shape == (48000,)
    assert d_clip <= 1e-6 and d_ex <= TOL

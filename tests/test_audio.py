"""Audio front end: API behaviour (the reference equality lives in test_audio_reference.py)."""

import numpy as np
import pytest
import torch

from sspl_lib.audio import batch_log_mel, prepare_clip, vggish_examples


def tone(sec=3.0, sr=16000, f=440.0):
    t = np.arange(int(sec * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_three_seconds_give_three_examples():
    ex = vggish_examples(tone())
    assert ex.shape == (3, 96, 64) and ex.dtype == torch.float32


def test_numpy_and_tensor_agree_and_batch_matches_single():
    w = tone()
    a, b = vggish_examples(w), vggish_examples(torch.from_numpy(w))
    assert torch.equal(a, b)
    batch = batch_log_mel(torch.from_numpy(np.stack([w, w[::-1].copy()])))
    assert torch.equal(batch[0], a)


def test_tone_energy_lands_in_the_right_band():
    from sspl_lib.audio import _hz_to_mel, F_MIN, F_MAX

    ex = vggish_examples(tone(f=1000.0))
    band = int(ex.mean(dim=(0, 1)).argmax())
    edges = np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), 66)
    assert edges[band] <= _hz_to_mel(1000.0) <= edges[band + 2]


def test_resampling_and_stereo():
    w = tone(sr=44100)
    ex = vggish_examples(w, 44100)
    assert ex.shape == (3, 96, 64)
    assert torch.allclose(ex, vggish_examples(tone()), atol=0.05)
    stereo = np.stack([tone(), tone()], axis=1)  # (T, 2)
    assert torch.allclose(vggish_examples(stereo), vggish_examples(tone()), atol=1e-5)


def test_too_short_raises():
    with pytest.raises(ValueError, match="fewer than the 96 frames"):
        vggish_examples(tone(sec=0.5))


def test_prepare_clip_tiles_centres_and_scales():
    short = np.linspace(0, 1, 16000, dtype=np.float32)  # 1 s ramp
    clip = prepare_clip(short)
    assert clip.shape == (48000,) and clip.dtype == np.float32
    assert clip.min() == pytest.approx(-1.0) and clip.max() == pytest.approx(1 - 2e-3 / (1 + 1e-3), abs=1e-4)
    long = np.arange(160000, dtype=np.float32)  # 10 s: the centred 3 s are samples 56000..104000
    c = prepare_clip(long)
    assert np.argmin(c) == 0 and np.argmax(c) == 47999
    with pytest.raises(ValueError, match="empty"):
        prepare_clip(np.zeros(0, dtype=np.float32))

"""Tests of the model-free heatmap baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sspl_lib import metrics as M
from sspl_lib.baselines import center_prior, uniform_random


def test_center_prior_values():
    hm = center_prior(3, size=14)
    assert hm.shape == (3, 14, 14) and hm.dtype == torch.float32
    assert torch.equal(hm[0], hm[2])
    # cell (6,6) is half a cell from the centre on each axis; sigma = 14/4 = 3.5
    assert float(hm[0, 6, 6]) == pytest.approx(math.exp(-(0.25 + 0.25) / (2 * 3.5**2)), rel=1e-6)
    assert float(hm[0, 0, 0]) == pytest.approx(math.exp(-2 * 6.5**2 / (2 * 3.5**2)), rel=1e-6)
    assert torch.equal(hm[0], hm[0].flip(0)) and torch.equal(hm[0], hm[0].T)
    assert float(center_prior(1, size=5, sigma=1.0)[0, 2, 2]) == 1.0


def test_center_prior_mask_and_score():
    gt = np.zeros((224, 224))
    gt[56:168, 56:168] = 1  # centred square: the centre prior's mask is a centred disc inside it
    c = M.ciou(center_prior(1)[0], gt)
    assert 0.3 < c <= 1.0
    off = np.zeros((224, 224))
    off[:40, :40] = 1  # corner box: the centre prior misses it
    assert M.ciou(center_prior(1)[0], off) == 0.0


def test_uniform_random_seeded():
    a, b, c = uniform_random(4, seed=1), uniform_random(4, seed=1), uniform_random(4, seed=2)
    assert a.shape == (4, 14, 14) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) < 1


def test_errors():
    with pytest.raises(ValueError):
        center_prior(2, size=0)
    with pytest.raises(ValueError):
        center_prior(2, sigma=-1)
    with pytest.raises(ValueError):
        uniform_random(-1)

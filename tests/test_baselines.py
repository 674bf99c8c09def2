"""Tests of the model-free heatmap baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sspl_lib import metrics as M
from sspl_lib.baselines import center_prior, feature_l2norm, uniform_random, whole_image


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


def test_whole_image_is_constant_and_scores_as_documented():
    hm = whole_image(2, size=7)
    assert hm.shape == (2, 7, 7) and hm.dtype == torch.float32 and bool((hm == 1).all())
    gt = np.zeros((224, 224))
    gt[:112] = 1  # the top half
    assert M.ciou(hm[0], gt, "fixed") == 0.0  # constant -> normalized zeros -> empty mask
    assert M.ciou(hm[0], gt, "median") == pytest.approx(0.5)  # full mask: 112*224 / (112*224 + 112*224)


def test_feature_l2norm_of_a_visual_encoder_by_hand():
    """A 1x1 conv with known weights: the map is the per-location L2 norm of its two output channels."""
    conv = torch.nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 2.0, 0]]).reshape(2, 3, 1, 1))
    frames = torch.zeros(1, 3, 2, 2)
    frames[0, 0, 0, 0], frames[0, 1, 0, 0] = 3.0, 2.0  # location (0,0): channels (3, 4) -> norm 5
    frames[0, 2] = 9.0  # a channel the encoder ignores
    out = feature_l2norm(conv, frames)
    assert out.shape == (1, 2, 2) and torch.allclose(out, torch.tensor([[[5.0, 0], [0, 0]]]))

    class Holder(torch.nn.Module):  # a model holding its encoder as `.visual`, in training mode
        def __init__(self):
            super().__init__()
            self.visual = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(2))

    m = Holder().train()
    assert torch.allclose(feature_l2norm(m, frames), out) and m.visual.training  # eval statistics, mode restored
    with pytest.raises(ValueError, match=r"frames \(B,3,S,S\)"):
        feature_l2norm(conv, torch.zeros(3, 2, 2))

"""sspl_lib.contrastive: InfoNCE by hand, and the objective lowering its loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.contrastive import TAU, contrastive_loss, info_nce, objective_loss, similarity_matrix
from sspl_lib.model import build_model


# ----------------------------------------------------------------------------- contrastive
def test_info_nce_by_hand_2x2():
    # two images with two locations each (D=2), two audio features
    v = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]],  # image 0: locations (1,0) and (0,1)
                      [[[1.0, 1.0]], [[-1.0, 0.0]]]])  # image 1: locations (1,-1) and (1,0)
    a = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    sim, maps = similarity_matrix(v, a)
    locs = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, -1.0], [1.0, 0.0]])]
    an = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
    S = np.array([[max((l / np.linalg.norm(l)) @ an[j] for l in locs[i]) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(sim.numpy(), S, rtol=1e-6)
    assert maps.shape == (2, 1, 2)

    def ce(row, k):
        z = row / TAU
        return -(z[k] - math.log(np.exp(z - z.max()).sum()) - z.max())

    ref = 0.5 * (np.mean([ce(S[i], i) for i in range(2)]) + np.mean([ce(S[:, j], j) for j in range(2)]))
    assert info_nce(sim).item() == pytest.approx(ref, rel=1e-5)


def test_info_nce_lower_when_positives_align():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 8, 3, 3, generator=g)
    aligned = v[:, :, 1, 1].clone()  # each clip matches a location of its own frame
    assert info_nce(similarity_matrix(v, aligned)[0]) < info_nce(similarity_matrix(v, aligned.roll(1, 0))[0])
    assert info_nce(similarity_matrix(v, aligned)[0]) < 0.1


def test_contrastive_training_decreases_loss():
    torch.manual_seed(0)
    cfg = SSPLConfig(img_size=32, pretrained=False, use_pcm=False, encoder_width=8, objective="contrastive")
    model = build_model(cfg).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    x = torch.randn(8, 3, 32, 32)
    sp = torch.randn(8, 3, 96, 64)
    first = objective_loss(model, cfg, x, x, sp)["loss"].item()
    for _ in range(15):
        loss = objective_loss(model, cfg, x, x, sp)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    out = contrastive_loss(model.eval(), x, None, sp)
    torch.testing.assert_close(out["heatmap"], model.heatmap(x, sp))  # the localization map is the cosine map
    with pytest.raises(ValueError, match="use_pcm=False"):
        contrastive_loss(build_model(cfg.replace(use_pcm=True, objective="simsiam")), x, x, sp)
    with pytest.raises(ValueError, match="objective"):
        objective_loss(model, cfg.replace(objective="nope"), x, x, sp)

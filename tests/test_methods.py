"""sspl_lib.methods: each loss against a hand-computed case, what each method trains, the test-time maps, the
registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sspl_lib.config import ConfigError, SSPLConfig
from sspl_lib.model import minmax, object_prior
from sspl_lib.methods.base import similarity_matrix
from sspl_lib.methods.contrastive import TAU, info_nce
from sspl_lib.methods.ezvsl import EZVSL, EZVSLGated, mil_loss, object_region
from sspl_lib.methods.registry import REGISTRY, build_method, build_model
from sspl_lib.methods.sacl import FALSE_NEGATIVE_LOGIT, positive_region, sacl_contrast, sacl_logits, true_negative_mask


def _ce(row: np.ndarray, k: int) -> float:
    """-log softmax(row)[k], by hand."""
    m = row.max()
    return -(row[k] - m - math.log(np.exp(row - m).sum()))


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# two images with two locations each (D=2, h=1, w=2), two audio features
V2 = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]],  # image 0: locations (1,0) and (0,1)
                   [[[1.0, 1.0]], [[-1.0, 0.0]]]])  # image 1: locations (1,-1) and (1,0)
LOCS2 = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, -1.0], [1.0, 0.0]])]
A2 = torch.tensor([[0.6, 0.8], [1.0, 0.0]])


def _max_cos(locs, a):
    an = _unit(a)
    return np.array([[max(_unit(l) @ an[j] for l in locs[i]) for j in range(len(an))] for i in range(len(locs))])


# ----------------------------------------------------------------------------- contrastive (ablation baseline)
def test_info_nce_by_hand_2x2():
    sim, maps = similarity_matrix(V2, A2)
    S = _max_cos(LOCS2, A2.numpy())
    np.testing.assert_allclose(sim.numpy(), S, rtol=1e-6)
    assert maps.shape == (2, 1, 2)
    ref = 0.5 * (np.mean([_ce(S[i] / TAU, i) for i in range(2)]) + np.mean([_ce(S[:, j] / TAU, j) for j in range(2)]))
    assert info_nce(sim).item() == pytest.approx(ref, rel=1e-5)


def test_info_nce_lower_when_positives_align():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 8, 3, 3, generator=g)
    aligned = v[:, :, 1, 1].clone()  # each clip matches a location of its own frame
    assert info_nce(similarity_matrix(v, aligned)[0]) < info_nce(similarity_matrix(v, aligned.roll(1, 0))[0])
    assert info_nce(similarity_matrix(v, aligned)[0]) < 0.1


# ----------------------------------------------------------------------------- EZ-VSL
def test_ezvsl_loss_by_hand_3_clips():
    """S_ij = max_hw <v_i, a_j> / tau, loss = CE(S) + CE(S^T) (summed, as published), 3 clips, tau 0.5."""
    v = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]],  # image 0: locations (2,0,0), (0,1,0)
                      [[[0.0, 1.0]], [[3.0, 0.0]], [[0.0, 1.0]]],  # image 1: (0,3,0), (1,0,1)
                      [[[1.0, 0.0]], [[1.0, 0.0]], [[1.0, 2.0]]]])  # image 2: (1,1,1), (0,0,2)
    locs = [np.array([[2, 0, 0], [0, 1, 0]]), np.array([[0, 3, 0], [1, 0, 1]]), np.array([[1, 1, 1], [0, 0, 2]])]
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])
    tau = 0.5
    S = _max_cos(locs, a.numpy()) / tau
    # hand values: row 0 = (1, 1, 0); row 1 = (1/sqrt2, 1, 1/sqrt2); row 2 = (1/sqrt3, 1/sqrt3, 1)
    np.testing.assert_allclose(S * tau, [[1, 1, 0], [2 ** -0.5, 1, 2 ** -0.5], [3 ** -0.5, 3 ** -0.5, 1]], atol=1e-12)
    ref = np.mean([_ce(S[i], i) for i in range(3)]) + np.mean([_ce(S[:, j], j) for j in range(3)])
    loss, sim = mil_loss(v, a, tau)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    np.testing.assert_allclose(sim.numpy(), S * tau, rtol=1e-6)
    # object-guided MIL: image 0 keeps location 0, image 1 location 1, image 2 both -> the max runs over those only
    region = torch.tensor([[[True, False]], [[False, True]], [[True, True]]])
    kept = [locs[0][:1], locs[1][1:], locs[2]]
    S_r = _max_cos(kept, a.numpy()) / tau
    # row 0 = (1, 0, 0); row 1 = (1/sqrt2, 0, 1/sqrt2): the masked locations' cosines no longer count
    np.testing.assert_allclose(S_r[:2] * tau, [[1, 0, 0], [2 ** -0.5, 0, 2 ** -0.5]], atol=1e-12)
    ref_r = np.mean([_ce(S_r[i], i) for i in range(3)]) + np.mean([_ce(S_r[:, j], j) for j in range(3)])
    loss_r, sim_r = mil_loss(v, a, tau, region)
    assert loss_r.item() == pytest.approx(ref_r, rel=1e-5)
    np.testing.assert_allclose(sim_r.numpy(), S_r * tau, rtol=1e-6)


def test_object_region_by_hand():
    """mean |v| over channels, min-max normalized per map, >= threshold."""
    v = torch.zeros(2, 2, 1, 4)
    v[0, 0, 0] = torch.tensor([0.0, 2.0, -4.0, 8.0])  # mean |v|: 0, 1, 2, 4 -> .0, .25, .5, 1
    v[1, 1, 0] = torch.tensor([1.0, 1.0, 1.0, 3.0])  # .5, .5, .5, 1.5 -> 0, 0, 0, 1
    obj = object_prior(v)
    assert object_region(obj, 0.5).tolist() == [[[False, False, True, True]], [[False, False, False, True]]]
    assert object_region(obj, 0.25).tolist() == [[[False, True, True, True]], [[False, False, False, True]]]
    assert object_region(obj, 1.0)[:, 0].sum(-1).tolist() == [1, 1]  # the maximum always stays


# ----------------------------------------------------------------------------- SACL
def test_true_negative_mask_by_hand():
    """3 clips: 0 and 1 alike (cos 0.8), 2 apart. ratio_neg 1/3 -> each anchor keeps itself and its least similar
    clip; clip 0's false negative is clip 1, and the reverse."""
    e = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    keep = true_negative_mask(e, 1 / 3 + 1e-9)
    assert keep.tolist() == [[True, False, True], [False, True, True], [True, False, True]]
    # cos(e2, e0) = cos(e2, e1) = 0: argsort puts the first index first (stable on this tie)
    assert true_negative_mask(e, 0.0).tolist() == torch.eye(3, dtype=torch.bool).tolist()
    assert true_negative_mask(e, 1.0).all()


def test_positive_region_by_hand():
    s = torch.tensor([[[0.1, 0.5, 0.9, 0.3]]])  # normalized: 0, 0.5, 1, 0.25 -> sorted 0, .25, .5, 1
    assert positive_region(s, 0.5).tolist() == [[[0.0, 0.0, 1.0, 0.0]]]  # threshold = rank 2 = 0.5, strict >
    assert positive_region(s, 0.25).tolist() == [[[0.0, 1.0, 1.0, 0.0]]]  # threshold = rank 1 = 0.25
    assert positive_region(s, 0.0).tolist() == [[[0.0, 1.0, 1.0, 1.0]]]


def test_sacl_loss_by_hand_2_clips():
    """Two clips, one view: the positive region, masked max-similarities, a removed false negative, CE / tau."""
    v = torch.tensor([[[[1.0, 0.0, 2.0]], [[0.0, 1.0, 0.0]]],  # image 0: (1,0), (0,1), (2,0)
                      [[[0.0, 1.0, 1.0]], [[1.0, 0.0, -1.0]]]])  # image 1: (0,1), (1,0), (1,-1)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    tau = 0.1
    # own cosine maps: image 0 vs a0 = (1, 0, 1); image 1 vs a1 = (1, 0, -1/sqrt2). ratio_retain 0: the threshold
    # is the minimum of the normalized map, so the region is every location above it
    s0 = np.array([1.0, 0.0, 1.0])
    s1 = np.array([1.0, 0.0, -(2 ** -0.5)])
    m0 = (_norm01(s0) > np.sort(_norm01(s0))[0]).astype(float)
    m1 = (_norm01(s1) > np.sort(_norm01(s1))[0]).astype(float)
    np.testing.assert_array_equal(m0, [1, 0, 1])
    np.testing.assert_array_equal(m1, [1, 1, 0])
    own = torch.stack([torch.einsum("dhw,d->hw", torch.nn.functional.normalize(v[i], dim=0),
                                    torch.nn.functional.normalize(a[i], dim=0)) for i in range(2)])
    np.testing.assert_array_equal(positive_region(own, 0.0).numpy(), np.stack([m0, m1])[:, None])
    locs = [np.array([[1, 0], [0, 1], [2, 0]]), np.array([[0, 1], [1, 0], [1, -1]])]
    masks = [m0, m1]
    an = _unit(a.numpy())
    S = np.array([[max(masks[i][k] * (_unit(locs[i][k]) @ an[j]) for k in range(3)) for j in range(2)]
                  for i in range(2)])
    np.testing.assert_allclose(S, [[1, 0], [1, 1]], atol=1e-12)
    got = sacl_logits(v, torch.tensor(np.stack([m0, m1])[:, None], dtype=torch.float32), a)
    np.testing.assert_allclose(got.numpy(), S, atol=1e-6)
    # all negatives kept
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, keep = sacl_contrast([v], a, e, tau=tau, ratio_neg=1.0, ratio_retain=0.0)
    assert keep.all()
    assert loss.item() == pytest.approx(_ce(S[0] / tau, 0) / 2 + _ce(S[1] / tau, 1) / 2, rel=1e-5)
    # ratio_neg 0: every other clip is a false negative -> logit -10 / tau; two views add up
    loss0, keep0 = sacl_contrast([v, v], a, e, tau=tau, ratio_neg=0.0, ratio_retain=0.0)
    F = FALSE_NEGATIVE_LOGIT
    one = 0.5 * (_ce(np.array([S[0, 0], F]) / tau, 0) + _ce(np.array([F, S[1, 1]]) / tau, 1))
    assert loss0.item() == pytest.approx(2 * one, rel=1e-5)
    assert not keep0[0, 1] and not keep0[1, 0]


def _norm01(x):
    return (x - x.min()) / (x.max() - x.min() + 1e-10)


# ----------------------------------------------------------------------------- models: what trains, the map
def _cfg(method: str, **kw) -> SSPLConfig:
    out = 8 if method in ("contrastive", "sspl_wo_pcm") else 16  # no projection: the visual map's own 8 channels
    return SSPLConfig(img_size=32, pretrained=False, use_pcm=method == "sspl", encoder_width=8, visual_dim=8,
                      out_dim=out, audio_hidden=16, proj_dim=16, pred_hidden=8,
                      method="sspl" if method == "sspl_wo_pcm" else method, **kw)


def _inputs(b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, 32, 32, generator=g), torch.randn(b, 3, 32, 32, generator=g),
            torch.randn(b, 2, 96, 64, generator=g))


def _grads(method: str) -> dict[str, bool]:
    torch.manual_seed(0)
    model = build_model(_cfg(method)).train()
    model(*_inputs())["loss"].backward()
    parts = {"visual": model.visual, "audio.backbone": model.audio.backbone, "audio.mlp": model.audio.mlp,
             "head": model.head, "visual_proj": getattr(model, "visual_proj", None), "pcm": model.pcm}
    return {k: m is not None and any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
            for k, m in parts.items()}


@pytest.mark.parametrize("method, trained", [
    ("sspl", {"audio.mlp", "head", "pcm"}),
    ("sspl_wo_pcm", {"audio.mlp", "head"}),
    ("contrastive", {"audio.mlp"}),
    ("ezvsl", {"audio.mlp", "visual_proj"}),
    ("ezvsl_gated", {"audio.mlp", "visual_proj"}),
    ("sacl", {"audio.mlp", "visual_proj"}),
])
def test_gradients_reach_exactly_the_trained_parts(method, trained):
    got = _grads(method)
    assert {k for k, v in got.items() if v} == trained, got


@pytest.mark.parametrize("method", ["ezvsl", "sacl"])
def test_projection_methods_map_is_the_projected_cosine_map(method):
    torch.manual_seed(1)
    model = build_model(_cfg(method)).eval()
    x, _, sp = _inputs(3, seed=1)
    v = model.visual_proj(model.visual(x))
    assert v.shape[1] == 16 and model.pcm is None
    _, a = model.encode_audio(sp)
    _, maps = similarity_matrix(v, a)
    torch.testing.assert_close(model.heatmap(x, sp), maps)
    assert not hasattr(build_model(_cfg("sspl")), "visual_proj")  # SSPL adds no projection


def test_contrastive_training_decreases_loss():
    torch.manual_seed(0)
    cfg = SSPLConfig(img_size=32, pretrained=False, use_pcm=False, encoder_width=8, method="contrastive")
    model = build_model(cfg).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    x = torch.randn(8, 3, 32, 32)
    sp = torch.randn(8, 3, 96, 64)
    first = model(x, x, sp)["loss"].item()
    for _ in range(15):
        loss = model(x, x, sp)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    out = model.eval()(x, x, sp)
    torch.testing.assert_close(out["heatmap"], model.heatmap(x, sp))  # the localization map is the cosine map


def test_registry_refuses_unknown_methods_and_a_pcm_it_cannot_use():
    with pytest.raises(ConfigError, match=r"method='ezvsl' with use_pcm=true.*set use_pcm=false"):
        build_method(SSPLConfig(method="ezvsl", use_pcm=True))
    with pytest.raises(ConfigError, match=r"method='ezsvl': expected one of \['sspl', .*\(did you mean 'ezvsl'\?\)"):
        build_model(SSPLConfig(method="ezsvl", use_pcm=False))
    assert SSPLConfig().method == "sspl" and set(REGISTRY) == {"sspl", "contrastive", "ezvsl", "ezvsl_gated", "sacl"}
    with pytest.raises(ConfigError, match=r"sacl_tau=0.0: expected a temperature > 0"):
        SSPLConfig(method="sacl", use_pcm=False, sacl_tau=0)
    with pytest.raises(ConfigError, match=r"sacl_ratio_neg=1.5: expected a fraction in \[0, 1\]"):
        SSPLConfig(method="sacl", use_pcm=False, sacl_ratio_neg=1.5)
    with pytest.raises(ConfigError, match=r"sacl_ratio_retain=1.0: expected a fraction in \[0, 1\)"):
        SSPLConfig(method="sacl", use_pcm=False, sacl_ratio_retain=1.0)
    m = build_method(_cfg("sacl", sacl_tau=0.01, sacl_ratio_neg=0.5))
    assert (m.tau, m.ratio_neg, m.ratio_retain) == (0.01, 0.5, 0.5)  # the settings come from the config


def test_config_refuses_bad_object_priors():
    with pytest.raises(ConfigError, match=r"ezvsl_ogl_alpha=1.5: expected a weight in \[0, 1\]"):
        SSPLConfig(ezvsl_ogl_alpha=1.5)
    with pytest.raises(ConfigError, match=r"ezvsl_gated_gamma=-1.0: expected an exponent >= 0"):
        SSPLConfig(ezvsl_gated_gamma=-1)
    with pytest.raises(ConfigError, match=r"ezvsl_gated_region=2.0: expected a threshold in \[0, 1\]"):
        SSPLConfig(ezvsl_gated_region=2)
    with pytest.raises(ConfigError, match=r"ezvsl_ogl_alpha=0.4 and ezvsl_gated_gamma=3.0: choose one object prior"):
        build_method(_cfg("ezvsl_gated", ezvsl_ogl_alpha=0.4, ezvsl_gated_gamma=3))


def test_gated_ezvsl_restricts_the_max_to_the_frozen_prior_region():
    torch.manual_seed(2)
    model = build_model(_cfg("ezvsl_gated", ezvsl_gated_region=0.5)).train()
    x, _, sp = _inputs()
    got = model(x, x, sp)["loss"]
    with torch.no_grad():
        v = model.visual(x)
    _, a = model.encode_audio(sp)
    region = object_region(object_prior(v), 0.5)
    assert 0 < region.sum() < region.numel()  # a real restriction
    want, _ = mil_loss(model.visual_proj(v), a, model.method.tau, region)
    plain, _ = mil_loss(model.visual_proj(v), a, model.method.tau)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert got.item() != pytest.approx(plain.item(), rel=1e-3)


def test_object_guided_maps_by_hand():
    """EZ-VSL's OGL sum and the gate on a 2x2 map, through the methods' test-time maps."""
    av = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])  # normalized: 0, .25, .5, 1
    v = torch.zeros(1, 2, 2, 2)
    v[0, 0] = torch.tensor([[2.0, 4.0], [0.0, -2.0]])  # mean |v| over 2 channels: 1, 2, 0, 1 -> .5, 1, 0, .5

    class Stub(EZVSLGated):  # the cosine map given: only the combination with the prior is tested here
        def cosine_map(self, model, v, emb):
            return av

    assert torch.allclose(minmax(av), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))
    model = build_model(_cfg("ezvsl_gated"))  # its object prior of a stream map without PCA: model.object_prior
    assert torch.allclose(Stub(ogl_alpha=0.4).heatmap(model, v, None), torch.tensor([[[0.3, 0.7], [0.2, 0.7]]]))
    assert torch.allclose(Stub(gamma=2.0).heatmap(model, v, None), torch.tensor([[[0.0, 0.0625], [0.0, 0.5]]]))
    assert torch.equal(Stub().heatmap(model, v, None), av)  # both off: the cosine map itself
    assert torch.equal(minmax(torch.ones(1, 2, 2)), torch.zeros(1, 2, 2))  # a constant map: zeros, no NaN


@pytest.mark.parametrize("method,setting", [("ezvsl", {"ogl_alpha": 0.4}), ("ezvsl_gated", {"gamma": 3.0})])
def test_test_time_map_is_a_method_setting(method, setting):
    """A setting of the test-time map, passed with the method, changes the map and nothing in the model."""
    torch.manual_seed(0)
    model = build_model(_cfg(method)).eval()
    x, _, sp = _inputs(4, seed=3)
    with torch.no_grad():
        plain = model.heatmap(x, sp)
        other = type(model.method)(**setting)
        got = model.heatmap(x, sp, other)
        (v,) = model.encode_frames(x)
        assert torch.equal(got, other.heatmap(model, v, model.audio.embed(sp)))
    assert not torch.allclose(got, plain, atol=1e-2) and model.method == type(model.method)()


def test_a_new_method_is_one_class_and_one_registry_line(monkeypatch):
    """A toy method with a module of its own (a learnable temperature) trains and maps through SSPL and
    make_optimizer without any change to them."""
    from dataclasses import dataclass

    from sspl_lib.experiments.optim import make_optimizer
    from sspl_lib.methods.base import Method

    @dataclass(frozen=True)
    class Toy(Method):
        def add_modules(self, model):
            model.log_tau = torch.nn.Parameter(torch.zeros(()))

        def param_groups(self, model, cfg):
            return [{"params": [model.log_tau], "lr": cfg.lr_head}]

        def loss(self, model, v1, v2, emb):
            _, a = model.audio_features(emb)
            sim, _ = similarity_matrix(v1, a)
            return {"loss": info_nce(sim, tau=float(TAU)) * model.log_tau.exp()}

    monkeypatch.setitem(REGISTRY, "toy", Toy)
    model = build_model(_cfg("contrastive").replace(method="toy")).train()
    assert "log_tau" in model.state_dict() and isinstance(model.method, Toy)
    opt = make_optimizer(model, model.cfg)
    assert any(g["params"] == [model.log_tau] for g in opt.param_groups)
    x, _, sp = _inputs()
    model(x, x, sp)["loss"].backward()
    opt.step()
    assert model.log_tau.item() != 0.0 and model.eval().heatmap(x, sp).shape == (6, 4, 4)

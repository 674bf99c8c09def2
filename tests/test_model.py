"""The SSPL streams with the SSPL method (methods.sspl): shapes, gradient flow, stop-gradient, loss symmetry, PCM
variants."""

import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.head import negative_cosine, simsiam_loss
from sspl_lib.methods.registry import build_model
from sspl_lib.model import attention

B = 6


def inputs(size=112, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, size, size, generator=g), torch.randn(b, 3, size, size, generator=g),
            torch.rand(b, 3, 96, 64, generator=g) * 6 - 4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SSPLConfig())


def test_forward_shapes(model):
    out = model(*inputs())
    assert out["loss"].shape == ()
    assert out["heatmap"].shape == (B, 14, 14)
    assert out["p1"].shape == out["z2"].shape == (B, model.cfg.proj_dim)
    assert -1.0 <= out["loss"].item() <= 1.0
    assert out["heatmap"].abs().max() <= 1.0 + 1e-5  # a cosine similarity


def test_gradients_reach_trainable_parts_only(model):
    model.zero_grad(set_to_none=True)
    model.train()
    model(*inputs())["loss"].backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("visual.", "audio.backbone."))
        assert p.requires_grad != frozen, name
        if frozen:
            assert p.grad is None, name
        elif not name.startswith("pcm.bn"):  # unused per-cycle BNs would still get grads; all are used here
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.pcm.a0[0].grad.abs().sum() > 0 and model.audio.mlp[0].weight.grad.abs().sum() > 0


def test_stop_gradient_on_targets(model):
    """The loss's gradient w.r.t. z is zero: targets are detached, only p carries gradient."""
    torch.manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(4, 8, requires_grad=True) for _ in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_loss_symmetric_in_views(model):
    model.eval()  # batch norms with fixed statistics: swapping views must swap nothing else
    f1, f2, s = inputs(seed=3)
    a, b = model(f1, f2, s)["loss"], model(f2, f1, s)["loss"]
    assert torch.allclose(a, b, atol=1e-6)
    model.train()


def test_loss_is_minus_one_for_identical_predictions():
    z = torch.randn(5, 16)
    assert torch.isclose(simsiam_loss(z, z, z, z), torch.tensor(-1.0))
    assert torch.isclose(simsiam_loss(z, z, -z, -z), torch.tensor(1.0))


def test_heatmap_matches_forward_view1_in_eval(model):
    model.eval()
    f1, f2, s = inputs(seed=4)
    with torch.no_grad():
        assert torch.allclose(model(f1, f2, s)["heatmap"], model.heatmap(f1, s), atol=1e-5)
    model.train()


@pytest.mark.parametrize("cycles", [0, 1, 4])
def test_pcm_cycles(cycles):
    torch.manual_seed(0)
    m = build_model(SSPLConfig(pcm_cycles=cycles)).eval()
    f1, _, s = inputs(seed=5)
    with torch.no_grad():
        maps = m.heatmap_cycles(f1, s)
        assert maps.shape == (B, cycles + 1, 14, 14)
        assert torch.allclose(maps[:, -1], m.heatmap(f1, s), atol=1e-5)
    assert len(m.pcm.bn_pred_step) == 2 * cycles and len(m.pcm.bn_error_step) == 3 * cycles


def test_cycles_change_the_map():
    torch.manual_seed(0)
    m = build_model(SSPLConfig(pcm_cycles=3)).eval()
    with torch.no_grad():
        maps = m.heatmap_cycles(*inputs(seed=6)[::2])
    assert (maps[:, 0] - maps[:, -1]).abs().max() > 1e-3


def test_without_pcm_heatmap_is_cosine_of_encoder_map():
    torch.manual_seed(0)
    m = build_model(SSPLConfig(use_pcm=False)).eval()
    assert m.pcm is None
    f, _, s = inputs(seed=7)
    with torch.no_grad():
        v = m.visual(f)
        _, a = m.encode_audio(s)
        expected = torch.nn.functional.cosine_similarity(v, a[:, :, None, None], dim=1)
        assert torch.allclose(m.heatmap(f, s), expected, atol=1e-5)


def _grad_parts(model) -> tuple[set, set]:
    """Top-level parts (visual, audio.backbone, audio.mlp, pcm, head) with and without a nonzero gradient."""
    def part(name):
        return ".".join(name.split(".")[:2]) if name.startswith("audio.") else name.split(".")[0]

    with_grad, without = set(), set()
    for name, p in model.named_parameters():
        (with_grad if p.grad is not None and p.grad.abs().sum() > 0 else without).add(part(name))
    return with_grad, without - with_grad


@pytest.mark.parametrize("size,grid", [(96, 12), (128, 16), (64, 8)])
def test_pcm_on_other_grids(size, grid):
    torch.manual_seed(0)
    m = build_model(SSPLConfig(img_size=size))  # frames must match cfg.img_size
    out = m(*inputs(size=size, b=4))
    assert out["heatmap"].shape == (4, grid, grid)
    out["loss"].backward()
    with_grad, without = _grad_parts(m)
    assert with_grad == {"audio.mlp", "pcm", "head"} and without == {"visual", "audio.backbone"}
    assert all(p.grad is None for p in [*m.visual.parameters(), *m.audio.backbone.parameters()])
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_stop_gradient_inside_the_model(model):
    """The gradient reaching z through the model's loss is exactly the one through the predictor (p = h(z)):
    nothing flows back through z as a target."""
    caught = {}
    hook = model.head.register_forward_hook(lambda mod, i, out: caught.update(zip(("p1", "p2", "z1", "z2"), out)))
    model.train()
    try:
        out = model(*inputs(seed=10))
    finally:
        hook.remove()
    assert not out["z1"].requires_grad and not out["z2"].requires_grad
    p1, p2, z1, z2 = (caught[k] for k in ("p1", "p2", "z1", "z2"))
    g_z1, g_z2, g_p1, g_p2 = torch.autograd.grad(out["loss"], [z1, z2, p1, p2], retain_graph=True)
    via_p1, via_p2 = torch.autograd.grad([p1, p2], [z1, z2], grad_outputs=[g_p1, g_p2], retain_graph=True)
    assert torch.allclose(g_z1, via_p1, atol=1e-9) and torch.allclose(g_z2, via_p2, atol=1e-9)
    # without the stop-gradient the target path adds a gradient of this size: the check above can fail
    no_sg = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
    g_nosg = torch.autograd.grad(no_sg, z1, retain_graph=True)[0]
    assert (g_nosg - via_p1).abs().max() > 100 * (g_z1 - via_p1).abs().max() + 1e-6


def test_audio_is_batched_not_looped(model):
    """Batched audio encoding equals encoding each clip alone (the official per-sample loop)."""
    model.eval()
    _, _, s = inputs(seed=8)
    with torch.no_grad():
        e, a = model.audio(s)
        for i in range(B):
            ei, ai = model.audio(s[i : i + 1])
            assert torch.allclose(ei, e[i : i + 1], atol=1e-5) and torch.allclose(ai, a[i : i + 1], atol=1e-5)


def test_attention_pooling():
    m = torch.zeros(1, 2, 2, 2)
    m[0, 0, 0, 0] = 3.0  # location (0,0) points along channel 0
    m[0, 1, 1, 1] = 2.0  # location (1,1) along channel 1
    m[0, :, 0, 1] = 1.0
    a = torch.tensor([[1.0, 0.0]])
    f, sim, att = attention(m, a)
    assert torch.allclose(sim, torch.tensor([[[1.0, 2**-0.5], [0.0, 0.0]]]), atol=1e-6)
    assert torch.allclose(att, sim / sim.max(), atol=1e-6)
    assert torch.allclose(f, torch.tensor([[3.0 + 2**-0.5, 2**-0.5]]), atol=1e-5)


def test_fine_tune_and_scratch_train_the_visual_encoder():
    for kw in ({"fine_tune": True}, {"from_scratch": True}):
        m = build_model(SSPLConfig(**kw))
        assert all(p.requires_grad for p in m.visual.parameters())
        m(*inputs(b=4))["loss"].backward()
        assert m.visual.features[0][0].weight.grad is not None


def test_paper_architecture_shapes():
    torch.manual_seed(0)
    cfg = SSPLConfig(visual_encoder="vgg16", audio_encoder="vggish", img_size=224, visual_dim=512, out_dim=512,
                     proj_dim=2048, pred_hidden=512, pretrained=False)
    m = build_model(cfg)
    assert len(m.visual.features) == 29
    assert sum(p.numel() for p in m.audio.backbone.parameters()) == 72_141_184
    with torch.no_grad():
        out = m(*inputs(size=224, b=2))
    assert out["heatmap"].shape == (2, 14, 14)


def test_pcm_error_rate_init():
    """a0 (official 1.0) scales the error path: with a0 = 0 at init the refined map is a function of the
    encoder map alone (the audio cannot move it); the larger a0, the more the audio moves it."""
    torch.manual_seed(0)
    assert all(torch.all(p == 1.0) for p in build_model(SSPLConfig()).pcm.a0)
    f, _, s = inputs(seed=9)
    s2 = torch.roll(s, 1, dims=0)
    moved = {}
    for a0 in (0.0, 0.1, 1.0):
        torch.manual_seed(0)
        m = build_model(SSPLConfig(pcm_a0_init=a0)).eval()
        assert all(torch.all(p == a0) for p in m.pcm.a0)
        with torch.no_grad():
            (v,) = m.encode_frames(f)
            r1, r2 = m.pcm(v, m.encode_audio(s)[0]), m.pcm(v, m.encode_audio(s2)[0])
        moved[a0] = float((r1 - r2).abs().max())
    assert moved[0.0] == 0.0 and 0.0 < moved[0.1] < moved[1.0]

"""sspl_lib.contrastive (InfoNCE by hand) and sspl_lib.ablation (a real tiny grid through train.fit, cached)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sspl_lib.ablation import Grid, aggregate, markdown, question_rows, run_ablation, variants
from sspl_lib.config import SSPLConfig, load_profile
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


# ----------------------------------------------------------------------------- ablation
def test_variants_and_aggregate():
    base = load_profile("quick")
    v = variants(Grid.full(), base)
    assert {"sspl", "sspl_wo_pcm", "two_streams", "from_scratch", "contrastive"} <= set(v)
    assert {f"cycles{k}" for k in range(6) if k != base.pcm_cycles} <= set(v) and f"cycles{base.pcm_cycles}" not in v
    assert v["two_streams"] == {"views": 1} and v["from_scratch"] == {"from_scratch": True}
    recs = [{"variant": "a", "seed": s, "split": "single", "audio": "matched", "protocol": "fixed", "ciou": c, "auc": c / 2}
            for s, c in enumerate((0.2, 0.4, 0.9))]
    (row,) = aggregate(recs)
    assert row["ciou_mean"] == pytest.approx(0.5) and row["ciou_std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert row["seeds"] == 3 and "0.500 ± " in markdown([row], "variant")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sspl_lib.data import generate_benchmark

    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("bench"), n_train=16, n_val=8, n_test=8, n_labeled=16,
                              frame_size=48, workers=1, progress=False)


def test_tiny_ablation_runs_and_caches(bench, tmp_path):
    grid = Grid(seeds=(0, 1), epochs=1, n_train=16, n_val=8, n_test=6, batch_size=8, questions=("pcm", "protocol", "audio"))
    over = dict(data_root=str(bench), img_size=48, encoder_width=8, pretrain_epochs=1, pretrain_batch_size=8, threads=1)
    root = tmp_path / "runs" / "ablation"
    recs = run_ablation("quick", grid, root=root, progress=False, **over)
    assert {r["status"] for r in recs} == {"trained"}
    for name in ("sspl", "sspl_wo_pcm"):
        for s in (0, 1):
            assert (root / name / f"seed{s}" / "checkpoints" / "best.pt").is_file()
            assert (root / name / f"seed{s}" / "eval.json").is_file()
    base = load_profile("quick")
    rows, key = question_rows(recs, "pcm", base, grid)
    assert [r["variant"] for r in rows] == ["sspl_wo_pcm", "sspl_wo_pcm", "sspl", "sspl"]
    assert all(r["seeds"] == 2 and 0 <= r["ciou_mean"] <= 1 for r in rows)
    rows, key = question_rows(recs, "audio", base, grid)
    assert key == "audio" and {r["audio"] for r in rows} == {"matched", "shuffled", "silent"}
    rows, key = question_rows(recs, "protocol", base, grid)
    assert {r["protocol"] for r in rows} == {"fixed", "median"}
    again = run_ablation("quick", grid, root=root, progress=False, **over)  # cached: no retraining, same scores
    assert {r["status"] for r in again} == {"cached"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("status", "seconds")} for r in rs]  # noqa: E731
    assert strip(again) == strip(recs)

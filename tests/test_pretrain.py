"""pretrain(): label pretraining of the small encoders, cached in <dir>/encoders.pt and loaded by build_model."""

from __future__ import annotations

import torch

from sspl_lib import checkpoint as ckpt
from sspl_lib.config import SSPLConfig
from sspl_lib.data.synthetic import generate_benchmark
from sspl_lib.model import build_model
from sspl_lib.pretrain import location_targets, pretrain


def test_location_targets():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 1.0, 1.0]])
    t = location_targets(boxes, torch.tensor([2, 1]), 4, 4, background=9)
    assert t.shape == (2, 4, 4)
    assert (t[0, :2, :2] == 2).all() and (t[0] == 9).sum() == 12
    assert (t[1, 2:, 1:] == 1).all() and (t[1] == 9).sum() == 10


def test_pretrain_cached_and_loaded(tmp_path):
    root = tmp_path / "bench"
    generate_benchmark(root, seed=1, n_train=0, n_val=0, n_test=0, n_labeled=48, frame_size=64, n_classes=3,
                       workers=1, progress=False)
    cfg = SSPLConfig(img_size=48, visual_dim=16, encoder_width=8, out_dim=16, data_root=str(root), threads=1,
                     pretrain_epochs=2, pretrain_batch_size=16)
    path = pretrain(cfg, tmp_path / "run", progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == {"visual", "audio", "meta"}
    meta = state["meta"]
    assert meta["images"]["n"] == 48 and meta["config"]["img_size"] == 48
    assert 0 <= meta["visual_result"]["held_out_accuracy"] <= 1
    stamp = path.stat().st_mtime_ns
    assert pretrain(cfg, tmp_path / "run", progress=False) == path and path.stat().st_mtime_ns == stamp  # reused
    pretrain(cfg.replace(pretrain_loc_weight=0.0), tmp_path / "run", progress=False)  # settings changed: redone
    assert path.stat().st_mtime_ns != stamp and ckpt.load(path)["meta"]["config"]["pretrain_loc_weight"] == 0.0
    model = build_model(cfg.replace(encoders_checkpoint=str(path)))
    for k, v in ckpt.load(path)["visual"].items():
        assert torch.equal(model.visual.state_dict()[k], v)
    for k, v in ckpt.load(path)["audio"].items():
        assert torch.equal(model.audio.backbone.state_dict()[k], v)

"""pretrain(): label pretraining of the small encoders, cached in <dir>/encoders.pt and loaded by build_model."""

from __future__ import annotations

import torch

from sspl_lib.experiments import runs
from sspl_lib.config import SSPLConfig
from sspl_lib.data.synthetic import generate_benchmark
from sspl_lib.methods.registry import build_model
from sspl_lib.experiments.pretrain import location_targets, pretrain, pretrain_audio, pretrain_visual


def test_location_targets():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 1.0, 1.0]])
    t = location_targets(boxes, torch.tensor([2, 1]), 4, 4, background=9)
    assert t.shape == (2, 4, 4)
    assert (t[0, :2, :2] == 2).all() and (t[0] == 9).sum() == 12
    assert (t[1, 2:, 1:] == 1).all() and (t[1] == 9).sum() == 10


def _labeled_only(tmp_path, *, pretrain_epochs: int) -> SSPLConfig:
    """A benchmark of 48 labeled samples only, and a tiny config that pretrains on it."""
    root = tmp_path / "bench"
    generate_benchmark(root, seed=1, n_train=0, n_val=0, n_test=0, n_labeled=48, frame_size=64, n_classes=3,
                       workers=1, progress=False)
    return SSPLConfig(img_size=48, visual_dim=16, encoder_width=8, out_dim=16, data_root=str(root), threads=1,
                      pretrain_epochs=pretrain_epochs, pretrain_batch_size=16)


def test_pretrain_cached_and_loaded(tmp_path):
    cfg = _labeled_only(tmp_path, pretrain_epochs=2)
    path = pretrain(cfg, tmp_path / "run", progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == {"visual", "audio", "meta"}
    meta = state["meta"]
    assert meta["images"]["n"] == 48 and meta["config"]["img_size"] == 48
    assert meta["visual_result"]["n_held_out"] == 4 and meta["visual_result"]["n_classes"] == 3
    stamp = path.stat().st_mtime_ns
    assert pretrain(cfg, tmp_path / "run", progress=False) == path and path.stat().st_mtime_ns == stamp  # reused
    pretrain(cfg.replace(pretrain_loc_weight=0.0), tmp_path / "run", progress=False)  # settings changed: redone
    assert path.stat().st_mtime_ns != stamp and runs.load_state(path)["meta"]["config"]["pretrain_loc_weight"] == 0.0
    model = build_model(cfg.replace(encoders_checkpoint=str(path)))
    for k, v in runs.load_state(path)["visual"].items():
        assert torch.equal(model.visual.state_dict()[k], v)
    for k, v in runs.load_state(path)["audio"].items():
        assert torch.equal(model.audio.backbone.state_dict()[k], v)


def test_pretraining_learns(tmp_path):
    """On 160 labeled items of 3 classes (16 held out), 6 epochs take the held-out class accuracy from chance
    to near 1. Measured (seeds 0-2, 1 and 2 threads): visual 0.94-1.0 (untrained: 0.31-0.5), audio 1.0.
    The band (>= 0.75, i.e. >= 12 of 16 against 1/3 by chance) leaves room for other CPUs."""
    root = tmp_path / "bench"
    generate_benchmark(root, seed=1, n_train=0, n_val=0, n_test=0, n_labeled=160, frame_size=64, n_classes=3,
                       workers=1, progress=False)
    cfg = SSPLConfig(img_size=48, visual_dim=16, encoder_width=8, out_dim=16, data_root=str(root), threads=1,
                     pretrain_epochs=6, pretrain_batch_size=16, seed=0)
    _, visual = pretrain_visual(cfg, progress=False)
    _, audio = pretrain_audio(cfg, progress=False)
    print(f"\nvisual {visual}\naudio {audio}")
    assert visual["n_classes"] == audio["n_classes"] == 3 and visual["n_held_out"] == 16
    assert visual["held_out_accuracy"] >= 0.75 and audio["held_out_accuracy"] >= 0.75


def test_a_new_run_reuses_matching_encoders_an_existing_run_its_own(tmp_path, capsys):
    """`train --run-dir NEW` does not pretrain again: a matching encoders.pt (the profile's) is found; a run
    that already has a config keeps the encoders it was trained with; other settings find none."""
    from sspl_lib.experiments.pretrain import reuse_encoders

    cfg = _labeled_only(tmp_path, pretrain_epochs=1)
    shared = pretrain(cfg, tmp_path / "profile_runs", progress=False)
    new = reuse_encoders(cfg, tmp_path / "new_run", [tmp_path / "profile_runs"])
    assert new.encoders_checkpoint == str(shared) and "label-pretrained small encoders" in capsys.readouterr().out
    assert reuse_encoders(cfg.replace(pretrain_epochs=2), tmp_path / "new_run", [tmp_path / "profile_runs"]) \
        .encoders_checkpoint is None  # other settings: nothing matches, the run pretrains its own
    (tmp_path / "old_run").mkdir()
    cfg.replace(encoders_checkpoint=str(tmp_path / "old_run" / "encoders.pt")).save(tmp_path / "old_run" / "config.json")
    kept = reuse_encoders(cfg, tmp_path / "old_run", [tmp_path / "profile_runs"])
    assert kept.encoders_checkpoint == str(tmp_path / "old_run" / "encoders.pt")

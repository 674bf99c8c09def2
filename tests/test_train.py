"""fit(): run folder, safe checkpoints, resume == uninterrupted, early stopping, model selection, DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sspl_lib import checkpoint as ckpt
from sspl_lib import train as T
from sspl_lib.config import SSPLConfig
from sspl_lib.data.synthetic import generate_benchmark
from sspl_lib.paths import REPO_ROOT
from sspl_lib.pretrain import pretrain


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny benchmark (64-px frames) and a tiny config with pretrained (1 epoch) encoders."""
    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=3, n_train=48, n_val=16, n_test=4, n_labeled=64, frame_size=64, n_classes=4,
                       workers=1, progress=False)
    cfg = SSPLConfig(img_size=48, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, proj_dim=32,
                     pred_hidden=16, pcm_cycles=1, data_root=str(root), epochs=2, batch_size=16, lr_pcm=1e-3,
                     lr_sound=1e-3, lr_head=1e-3, workers=0, threads=1, seed=5, pretrain_epochs=1,
                     pretrain_batch_size=16)
    enc = pretrain(cfg, root, progress=False)
    return cfg.replace(encoders_checkpoint=str(enc))


def _params(run_dir, which="last"):
    return ckpt.load(run_dir / "checkpoints" / f"{which}.pt")["model"]


def test_run_folder_and_safe_checkpoints(tiny, tmp_path):
    run = tmp_path / "run"
    hist = T.fit(tiny, run, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    for name in ("config.json", "history.json", "history.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                 "figures/loss.png", "figures/val_ciou.png"):
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.tmp"))
    assert SSPLConfig.load(run / "config.json") == tiny
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "best", "config"} <= set(state)
    assert SSPLConfig.from_dict(state["config"]) == tiny and state["epoch"] == 1
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].split(",") == list(ckpt.HISTORY_FIELDS) and len(rows) == 3
    assert json.loads((run / "history.json").read_text()) == hist
    for h in hist:
        assert 0 <= h["val_ciou"] <= 1 and 0 <= h["val_auc"] <= 1 and -1 <= h["train_loss"] <= 1
    # best.pt = the epoch of the best validation cIoU (ties: AUC), never chosen on a test split
    best_epoch = max(hist, key=lambda h: (h["val_ciou"], h["val_auc"]))["epoch"]
    assert ckpt.load(run / "checkpoints" / "best.pt")["epoch"] + 1 == best_epoch
    model = T.load_trained(run, "best")
    assert model.heatmap(torch.zeros(2, 3, 48, 48), torch.zeros(2, 3, 96, 64)).shape == (2, 6, 6)


def test_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    full = tmp_path / "full"
    T.fit(tiny, full, progress=False)

    crashed = tmp_path / "crashed"
    real = ckpt.write_history

    def crash_after_first_epoch(history, run_dir):
        real(history, run_dir)
        raise KeyboardInterrupt("simulated interruption after epoch 1")

    monkeypatch.setattr(ckpt, "write_history", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        T.fit(tiny, crashed, progress=False)
    monkeypatch.setattr(ckpt, "write_history", real)
    assert ckpt.load(crashed / "checkpoints" / "last.pt")["epoch"] == 0
    hist = T.fit(tiny, crashed, resume=True, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    a, b = _params(full), _params(crashed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ref = json.loads((full / "history.json").read_text())
    for x, y in zip(ref, hist):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val_ciou"] == y["val_ciou"]


def test_early_stopping(tiny, tmp_path):
    frozen = tiny.replace(epochs=6, patience=1, lr_pcm=0.0, lr_sound=0.0, lr_head=0.0)  # val cIoU cannot improve
    hist = T.fit(frozen, tmp_path / "es", progress=False)
    assert len(hist) == 2 and len({h["val_ciou"] for h in hist}) == 1
    assert ckpt.load(tmp_path / "es" / "checkpoints" / "best.pt")["epoch"] == 0


def test_ddp_gloo_matches_single_process(tiny, tmp_path):
    """2 CPU processes (torchrun, gloo) x 8 samples == 1 process x 16 samples: same views, global BN statistics."""
    cfg = tiny.replace(epochs=1)
    cfg.save(tmp_path / "cfg.json")
    single = tmp_path / "single"
    T.fit(cfg, single, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sspl_lib.train", "--config", str(tmp_path / "cfg.json"), "--run-dir", str(tmp_path / "ddp"),
           "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = _params(single), _params(tmp_path / "ddp")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
    la = json.loads((single / "history.json").read_text())[0]["train_loss"]
    lb = json.loads((tmp_path / "ddp" / "history.json").read_text())[0]["train_loss"]
    assert la == pytest.approx(lb, abs=1e-4)

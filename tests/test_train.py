"""fit(): run folder, safe checkpoints, resume == uninterrupted (after a real SIGKILL), refused resumes, early
stopping, model selection, every method / stream / encoder switch, live events, TensorBoard, DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.data.synthetic import generate_benchmark
from sspl_lib.experiments import runs
from sspl_lib.experiments import train as T
from sspl_lib.experiments.pretrain import pretrain
from sspl_lib.methods.registry import build_model
from sspl_lib.paths import REPO_ROOT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny benchmark (64-px frames) and a tiny config with pretrained (1 epoch) encoders."""
    root = tmp_path_factory.mktemp("bench")
    generate_benchmark(root, seed=3, n_train=48, n_val=16, n_test=4, n_labeled=64, frame_size=64, n_classes=4,
                       workers=1, progress=False)
    cfg = SSPLConfig(img_size=48, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, proj_dim=32,
                     pred_hidden=16, pcm_cycles=1, data_root=str(root), epochs=2, batch_size=16, lr_visual=1e-3,
                     lr_sound=1e-3, lr_head=1e-3, workers=0, threads=1, seed=5, pretrain_epochs=1,
                     pretrain_batch_size=16)
    enc = pretrain(cfg, root, progress=False)
    return cfg.replace(encoders_checkpoint=str(enc))


def _params(run_dir, which="last"):
    return runs.load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")["model"]


def _same_params(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_run_folder_and_safe_checkpoints(tiny, tmp_path):
    run = tmp_path / "run"
    events = []
    hist = T.fit(tiny, run, progress=False, on_event=events.append)
    assert [h["epoch"] for h in hist] == [1, 2]
    for name in ("config.json", "history.json", "history.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                 "figures/loss.png", "figures/val_ciou.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*")), "TensorBoard event file"
    assert not list(run.rglob("*.tmp"))
    assert SSPLConfig.load(run / "config.json") == tiny
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "best", "config"} <= set(state)
    assert SSPLConfig.from_dict(state["config"]) == tiny and state["epoch"] == 1
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].split(",") == list(runs.HISTORY_FIELDS) and len(rows) == 3
    assert json.loads((run / "history.json").read_text()) == hist
    # the live events: one per optimizer step (48 // 16 = 3 per epoch), one per epoch with the history so far
    steps = [e for e in events if e["kind"] == "step"]
    assert [(e["epoch"], e["step"]) for e in steps] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert [len(e["history"]) for e in events if e["kind"] == "epoch"] == [1, 2]
    # best.pt = the epoch of the best validation cIoU (ties: AUC), never chosen on a test split
    best_epoch = max(hist, key=lambda h: (h["val_ciou"], h["val_auc"]))["epoch"]
    assert runs.load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] + 1 == best_epoch
    model = runs.load_run(run, "best")
    assert model.heatmap(torch.zeros(2, 3, 48, 48), torch.zeros(2, 3, 96, 64)).shape == (2, 6, 6)


def test_training_lowers_the_loss(tiny, tmp_path):
    """SimSiam on the tiny set: the training loss of the last epoch is below the first (a broken gradient path,
    a detached predictor or a zero learning rate leaves it flat)."""
    hist = T.fit(tiny.replace(epochs=4), tmp_path / "run", progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.01, [h["train_loss"] for h in hist]


def test_validation_reads_stored_gt_maps(tiny, tmp_path):
    """A real val split carries `gt` maps and no boxes: validation scores it (finite cIoU), as the test path does."""
    from sspl_lib.data.gt import fill_boxes, vggss_box_pixels
    from sspl_lib.data.h5 import H5Writer, load_split

    root = tmp_path / "data"
    src = __import__("pathlib").Path(tiny.data_root)
    (root).mkdir()
    os.symlink(src / "train.h5", root / "train.h5")
    d = load_split(src / "val.h5", ["frames", "spects", "ids", "boxes"])
    gt = fill_boxes(vggss_box_pixels(d["boxes"], 224), 224).astype("float32")
    with H5Writer(root / "val.h5", attrs={"source": "flickr"}) as w:
        w.append({"frames": d["frames"], "spects": d["spects"], "ids": d["ids"], "gt": gt})
    with_boxes = T.fit(tiny.replace(epochs=1), tmp_path / "boxes", progress=False)
    with_gt = T.fit(tiny.replace(epochs=1, data_root=str(root)), tmp_path / "gt", progress=False)
    assert with_gt[0]["val_ciou"] == pytest.approx(with_boxes[0]["val_ciou"])
    assert with_gt[0]["val_auc"] == pytest.approx(with_boxes[0]["val_auc"])


def test_resume_after_sigkill_equals_uninterrupted(tiny, tmp_path):
    """A real training process killed with SIGKILL after its first epoch, then resumed, ends where an
    uninterrupted run ends (weights and history)."""
    cfg = tiny.replace(epochs=3)
    full = tmp_path / "full"
    T.fit(cfg, full, progress=False)
    cfg.save(tmp_path / "cfg.json")
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sspl_lib.experiments.train", "--config", str(tmp_path / "cfg.json"),
                             "--run-dir", str(killed), "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not runs.read_history(killed) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(runs.read_history(killed))
    assert 1 <= done < 3, f"the process should die mid-run (epochs done: {done})"
    hist = T.fit(cfg, killed, resume=True, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    _same_params(_params(full), _params(killed))
    ref = runs.read_history(full)
    for x, y in zip(ref, hist):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val_ciou"] == y["val_ciou"]


def test_resume_refuses_another_configuration(tiny, tmp_path):
    run = tmp_path / "run"
    T.fit(tiny.replace(epochs=1), run, progress=False)
    for change in ({"lr_visual": 5e-4}, {"seed": 6}, {"batch_size": 8}, {"data_root": str(tmp_path)}):
        with pytest.raises(ValueError, match=f"cannot resume.*{next(iter(change))}"):
            T.fit(tiny.replace(epochs=1, **change), run, resume=True, progress=False)
    with pytest.raises(ValueError, match="epochs.*allow_longer"):
        T.fit(tiny.replace(epochs=2), run, resume=True, progress=False)
    hist = T.fit(tiny.replace(epochs=2), run, resume=True, allow_longer=True, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert SSPLConfig.load(run / "config.json").epochs == 2


def test_corrupt_checkpoints_are_named(tiny, tmp_path):
    run = tmp_path / "run"
    T.fit(tiny.replace(epochs=1), run, progress=False)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.raises(runs.CheckpointError, match=r"last\.pt.*not a readable checkpoint.*best\.pt"):
        T.fit(tiny.replace(epochs=1), run, resume=True, progress=False)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(b"")
    with pytest.raises(runs.CheckpointError, match=r"best\.pt: empty file"):
        runs.load_run(run)
    torch.save([1, 2, 3], best)
    with pytest.raises(runs.CheckpointError, match=r"best\.pt: holds a list"):
        runs.load_run(run)


def test_resume_without_last_pt_starts_afresh(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    hist = T.fit(tiny.replace(epochs=1), run, resume=True, progress=False)  # a new folder: nothing to say
    assert "starting from scratch" not in capsys.readouterr().out and len(hist) == 1
    _same_params(_params(run), _params(run, "best"))
    (run / "checkpoints" / "last.pt").unlink()  # a run that finished no epoch: said, then trained afresh
    again = T.fit(tiny.replace(epochs=1), run, resume=True, progress=False)
    assert "last.pt, starting from scratch" in capsys.readouterr().out and len(again) == 1


def test_early_stopping_and_resume_after_it(tiny, tmp_path):
    frozen = tiny.replace(epochs=6, patience=1, lr_visual=0.0, lr_sound=0.0, lr_head=0.0)  # val cIoU cannot improve
    run = tmp_path / "es"
    hist = T.fit(frozen, run, progress=False)
    assert len(hist) == 2 and len({h["val_ciou"] for h in hist}) == 1 and hist[-1]["stopped"]
    assert runs.load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 0
    assert runs.is_complete(run, frozen.epochs)  # an early-stopped run is finished, not interrupted
    again = T.fit(frozen, run, resume=True, progress=False)  # resuming a stopped run trains nothing more
    assert len(again) == 2
    longer = T.fit(frozen.replace(patience=3), run, resume=True, allow_longer=True, progress=False)
    assert len(longer) == 4 and longer[-1]["stopped"]


@pytest.mark.parametrize("switch", [{"method": "contrastive", "use_pcm": False},
                                    {"method": "ezvsl", "use_pcm": False}, {"method": "sacl", "use_pcm": False},
                                    {"method": "ezvsl_gated", "use_pcm": False, "ezvsl_gated_region": 0.5,
                                     "ezvsl_gated_gamma": 2.0},
                                    {"streams": 2},
                                    {"from_scratch": True}, {"fine_tune": True}])
def test_switches_train_what_they_say(tiny, tmp_path, switch):
    """Every training switch runs through fit, and the visual encoder trains exactly when it should."""
    cfg = tiny.replace(epochs=1, **switch)
    if switch.get("from_scratch"):
        cfg = cfg.replace(encoders_checkpoint=None)
    run = tmp_path / "run"
    runs.seed_everything(cfg.seed)  # fit seeds, then builds: the same initial weights
    before = build_model(cfg).state_dict()
    hist = T.fit(cfg, run, progress=False)
    assert len(hist) == 1 and torch.isfinite(torch.tensor(hist[0]["train_loss"]))
    after = _params(run)
    visual = [k for k in after if k.startswith("visual.") and after[k].is_floating_point() and "running" not in k]
    moved = any(not torch.equal(before[k], after[k]) for k in visual)
    assert moved == bool(switch.get("from_scratch") or switch.get("fine_tune")), switch
    assert not torch.equal(before["audio.mlp.0.weight"], after["audio.mlp.0.weight"])
    head = [k for k in after if k.startswith("head.") and after[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in head) == (cfg.method == "sspl"), switch
    if cfg.method in ("ezvsl", "ezvsl_gated", "sacl"):  # the 1x1 visual projection trains; SSPL has none
        assert not torch.equal(before["visual_proj.weight"], after["visual_proj.weight"])
    else:
        assert "visual_proj.weight" not in after


def test_ddp_gloo_matches_single_process(tiny, tmp_path):
    """2 CPU processes (torchrun, gloo) x 8 samples == 1 process x 16 samples: same views, global BN statistics;
    each rank takes its half of every global batch; a DDP run resumes like a single-process one."""
    cfg = tiny.replace(epochs=1)
    cfg.save(tmp_path / "cfg.json")
    single = tmp_path / "single"
    T.fit(cfg, single, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}

    def torchrun(config, run_dir, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sspl_lib.experiments.train", "--config", str(config), "--run-dir", str(run_dir), "--no-progress",
               *extra]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]

    torchrun(tmp_path / "cfg.json", tmp_path / "ddp")
    a, b = _params(single), _params(tmp_path / "ddp")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
    la = runs.read_history(single)[0]["train_loss"]
    lb = runs.read_history(tmp_path / "ddp")[0]["train_loss"]
    assert la == pytest.approx(lb, abs=1e-4)
    # the same through the disk path (a DataLoader with 2 persistent workers per rank, one HDF5 handle each)
    cfg.replace(workers=2).save(tmp_path / "cfg_disk.json")
    env["SSPL_IN_MEMORY_BYTES"] = "-1"
    torchrun(tmp_path / "cfg_disk.json", tmp_path / "ddp_disk")
    env.pop("SSPL_IN_MEMORY_BYTES")
    a, b = _params(single), _params(tmp_path / "ddp_disk")
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
    # DDP resume: one more epoch from the DDP run's last.pt == two epochs in one process
    cfg.replace(epochs=2).save(tmp_path / "cfg2.json")
    torchrun(tmp_path / "cfg2.json", tmp_path / "ddp", "--resume", "--allow-longer")
    two = tmp_path / "two"
    T.fit(cfg.replace(epochs=2), two, progress=False)
    assert [h["epoch"] for h in runs.read_history(tmp_path / "ddp")] == [1, 2]
    a, b = _params(two), _params(tmp_path / "ddp")
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)


def test_rank_slices_of_the_global_batch(tiny):
    """TrainStream: each of N ranks gets its contiguous slice of the same global permutation."""
    from sspl_lib.data.stream import TrainStream, split_path
    from sspl_lib.distributed import DistInfo

    path = split_path(tiny, "train")
    one = TrainStream(path, batch_size=16, seed=5, info=DistInfo(rank=0, world_size=1))
    ranks = [TrainStream(path, batch_size=16, seed=5, info=DistInfo(rank=r, world_size=2, local_rank=r))
             for r in (0, 1)]
    whole = one.indices(0)
    assert torch.equal(torch.cat([r.indices(0) for r in ranks], dim=1), whole)
    with pytest.raises(ValueError, match="not divisible"):
        TrainStream(path, batch_size=15, seed=5, info=ranks[0].info)


def test_cosine_schedule_checkpoints_load_safely(tiny, tmp_path):
    """A cosine schedule with warmup: the lr follows warmup then the cosine, and the checkpoints stay loadable
    with weights_only=True (a numpy lr factor once made them unreadable)."""
    cfg = tiny.replace(epochs=2, lr_schedule="cosine", warmup_epochs=1.0, use_pcm=False)
    hist = T.fit(cfg, tmp_path / "run", progress=False)
    assert hist[0]["lr"] == pytest.approx(cfg.lr_sound)  # end of the warmup epoch (3 steps): full lr
    assert hist[1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at the last step
    state = runs.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(type(g["lr"]) is float for g in state["optimizer"]["param_groups"])
    assert runs.load_run(tmp_path / "run", "best").heatmap(torch.zeros(1, 3, 48, 48), torch.zeros(1, 3, 96, 64)).shape == (1, 6, 6)

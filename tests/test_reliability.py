"""Issue 18, the runs: nothing lost or mixed up. Real run folders trained by `fit`, real processes killed with
SIGKILL at every checkpoint write, a second real training against the folder lock, a real full disk (a small
tmpfs when this machine lets the tests mount one), moved and changed inputs, copied checkpoints.
docs/reliability.md holds the table of what each failure does now."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sspl_lib.config import SSPLConfig, same_path
from sspl_lib.experiments import runs
from sspl_lib.experiments.atomic import DiskFullError, atomic_save, atomic_write
from sspl_lib.experiments.lock import RunLock, RunLocked
from sspl_lib.experiments.provenance import RunConflict, study_action
from sspl_lib.experiments.study import TrainingFailed, evaluate_methods, load_models, train_methods
from sspl_lib.experiments.train import fit
from sspl_lib.paths import REPO_ROOT

TINY = dict(img_size=48, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, pcm_cycles=1, proj_dim=32,
            pred_hidden=16, pretrained=False, batch_size=8, threads=1, workers=0, val_samples=0, lr_visual=1e-3,
            lr_sound=1e-3, lr_head=1e-3)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sspl_lib.data.synthetic import generate_benchmark

    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("bench") / "tiny", seed=3, n_train=40, n_val=8, n_test=24,
                              n_labeled=16, frame_size=64, workers=1, chunk=16, progress=False)


@pytest.fixture(scope="module")
def cfg(bench):
    """Seed 2 on this set: epochs 1 and 2 improve the validation score, epoch 3 does not (checked below)."""
    return SSPLConfig(data_root=str(bench), seed=2, epochs=3, **TINY)


@pytest.fixture(scope="module")
def reference(cfg, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    hist = fit(cfg, run, progress=False)
    assert runs.best_epoch(hist) == 2 and runs.better(hist[1], hist[0]), hist  # a best.pt write after epoch 1
    return run


def _tensors(path) -> dict:
    state = runs.load_checkpoint(path)
    return {"epoch": state["epoch"], "best": state["best"]["epoch"], "model": state["model"]}


def _same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same last.pt and best.pt (epoch, best epoch, weights) and the same history."""
    for which in ("last", "best"):
        x, y = _tensors(a / "checkpoints" / f"{which}.pt"), _tensors(b / "checkpoints" / f"{which}.pt")
        assert (x["epoch"], x["best"]) == (y["epoch"], y["best"]), which
        for k in x["model"]:
            torch.testing.assert_close(x["model"][k], y["model"][k], rtol=0, atol=1e-6, msg=f"{which}: {k}")
    ha, hb = runs.read_history(a), runs.read_history(b)
    assert [(h["epoch"], h["val_ciou"]) for h in ha] == [(h["epoch"], h["val_ciou"]) for h in hb]
    assert (a / "history.csv").read_text().count("\n") == (b / "history.csv").read_text().count("\n")


def _train_process(cfg: SSPLConfig, run: Path, tmp: Path, **env) -> subprocess.Popen:
    cfg.save(tmp / "cfg.json")
    return subprocess.Popen([sys.executable, "-m", "sspl_lib.experiments.train", "--config", str(tmp / "cfg.json"),
                             "--run-dir", str(run), "--no-progress"], env={**ENV, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ----------------------------------------------------------------------------- a crash at every write
# fit writes, per epoch: last.pt, best.pt (a best epoch), history.json, history.csv. `write:` = killed with the
# temporary file complete and not yet renamed, `saved:` = killed right after the rename; @k = the k-th time.
CRASHES = ["write:last.pt@2", "saved:last.pt@2", "write:best.pt@2", "saved:best.pt@2", "saved:history.json@2",
           "write:history.csv@2", "saved:last.pt@3", "saved:history.json@3"]


@pytest.mark.parametrize("point", CRASHES)
def test_sigkill_at_each_write_resumes_to_the_uninterrupted_run(cfg, reference, tmp_path, point):
    run = tmp_path / "run"
    proc = _train_process(cfg, run, tmp_path, SSPL_CRASH_AT=point)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    try:  # in between, a reader gets a consistent run, or is told to resume
        runs.load_run(run)
    except runs.CheckpointError as e:
        assert "resume the training" in str(e)
    fit(cfg, run, resume=True, progress=False)
    _same_run(reference, run)
    assert not [p.name for p in run.rglob("*.tmp")]


def test_resume_restores_best_pt_or_says_it_cannot(cfg, reference, tmp_path, capsys):
    """Folders left inconsistent by the old write order (or a removed best.pt): best.pt older than the history's
    best epoch while last.pt is that epoch -> restored; the best epoch's weights in no file -> said."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    state = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    state_2 = runs.load_checkpoint(reference / "checkpoints" / "best.pt")
    atomic_save(state_2, run / "checkpoints" / "last.pt")  # last.pt = epoch 2, the best
    (run / "checkpoints" / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"best\.pt: missing, while last\.pt exists.*load_run\(run, 'last'\)"):
        runs.load_run(run)
    fit(cfg, run, resume=True, progress=False)
    assert "restored from last.pt (epoch 2)" in capsys.readouterr().out
    _same_run(reference, run)
    atomic_save(state, run / "checkpoints" / "best.pt")  # best.pt = epoch 3, but the history's best is 2
    with pytest.raises(runs.CheckpointError, match=r"best\.pt: holds epoch 3 but .*history\.json names epoch 2"):
        runs.load_run(run)
    said = runs.restore_best(run, state)  # last.pt (epoch 3) does not hold epoch 2: cannot restore
    assert "best validation epoch is 2, whose weights are in no file" in said


# ----------------------------------------------------------------------------- one writer per run folder
def test_a_second_writer_is_refused_naming_the_holder(cfg, tmp_path):
    run = tmp_path / "run"
    proc = _train_process(cfg.replace(epochs=500), run, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            text = (run / ".lock").read_text() if (run / ".lock").is_file() else ""
            if text:
                break
            time.sleep(0.05)
        assert json.loads(text)["pid"] == proc.pid
        held = rf"{re.escape(str(run))}: another training is writing this run folder \(pid {proc.pid} on "
        with pytest.raises(RunLocked, match=held):
            fit(cfg.replace(seed=9), run, resume=True, progress=False)
    finally:
        proc.kill()
        proc.wait()
    with RunLock(run):  # the kernel released the killed holder's lock
        pass
    assert runs.run_config(run) is None or runs.run_config(run).seed == cfg.seed  # nothing of seed 9 was written


def test_temporaries_are_unique_and_removed_on_failure(tmp_path):
    target = tmp_path / "out.json"
    code = (f"from sspl_lib.experiments.atomic import write_json\n"
            f"for i in range(300): write_json({{'i': i, 'pad': 'x' * 5000}}, {str(target)!r})")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=ENV, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]  # one shared temporary name made one of them fail
    assert json.loads(target.read_text())["i"] == 299 and [p.name for p in tmp_path.iterdir()] == ["out.json"]

    def broken(f):
        f.write(b"half")
        raise ValueError("interrupted")

    with pytest.raises(ValueError, match="interrupted"):
        atomic_write(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"] and json.loads(target.read_text())["i"] == 299


@pytest.fixture()
def small_disk(tmp_path):
    """A real 1.5 MB tmpfs (needs root; else None): one checkpoint of the tiny model fits, two do not."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mnt)], capture_output=True).returncode:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_named_and_loses_nothing(cfg, reference, small_disk, tmp_path):
    if small_disk is None:  # no tmpfs here: ENOSPC from a real device at torch's write call
        with open("/dev/full", "wb") as f, pytest.raises(RuntimeError) as err:
            torch.save({"w": torch.zeros(1 << 16)}, f)
            f.flush()
        def write(f):
            raise err.value

        with pytest.raises(DiskFullError, match=r"disk full while writing .*x\.pt"):
            atomic_write(tmp_path / "x.pt", write)
        return
    run = small_disk / "run"
    with pytest.raises(DiskFullError, match=rf"disk full while writing {re.escape(str(run))}/checkpoints/best\.pt"):
        fit(cfg, run, progress=False)
    assert not list(run.rglob("*.tmp")) and runs.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 0
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # space freed
    fit(cfg, run, resume=True, progress=False)
    _same_run(reference, run)


# ----------------------------------------------------------------------------- changed and moved runs
def _digest(run: Path) -> dict:
    return {p.relative_to(run).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_more_epochs_on_a_finished_run_trains_it_further(cfg, tmp_path, capsys):
    """notebooks/02 with `-p epochs 100` on a finished run: the same run folder, trained on from its last.pt
    (what an uninterrupted run with that many epochs computes); any other change refuses that job and keeps
    the folder; an unreadable config.json refuses too."""
    root = tmp_path / "runs"
    short = cfg.replace(epochs=1, seed=1, seeds=(1,))
    train_methods(short, root, ["sspl"], jobs=1, progress=False)
    first = runs.read_history(root / "sspl")
    hist = train_methods(short.replace(epochs=3), root, ["sspl"], jobs=1)["sspl"][1]
    assert "run trained on to 3 epochs" in capsys.readouterr().out
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[0] == first[0]
    fit(short.replace(epochs=3), tmp_path / "straight", progress=False)
    _same_run(tmp_path / "straight", root / "sspl")
    kept = _digest(root / "sspl")
    for change, said in (({"lr_head": 5e-4}, r"lr_head: 0\.001 -> 0\.0005"), ({"epochs": 2}, r"epochs: 3 -> 2")):
        with pytest.raises(TrainingFailed, match=rf"1 of 1 runs failed(.|\n)*RunConflict: .*{said}.*delete"):
            train_methods(short.replace(**{"epochs": 3, **change}), root, ["sspl"], jobs=1, progress=False)
        assert _digest(root / "sspl") == kept
    (root / "sspl" / "config.json").write_text('{"epochs": 3, "lr_he')  # truncated
    with pytest.raises(TrainingFailed, match=r"config\.json: not a readable config\.json.*is kept as it is"):
        train_methods(short.replace(epochs=3), root, ["sspl"], jobs=1, progress=False)
    assert {k: v for k, v in _digest(root / "sspl").items() if k != "config.json"} == \
        {k: v for k, v in kept.items() if k != "config.json"}


def test_moved_runs_and_data_folders_keep_their_runs(cfg, bench, tmp_path, capsys):
    """The runs folder and the data folder moved (with small encoders pretrained into the runs folder): the
    finished runs are reused, nothing retrains; other data at the same path is refused."""
    data, root = tmp_path / "data", tmp_path / "runs"
    shutil.copytree(bench, data)
    small = cfg.replace(data_root=str(data), epochs=1, seed=1, seeds=(1, 2), pretrained=True, pretrain_epochs=1,
                        pretrain_batch_size=8)
    train_methods(small, root, ["sspl"], n_seeds=2, jobs=1, progress=False)
    kept = _digest(root / "sspl")
    data.rename(tmp_path / "data2")
    root.rename(tmp_path / "runs2")
    moved = small.replace(data_root=str(tmp_path / "data2"))
    train_methods(moved, tmp_path / "runs2", ["sspl"], n_seeds=2, jobs=1)
    moved = moved.replace(encoders_checkpoint=str(tmp_path / "runs2" / "encoders.pt"))  # as train_methods sets it
    assert capsys.readouterr().out.count("finished run reused") == 2
    assert {k: v for k, v in _digest(tmp_path / "runs2" / "sspl").items() if k != "config.json"} == \
        {k: v for k, v in kept.items() if k != "config.json"}
    assert study_action(tmp_path / "runs2" / "sspl", moved) == "reuse"
    from sspl_lib.data.synthetic import generate_benchmark

    shutil.rmtree(tmp_path / "data2")
    generate_benchmark(tmp_path / "data2", seed=4, n_train=40, n_val=8, n_test=24, n_labeled=16, frame_size=64,
                       workers=1, chunk=16, progress=False)  # other data where the run's data was
    with pytest.raises(RunConflict, match=r"data_root: .*data2 \(train\.h5 and val\.h5: other data\)"):
        study_action(tmp_path / "runs2" / "sspl", moved)
    (tmp_path / "runs2" / "sspl" / "inputs.json").unlink()  # a run from before inputs.json: its stored paths
    with pytest.raises(RunConflict, match=r"encoders_checkpoint: .*runs/encoders\.pt' -> .*runs2/encoders\.pt'"):
        study_action(tmp_path / "runs2" / "sspl", moved)  # the encoders it names are gone: the paths decide


def test_paths_are_stored_relative_to_the_repository(tmp_path):
    """A moved checkout: config paths inside the repository are stored relative to it and compared resolved."""
    inside = SSPLConfig(data_root=str(REPO_ROOT / "data" / "synthetic" / "quick"),
                        encoders_checkpoint=str(REPO_ROOT / "runs" / "quick" / "encoders.pt"))
    p = inside.portable()
    assert (p.data_root, p.encoders_checkpoint) == ("data/synthetic/quick", "runs/quick/encoders.pt")
    assert same_path(p.data_root, inside.data_root)
    assert SSPLConfig(data_root=str(tmp_path)).portable().data_root == str(tmp_path)  # outside: absolute
    (tmp_path / "link").symlink_to(tmp_path)
    assert same_path(str(tmp_path / "link"), str(tmp_path)) and not same_path("data/a", "data/b")


def test_fit_never_overwrites_a_run(cfg, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    kept = _digest(run)
    with pytest.raises(RunConflict, match=r"already holds a run \(3 epochs\); resume it"):
        fit(cfg, run, progress=False)
    with pytest.raises(RunConflict, match=r"cannot resume this run.*seed: 2 -> 5"):
        fit(cfg.replace(seed=5), run, resume=True, progress=False)
    assert _digest(run) == kept


# ----------------------------------------------------------------------------- evaluation and the explorer
def test_checkpoints_are_checked_against_their_folder_and_method(cfg, reference, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(reference, root / "sspl")
    wo = root / "sspl_wo_pcm"
    shutil.copytree(reference, wo)  # a whole sspl run copied into the folder of another method
    ok = cfg.replace(seeds=(2,))
    with pytest.raises(runs.CheckpointError, match=r"sspl_wo_pcm/checkpoints/best\.pt: a run with use_pcm=True "
                                                   r"\(expected False\), not the method its folder 'sspl_wo_pcm'"):
        evaluate_methods(ok, root, ["sspl", "sspl_wo_pcm"], progress=False, controls=(), baselines=())
    ours = fit(cfg.replace(use_pcm=False, epochs=1), tmp_path / "wo", progress=False)
    assert ours
    shutil.copy(tmp_path / "wo" / "config.json", wo / "config.json")  # only the checkpoint is foreign now
    with pytest.raises(runs.CheckpointError, match=r"best\.pt and .*sspl_wo_pcm/config\.json disagree \(.*use_pcm"):
        load_models(root, {"sspl_wo_pcm": {2: wo}})
    res, _ = evaluate_methods(ok, root, ["sspl"], progress=False, controls=(), baselines=())
    assert res["sspl"]["single"]["n"] > 0
    # a checkpoint whose weights do not fit its config
    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    state = runs.load_checkpoint(bad / "checkpoints" / "best.pt")
    state["config"]["visual_dim"] = 24
    atomic_save(state, bad / "checkpoints" / "best.pt")
    (bad / "config.json").unlink()
    with pytest.raises(runs.CheckpointError, match=r"bad/checkpoints/best\.pt: its weights do not match its config"):
        runs.load_run(bad)


def test_explorer_says_when_it_shows_last_pt_and_escapes_ids(cfg, reference, bench, tmp_path):
    from sspl_lib.data.h5 import H5Writer, load_split
    from sspl_lib.explorer.app import Explorer

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "checkpoints" / "best.pt").unlink()
    data = tmp_path / "data"
    d = load_split(bench / "test_single.h5")
    ids = [f"<img src=x onerror=alert({i})>&" for i in range(len(d["ids"]))]
    with H5Writer(data / "test_single.h5") as w:
        w.append({k: (ids if k == "ids" else d[k]) for k in d if k != "attrs"})
    with pytest.warns(UserWarning, match="has no best.pt .*showing last.pt"):
        ex = Explorer(run, data_root=data, compare=[], centre_prior=False)
    assert "showing last.pt" in ex.ui.header.value and "last.pt" in ex.ui.header.value
    assert "<img" not in ex.ui.sample_id.value and "&lt;img src=x onerror=alert(0)&gt;&amp;" in ex.ui.sample_id.value
    ex.close()

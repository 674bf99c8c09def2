"""Progress a user sees while waiting: lines (count, rate, ETA) at most every few seconds, and for a study the
plan first, then every epoch of every run with an ETA, also from runs trained in parallel processes (a real
`python -m sspl_lib.experiments.study methods --jobs 2`)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from sspl_lib.paths import REPO_ROOT
from sspl_lib.progress_lines import ProgressLines, count, duration

TINY = ["epochs=2", "batch_size=8", "img_size=64", "visual_dim=16", "encoder_width=8", "audio_hidden=32", "out_dim=16",
        "proj_dim=32", "pred_hidden=16", "pcm_cycles=1", "val_samples=8", "threads=2", "pretrain_epochs=1",
        "pretrain_batch_size=8"]


def test_progress_lines_say_count_rate_and_eta_without_flooding(capsys):
    lines = ProgressLines("data", "train", 100, every=0.05)
    for _ in range(10):
        lines.update(10)
        time.sleep(0.03)
    lines.done()
    lines.done()  # once
    out = capsys.readouterr().out.splitlines()
    assert 2 <= len(out) <= 7, out  # not one line per update
    assert re.fullmatch(r"\[data\] train: \d+/100 samples \(\d+%\), [\d.]+ samples/s, ETA \d+ s", out[0]), out[0]
    assert re.fullmatch(r"\[data\] train: 100 samples in \d+ s \([\d.]+ samples/s\)", out[-1]), out[-1]
    assert duration(42) == "42 s" and duration(210) == "3.5 min" and duration(float("nan")) == "unknown"
    assert count(1, "run") == "1 run" and count(3, "run") == "3 runs"


def test_study_prints_the_plan_and_every_epoch_of_parallel_runs(tiny_benchmark, tmp_path):
    cmd = [sys.executable, "-m", "sspl_lib.experiments.study", "methods", "--methods", "sspl,ezvsl", "--jobs", "2",
           "--root", str(tmp_path / "runs"), "--set", f"data_root={tiny_benchmark}", *TINY]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"\[pretrain\] visual encoder: 1 epoch in .*\n", out), out
    plan = re.search(r"\[study\] plan: 2 runs to train \(2 methods x 1 seed: sspl, ezvsl; seed 1234\), 2 epochs each, "
                     r"2 at a time with 1 thread each: about (.+) \(seconds per epoch from a timed training step\)", out)
    assert plan and plan[1] != "unknown", out
    for run in ("sspl seed 1234", "ezvsl seed 1234"):  # trained in two worker processes, reported by this one
        for e in (1, 2):
            assert re.search(rf"\[{run}\] epoch {e}/2: train -?[\d.]+ val -?[\d.]+ cIoU [\d.]+ AUC [\d.]+ "
                             rf"\(\d+ s; ETA \d+ s, all runs \d+ s\)", out), (run, e, out)
        assert re.search(rf"\[study\] {run}: trained in \d+ s, best val cIoU [\d.]+", out), out
    assert out.index("[study] plan") < out.index("epoch 1/2")
    # a second call reuses both runs and trains nothing: no plan, no epoch lines
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "finished run reused" in again.stdout and "plan:" not in again.stdout


def test_history_watcher_reports_new_epochs_of_each_run_and_feeds_the_live_plot(tmp_path, capsys):
    """Runs trained elsewhere write their history.json after each epoch (runs.write_history); the watcher prints
    each new epoch once with the run's and all runs' ETA, and the live plot draws every run."""
    from sspl_lib.experiments.progress import HistoryWatcher, LivePlot
    from sspl_lib.experiments.runs import write_history

    def rec(e, t):
        return {"epoch": e, "train_loss": -0.5, "val_loss": -0.6, "val_ciou": 0.1 * e, "val_auc": 0.2, "lr": 1e-3,
                "time": t}

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    write_history([rec(1, 10.0)], a)  # an epoch trained before (a resume): not reported again
    live = LivePlot(display=False, every=0.0)
    watch = HistoryWatcher({"a seed 0": (a, 3), "b seed 0": (b, 3)}, workers=2, on_event=live)
    write_history([rec(1, 10.0), rec(2, 20.0)], a)
    write_history([rec(1, 30.0)], b)
    watch.poll()
    watch.poll()  # nothing new: nothing printed
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out  # all runs: the epochs left x the run's mean epoch time (else all runs'), / 2 processes
    assert out[0].startswith("[a seed 0] epoch 2/3: ") and out[0].endswith("(20 s; ETA 20 s, all runs 40 s)"), out
    assert out[1].startswith("[b seed 0] epoch 1/3: ") and out[1].endswith("(30 s; ETA 60 s, all runs 40 s)"), out
    assert set(live.histories) == {"a seed 0", "b seed 0"} and len(live.histories["a seed 0"]) == 2
    assert len(live.figure().axes[1].lines) == 2  # one validation curve per run
    watch.finished("a seed 0")
    assert watch.eta("b seed 0") == ("60 s", "60 s")

"""Preparation under faults: SIGKILL at random points, torn journal lines, a dead worker process, an image that
trips PIL's DecompressionBombError. Every time the final file equals an uninterrupted run's (ids in order, bytes)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl_lib.data.h5 import load_split
from sspl_lib.data.prepare import prepare_folder

N_ITEMS = 300
BROKEN = {7: "garbage jpg", 150: "no audio", 233: "garbage jpg"}


def make_src(root: Path, n: int = N_ITEMS) -> Path:
    """n items of 32-px jpg frames and 0.5 s wav clips (a few broken, to be skipped)."""
    src = root / "src"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for k in range(n):
        name = f"item{k:04d}"
        if BROKEN.get(k) == "garbage jpg":
            (src / "frames" / f"{name}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg" * 10)
        else:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / "frames" / f"{name}.jpg")
        if BROKEN.get(k) != "no audio":
            x = 0.3 * np.sin(2 * np.pi * (100 + 3 * k) * t) + 0.01 * rng.normal(size=t.size)
            sf.write(src / "audio" / f"{name}.wav", x.astype(np.float32), 16000)
    return src


def cli(src, out, *extra):
    return [sys.executable, "-m", "sspl_lib.data.prepare", "--src", str(src), "--out", str(out),
            "--frame-size", "32", "--workers", "2", "--chunk", "4", *extra]


def assert_same(ref: Path, out: Path) -> None:
    a, b = load_split(ref), load_split(out)
    assert b["ids"] == a["ids"]
    assert sorted(a) == sorted(b)
    for k in ("frames", "audio", "spects"):
        assert b[k].dtype == a[k].dtype and b[k].shape == a[k].shape and b[k].tobytes() == a[k].tobytes(), k
    for suffix in (".skipped.csv", ".report.csv"):
        assert out.with_name(out.stem + suffix).read_text() == ref.with_name(ref.stem + suffix).read_text()
    for suffix in (".journal", ".parts", ".partial"):
        assert not out.with_name(out.name + suffix).exists(), suffix


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(d.name))
    return pids


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    src = make_src(root)
    ref = root / "ref.h5"
    res = subprocess.run(cli(src, ref), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    d = load_split(ref)
    assert len(d["ids"]) == N_ITEMS - len(BROKEN) and d["ids"][:3] == ["item0000", "item0001", "item0002"]
    assert d["ids"] == sorted(d["ids"]) and d["frames"].shape == (N_ITEMS - len(BROKEN), 32, 32, 3)
    return src, ref


def kill_resume_finish(src: Path, out: Path, seed: int) -> None:
    """SIGKILL `prepare` at 10 seeded points (8 while items are prepared: when the journal reaches k lines,
    + 0..30 ms; 2 while the final file is assembled), resume each time, then let it finish."""
    journal, partial = out.with_name(out.name + ".journal"), out.with_name(out.name + ".partial")
    n_lines = 1 + N_ITEMS // 4  # header + one line per chunk of 4 items
    rng = np.random.default_rng(seed)
    points = [("journal", int(k), float(rng.uniform(0, 0.03)))
              for k in np.sort(rng.choice(np.arange(2, n_lines - 8), 8, replace=False))]
    points += [("assembly", 0, float(rng.uniform(0, 0.05))) for _ in range(2)]
    lines_at_kill = []
    for kind, k, delay in points:
        stale = partial.stat().st_mtime_ns if partial.exists() else None  # left by an earlier assembly kill
        proc = subprocess.Popen(cli(src, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if (partial.exists() and partial.stat().st_mtime_ns != stale if kind == "assembly" else
                        journal.exists() and journal.read_bytes().count(b"\n") >= k):
                    time.sleep(delay)
                    break
                time.sleep(0.001)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL, (kind, k, "the run ended before the kill")
            lines_at_kill.append(journal.read_bytes().count(b"\n"))
            assert not out.exists()
            # the workers die with the run (no orphans left behind)
            deadline = time.monotonic() + 10
            while group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert group_alive(proc.pid) == []
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert lines_at_kill[-1] == n_lines  # the assembly kills came after every item was confirmed
    res = subprocess.run(cli(src, out), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "done" in res.stdout, res.stderr


def test_sigkill_at_10_random_points_then_resume_gives_the_same_file(reference, tmp_path):
    src, ref = reference
    kill_resume_finish(src, tmp_path / "k.h5", seed=20240611)
    assert_same(ref, tmp_path / "k.h5")


@pytest.mark.parametrize("damage", ["cut mid-line", "garbage appended", "line repeated", "bad checksum"])
def test_torn_journal_then_resume_gives_the_same_file(reference, tmp_path, damage):
    src, ref = reference
    out = tmp_path / "t.h5"
    journal = tmp_path / "t.h5.journal"
    r = prepare_folder(src, out, frame_size=32, workers=2, chunk=4, stop_after=40, progress=False)
    assert r.interrupted and not out.exists()
    data = journal.read_bytes()
    lines = data.splitlines(keepends=True)
    assert len(lines) == 11
    if damage == "cut mid-line":
        data = data[:-len(lines[-1]) // 2]
    elif damage == "garbage appended":
        data += bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8))
    elif damage == "line repeated":
        data += lines[-1] + lines[-2]
    else:
        data = data[:-len(lines[-1])] + b"0" * 8 + lines[-1][8:]
    journal.write_bytes(data)
    with pytest.warns(UserWarning, match=r"t\.h5\.journal: \d+ torn or inconsistent line"):
        r = prepare_folder(src, out, frame_size=32, workers=2, chunk=4, stop_after=50, progress=False)
    assert r.interrupted and journal.read_bytes().startswith(b"".join(lines[:10]))
    res = subprocess.run(cli(src, out), capture_output=True, text=True, timeout=300)  # the CLI finishes it
    assert res.returncode == 0, res.stderr
    assert_same(ref, out)


def test_a_dead_worker_process_costs_no_item(reference, tmp_path):
    """A worker SIGKILLed mid-run (as the OOM killer would): its items are redone alone, nothing is lost."""
    src, ref = reference
    out = tmp_path / "w.h5"
    journal = tmp_path / "w.h5.journal"
    proc = subprocess.Popen(cli(src, out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and killed is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 10:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids:
                killed = int(kids[0])
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.002)
    stdout, _ = proc.communicate(timeout=300)
    assert killed is not None and proc.returncode == 0 and "done" in stdout
    assert_same(ref, out)


def test_decompression_bomb_is_a_logged_skip_and_resume_does_not_crash(tmp_path):
    src = tmp_path / "bomb"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    t = np.arange(16000) / 16000
    for k in range(6):
        if k == 2:  # 13400 x 13400 = 179.56 M pixels > 2 x PIL's default MAX_IMAGE_PIXELS: DecompressionBombError
            Image.new("1", (13400, 13400)).save(src / "frames" / "b2.png")
        else:
            Image.fromarray(np.full((24, 24, 3), 40 * k, np.uint8)).save(src / "frames" / f"b{k}.png")
        sf.write(src / "audio" / f"b{k}.wav", (0.5 * np.sin(2 * np.pi * (300 + 50 * k) * t)).astype(np.float32), 16000)
    assert Image.MAX_IMAGE_PIXELS == 89478485  # the default limit, untouched
    out = tmp_path / "b.h5"
    r = prepare_folder(src, out, frame_size=24, workers=1, chunk=2, stop_after=4, progress=False)
    assert r.interrupted and [i for i, _ in r.skipped] == ["b2"]
    r = prepare_folder(src, out, frame_size=24, workers=2, chunk=2, progress=False)  # resume past the bomb
    assert not r.interrupted and r.n_ok == 5 and [i for i, _ in r.skipped] == ["b2"]
    reason = dict(r.skipped)["b2"]
    assert "b2.png" in reason and "DecompressionBombError" in reason and "179560000 pixels" in reason
    assert load_split(out)["ids"] == ["b0", "b1", "b3", "b4", "b5"]
    with open(tmp_path / "b.skipped.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "reason"] and rows[1][0] == "b2" and "DecompressionBombError" in rows[1][1]
    r = prepare_folder(src, out, frame_size=24, workers=1, chunk=2, progress=False)  # a rerun does not crash either
    assert r.n_ok == 5 and load_split(out)["ids"] == ["b0", "b1", "b3", "b4", "b5"]


def test_an_undecodable_file_name_is_a_logged_skip(tmp_path):
    """A file name with bytes that are not UTF-8 (possible on Linux) cannot be an HDF5 id: skipped, not a crash."""
    src = tmp_path / "names"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    t = np.arange(16000) / 16000
    for stem in ("n0", "n1", "n2"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(src / "frames" / f"{stem}.png")
        sf.write(src / "audio" / f"{stem}.wav", (0.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    for sub, ext in (("frames", ".png"), ("audio", ".wav")):
        os.rename(os.fsencode(src / sub / f"n1{ext}"), os.fsencode(src / sub) + b"/n1-\xff\xfe" + ext.encode())
    out = tmp_path / "n.h5"
    res = subprocess.run(cli(src, out), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "2 items written, 1 skipped" in res.stdout, res.stderr
    assert load_split(out)["ids"] == ["n0", "n2"]
    with open(tmp_path / "n.skipped.csv", encoding="utf-8") as f:
        assert list(csv.reader(f))[1] == ["n1-\\udcff\\udcfe", "its file name is not valid UTF-8 (rename it)"]

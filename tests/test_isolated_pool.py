"""isolated_map with real processes: answers in order, an exception or a self-kill is that item's on_death, and a
worker SIGKILLed in the middle of sending a large answer costs no item and hangs nothing."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sspl_lib.data.isolated_pool import isolated_map

BIG = 8 << 20  # an answer much larger than a pipe's buffer: its sender blocks mid-message until it is read


def _guarded(fn, seconds=120):
    """fn() in a thread; a hang fails the test instead of blocking the suite."""
    out = {}
    t = threading.Thread(target=lambda: out.update(r=fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"isolated_map hung for {seconds} s"
    return out["r"]


def _work(a):
    if a == "raise":
        raise ValueError("bad item")
    if a == "suicide":
        os.kill(os.getpid(), signal.SIGKILL)
    return a * 2


def test_answers_in_order_and_only_a_failing_item_is_its_on_death():
    args = [1, 2, "raise", 3, "suicide", *range(4, 30)]
    deaths = []

    def died(a, how):
        deaths.append((a, how))
        return "dead"

    got = _guarded(lambda: list(isolated_map(_work, args, workers=3, on_death=died)))
    assert got == [2, 4, "dead", 6, "dead", *[2 * k for k in range(4, 30)]]
    assert deaths == [("raise", "ValueError: bad item"), ("suicide", "killed by SIGKILL")]


def test_a_worker_killed_mid_answer_costs_no_item(tmp_path):
    def work(k):
        if k == 1:
            (tmp_path / f"pid{os.getpid()}").touch()
            time.sleep(0.3)  # item 0 answers first, so the consumer below holds item 1's answer unread
            return bytes([k]) * BIG
        return bytes([k]) * 16

    def run():
        got, killed = [], []
        for k, r in enumerate(isolated_map(work, range(12), workers=2, on_death=lambda a, how: pytest.fail(how))):
            got.append(r)
            if k == 0:
                deadline = time.monotonic() + 30
                while not (pids := list(tmp_path.glob("pid*"))) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.5)  # the worker is now blocked in the middle of its answer
                pid = int(pids[0].name[3:])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return got, killed

    got, killed = _guarded(run)
    assert len(killed) == 1
    assert got == [bytes([1]) * BIG if k == 1 else bytes([k]) * 16 for k in range(12)]
    assert len(list(tmp_path.glob("pid*"))) == 2  # item 1 ran twice: in the killed worker, then alone


def test_closing_early_stops_the_workers():
    it = isolated_map(lambda a: (time.sleep(0.05 if a else 0), os.getpid())[1], range(100), workers=2,
                      on_death=lambda a, how: None)
    pid = next(it)
    it.close()
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped by close()

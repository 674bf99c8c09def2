"""An ordered process-pool map that survives workers dying: `isolated_map(fn, args, workers, on_death)`
redoes the item of a dead worker alone, so only an item that kills its own process gives `on_death(a, how)`.
Each worker answers on its own pipe: one killed mid-answer tears only that pipe (a shared result queue, as in
ProcessPoolExecutor, leaves its reader blocked on the torn message forever), and the parent starts no threads
that could hold a lock across a fork."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait


def die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _answer(conn, fn, a) -> None:
    try:
        conn.send(("ok", fn(a)))
    except Exception as e:  # an exception fn let through, or a result that does not pickle (nothing sent yet)
        conn.send(("error", f"{type(e).__name__}: {e}"))


def _child(fn, a, conn) -> None:
    die_with_parent()
    _answer(conn, fn, a)


def _serve(fn, conn, inherited) -> None:
    """A worker: answers `(a,)` messages until `None` or the parent's end closes."""
    die_with_parent()
    for c in inherited:  # the parent's ends of the other workers' pipes, copied by the fork
        c.close()
    try:
        while (msg := conn.recv()) is not None:
            _answer(conn, fn, msg[0])
    except EOFError:
        pass


def _how(proc) -> str:
    code = proc.exitcode
    return f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"


def run_alone(fn: Callable, a, on_death: Callable, ctx=None):
    """`fn(a)` in a fresh forked process; `on_death(a, how)` when it fails or dies without an answer."""
    ctx = ctx or mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, a, send))
    proc.start()
    send.close()
    try:
        kind, value = recv.recv()
    except (EOFError, OSError):  # no answer, or a torn one
        kind, value = None, None
    proc.join()
    recv.close()
    if kind == "ok":
        return value
    return on_death(a, value if kind == "error" else _how(proc))


class _Worker:
    """One forked process with its own duplex pipe and at most one item `job = (k, a)` in flight."""

    def __init__(self, ctx, fn, others: list[_Worker]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(fn, child, [w.conn for w in others]))
        self.proc.start()
        child.close()  # before any other fork: the worker's death is then EOF here
        self.job = None

    def give(self, k: int, a) -> bool:
        self.job = (k, a)
        try:
            self.conn.send((a,))
            return True
        except OSError:  # it died idle
            return False

    def take(self, dead: bool):
        """The answer `(kind, value)`, or None for a worker that died without a whole one."""
        if dead:  # what it sent before dying, never a wait on a torn message
            os.set_blocking(self.conn.fileno(), False)
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def close(self, wait_s: float) -> None:
        if self.job is None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(wait_s if self.job is None else 0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class _Pool:
    def __init__(self, fn: Callable, workers: int, on_death: Callable):
        self.fn, self.n, self.on_death = fn, workers, on_death
        self.ctx = mp.get_context("fork")
        self.workers: list[_Worker] = []
        self.done: dict[int, object] = {}  # answers by index, not yet yielded
        self.orphans: list[tuple[int, object]] = []  # items of dead workers, to redo alone

    def can_give(self) -> bool:
        """An idle or a new worker, and no orphan waiting (new items wait while orphans are redone alone)."""
        return not self.orphans and (len(self.workers) < self.n or any(w.job is None for w in self.workers))

    def give(self, k: int, a) -> None:
        free = [w for w in self.workers if w.job is None]
        if not free:
            self.workers.append(_Worker(self.ctx, self.fn, self.workers))
            free = self.workers[-1:]
        if not free[0].give(k, a):
            self._bury(free[0])

    def collect(self) -> bool:
        """Answers of the busy workers (waits for one at least); orphans redone alone once none is busy."""
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
            for k, a in sorted(self.orphans, key=lambda o: o[0]):
                self.done[k] = run_alone(self.fn, a, self.on_death, self.ctx)
            had, self.orphans = bool(self.orphans), []
            return had
        ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
        for w in busy:
            if w.conn in ready or w.proc.sentinel in ready:
                dead = w.proc.sentinel in ready
                if (answer := w.take(dead)) is None:
                    self._bury(w)
                    continue
                (k, a), (kind, value) = w.job, answer
                self.done[k] = value if kind == "ok" else self.on_death(a, value)
                w.job = None
                if dead:  # it answered, then died
                    self._bury(w)
        return True

    def _bury(self, w: _Worker) -> None:
        if w.job is not None:
            self.orphans.append(w.job)
        w.close(0)
        w.job = None
        self.workers.remove(w)

    def close(self) -> None:
        for w in self.workers:
            w.close(10)
        self.workers = []


def isolated_map(fn: Callable, args: Iterable, *, workers: int, on_death: Callable) -> Iterator:
    """`fn(a)` for each `a` of `args`, in order, in `workers` forked processes (at most 4 x workers ahead)."""
    pool = _Pool(fn, max(1, int(workers)), on_death)
    items, k = enumerate(args), 0
    item = next(items, None)
    try:
        while True:
            while k in pool.done:
                yield pool.done.pop(k)
                k += 1
            while item is not None and item[0] < k + 4 * pool.n and pool.can_give():
                pool.give(*item)
                item = next(items, None)
            if not pool.collect():
                return
    finally:
        pool.close()

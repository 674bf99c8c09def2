"""An ordered process-pool map that survives workers dying: `isolated_map(fn, args, workers, on_death)`
redoes the items in flight alone, so only an item that kills its own process gives `on_death(a, how)`."""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


def die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(fn, a, conn) -> None:
    die_with_parent()
    conn.send(fn(a))


def run_alone(fn: Callable, a, on_death: Callable, ctx=None):
    """`fn(a)` in a fresh forked process; `on_death(a, how)` when that process dies without an answer."""
    ctx = ctx or mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, a, send))
    proc.start()
    send.close()
    try:
        result, got = recv.recv(), True
    except EOFError:
        result, got = None, False
    proc.join()
    recv.close()
    if got:
        return result
    code = proc.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
    return on_death(a, how)


def _abandon(ex: ProcessPoolExecutor) -> None:
    """Drop a broken pool without waiting (a worker killed holding a queue lock can block a shutdown)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()


def isolated_map(fn: Callable, args: Iterable, *, workers: int, on_death: Callable) -> Iterator:
    """`fn(a)` for each `a` of `args`, in order, in `workers` processes."""
    ctx = mp.get_context("fork")
    workers = max(1, int(workers))
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent)

    def submit(a):
        try:
            return ex.submit(fn, a)
        except BrokenProcessPool:  # a worker died since the last result
            return None

    def result(a, fut):
        try:
            if fut is None:
                raise BrokenProcessPool
            return fut.result()
        except BrokenProcessPool:
            raise
        except Exception as e:  # an exception fn let through, or an unpicklable result
            return on_death(a, f"{type(e).__name__}: {e}")

    pending, todo = deque(), iter(args)
    try:
        while True:
            while len(pending) < 4 * workers and (a := next(todo, _END)) is not _END:
                pending.append((a, submit(a)))
            if not pending:
                return
            a, fut = pending.popleft()
            try:
                r = result(a, fut)
            except BrokenProcessPool:  # redo what was in flight: each item alone, then a fresh pool
                _abandon(ex)
                for b, f in [(a, fut), *pending]:
                    try:
                        r = result(b, f)
                    except BrokenProcessPool:
                        r = run_alone(fn, b, on_death, ctx)
                    yield r
                pending.clear()
                ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent)
                continue
            yield r
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


_END = object()

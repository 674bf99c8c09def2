"""A profile's methods over its study seeds: every (method, seed) run trained in parallel processes, all scored.

    histories = train_methods(cfg, root, ["sspl", "sspl_wo_pcm", "ezvsl", "sacl"], n_seeds=0, jobs=2)
    results, data = evaluate_methods(cfg, root, ["sspl", "ezvsl", "ezvsl_ogl"], n_seeds=0)
    write_results(results, root / "results.json")  # experiments.results: each score the mean over seeds, with its std

Run folders: `runner.method_runs` (the run of `cfg.seed` is `<root>/<method>/`, the other seeds' under
`<root>/seeds/<method>/seed<k>/`). A derived method (`Variant.train_as`, e.g. ezvsl_ogl) trains nothing and is
scored on the runs of the method it names, with its `eval_overrides` set on the loaded models.

Parallel training: each run trains in a forked worker process (`data.isolated_pool`) with `threads` torch
threads; what a run computes depends on its configuration, seed and thread count only, never on which process
or how many jobs train it. A finished run (best.pt, every epoch, the same configuration up to the execution-only
settings `config.RUN_ONLY`) is reused, an interrupted one resumed. A job that fails (an exception, or its
process dies) does not stop the others: each failure is printed with its run folder as it comes, and
`TrainingFailed` names them all at the end.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..config import SSPLConfig
from ..distributed import choose_device
from ..data.isolated_pool import isolated_map
from ..paths import resolve, shown
from .evaluate import evaluate_profile
from .runner import METHODS, clear_stale, method_runs
from .runs import is_complete, is_run, read_history
from .train import fit, needs_pretraining


class TrainingFailed(RuntimeError):
    """One or more runs of `train_methods` failed; the message names each run folder and its error."""


@dataclass(frozen=True)
class Job:
    method: str
    seed: int
    run_dir: Path
    cfg: SSPLConfig
    resume: bool = True


def job_threads(cfg: SSPLConfig, jobs: int) -> int:
    """Torch threads per job: the config's threads (0: every core) shared among `jobs` processes, at least 1."""
    return max(1, (cfg.threads or os.cpu_count() or 1) // max(1, int(jobs)))


def plan(cfg: SSPLConfig, root, methods, *, n_seeds: int = 1, threads: int | None = None,
         resume: bool = True) -> list[Job]:
    """The training jobs of `methods` x the first `n_seeds` study seeds (0: all); derived methods train nothing."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown} (choose from {tuple(METHODS)})")
    out = []
    for m in methods:
        v = METHODS[m]
        if v.train_as:
            continue
        for seed, run_dir in method_runs(root, m, cfg, n_seeds).items():
            run_cfg = cfg.replace(**v.overrides, seed=seed, **({} if threads is None else {"threads": threads}))
            out.append(Job(m, seed, run_dir, run_cfg, resume))
    return out


def run_job(job: Job, on_event=None) -> dict:
    """Train one run (`fit`), catching its error: {"history", "seconds", "error" (None or the traceback)}."""
    t0 = time.perf_counter()
    try:
        history = fit(job.cfg, job.run_dir, resume=job.resume, progress=False, on_event=on_event)
        return {"history": history, "seconds": time.perf_counter() - t0, "error": None}
    except Exception as e:  # noqa: BLE001 - reported with the run folder; the other jobs go on
        return {"history": [], "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}


def train_methods(cfg: SSPLConfig, root, methods, *, n_seeds: int = 1, jobs: int = 2, threads: int | None = None,
                  resume: bool = True, on_event=None, progress: bool = True) -> dict[str, dict[int, list[dict]]]:
    """Train (or reuse) every run of `methods` x the first `n_seeds` study seeds (0: all) under `root`;
    returns {method: {seed: history}}. jobs: runs trained at once, each in its own process (1: one after the
    other in this process, with `on_event` passed to `fit`, e.g. a LivePlot); runs start in the order of
    `methods`, then of the seeds (list the slowest methods first: the jobs then end together); threads: torch
    threads per run (default `job_threads(cfg, jobs)`). On a GPU the runs train one at a time. Small encoders without a checkpoint are pretrained first (cached).
    Raises TrainingFailed at the end when a run failed (the others are trained)."""
    root = resolve(root)
    if jobs > 1 and choose_device(cfg.device).type != "cpu":  # a GPU: one run at a time uses it (and CUDA
        jobs = 1  # cannot be used in a forked process once the parent has initialized it)
    if needs_pretraining(cfg):
        from .pretrain import pretrain

        cfg = cfg.replace(encoders_checkpoint=str(pretrain(cfg, root, progress=False)))
    todo = plan(cfg, root, methods, n_seeds=n_seeds, threads=threads or job_threads(cfg, jobs), resume=resume)
    out: dict = {}
    pending = []
    for job in todo:
        clear_stale(job.run_dir, job.cfg)
        if is_complete(job.run_dir, job.cfg.epochs):
            out.setdefault(job.method, {})[job.seed] = read_history(job.run_dir)
            if progress:
                print(f"[study] {job.method} seed {job.seed}: finished run reused ({shown(job.run_dir)})", flush=True)
        else:
            pending.append(job)
    if progress and pending:
        print(f"[study] training {len(pending)} runs, {min(jobs, len(pending))} at a time, "
              f"{pending[0].cfg.threads} threads each", flush=True)

    def died(job: Job, how: str) -> dict:
        return {"history": [], "seconds": float("nan"), "error": f"the training process died ({how})"}

    if jobs <= 1:
        done = (run_job(job, on_event) for job in pending)
    else:
        done = isolated_map(run_job, pending, workers=jobs, on_death=died)
    failed = []
    for job, r in zip(pending, done):
        if r["error"] is not None:
            failed.append((job, r["error"]))
            print(f"[study] {job.method} seed {job.seed}: FAILED ({shown(job.run_dir)}): "
                  f"{r['error'].splitlines()[0]}", flush=True)
            continue
        out.setdefault(job.method, {})[job.seed] = r["history"]
        if progress:
            best = max(r["history"], key=lambda h: (h["val_ciou"], h["val_auc"])) if r["history"] else {}
            print(f"[study] {job.method} seed {job.seed}: trained in {r['seconds']:.0f} s, best val cIoU "
                  f"{best.get('val_ciou', float('nan')):.3f} ({shown(job.run_dir)})", flush=True)
    if failed:
        lines = "\n".join(f"  {j.method} seed {j.seed} ({j.run_dir}): {err.strip()}" for j, err in failed)
        raise TrainingFailed(f"{len(failed)} of {len(pending)} runs failed (the others finished):\n{lines}")
    return {m: out[m] for m in methods if m in out}


def seed_runs(root, methods, cfg: SSPLConfig, n_seeds: int = 0) -> dict[str, dict[int, Path]]:
    """{method: {seed: run folder}} of the trained runs (a checkpoint) among the first `n_seeds` study seeds
    (0: all) of each method; a method without any is left out with a message."""
    out = {}
    for m in methods:
        runs = {s: d for s, d in method_runs(root, m, cfg, n_seeds).items() if is_run(d)}
        if runs:
            out[m] = runs
        else:
            print(f"[study] {m}: no trained run under {shown(resolve(root))}, skipped")
    return out


def evaluate_methods(cfg: SSPLConfig, root, methods, *, n_seeds: int = 0, **kw) -> tuple[dict, dict]:
    """`evaluate_profile` of every trained run of `methods` (`seed_runs`) on the profile's test splits; a derived
    method is scored on its source's runs with its `eval_overrides`. Keywords go to evaluate_profile."""
    runs = seed_runs(root, methods, cfg, n_seeds)
    over = {m: dict(METHODS[m].eval_overrides) for m in runs if METHODS[m].eval_overrides}
    return evaluate_profile(root, cfg.data_root, models=runs, eval_overrides=over, **kw)

"""A profile's methods over its study seeds: every (method, seed) run trained in parallel processes, all scored.

    histories = train_methods(cfg, root, ["sspl", "sspl_wo_pcm", "ezvsl", "sacl"], n_seeds=0, jobs=2)
    results, data = evaluate_methods(cfg, root, ["sspl", "ezvsl", "ezvsl_ogl"], n_seeds=0)
    write_results(results, root / "results.json")  # experiments.results: each score the mean over seeds, with its std

Run folders: `runner.method_runs` (the run of `cfg.seed` is `<root>/<method>/`, the other seeds' under
`<root>/seeds/<method>/seed<k>/`). A derived method (`Variant.train_as`, e.g. ezvsl_ogl) trains nothing and is
scored on the runs of the method it names, with the test-time map settings `Variant.test_map`.
`evaluate_profile` scores every loaded run, its audio controls and the baselines on a data root's test splits
(each split's encoder outputs computed once for the models that share the encoders: `features.SharedFeatures`).

Parallel training: each run trains in a forked worker process (`data.isolated_pool`) with `threads` torch
threads; what a run computes depends on its configuration, seed and thread count only, never on which process
or how many jobs train it. A finished run (best.pt, every epoch, the same configuration up to the execution-only
settings `config.RUN_ONLY`) is reused, an interrupted one resumed; a finished run asked for with a longer
schedule (more epochs, e.g. `papermill -p epochs 100`) is trained further in its folder from its last.pt.
A folder that holds a run of any other configuration is never deleted: that job is refused
(`provenance.RunConflict`: what differs and what to do). A job that fails or is refused (an exception, or its
process dies) does not stop the others: each is printed with its run folder as it comes, and `TrainingFailed`
names them all at the end.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import SSPLConfig
from ..distributed import choose_device
from ..data.isolated_pool import isolated_map
from ..paths import resolve, shown
from .evaluate import (BASELINES, evaluate_baseline, evaluate_model, find_listen_splits, find_test_splits,
                       load_eval_split)
from .features import SharedFeatures
from .provenance import RunConflict, study_action
from .runner import METHODS, method_runs
from .runs import is_run, load_run, read_history
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
    allow_longer: bool = False  # a finished run asked for with more epochs: trained further in its folder


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
        history = fit(job.cfg, job.run_dir, resume=job.resume, allow_longer=job.allow_longer, progress=False,
                      on_event=on_event)
        return {"history": history, "seconds": time.perf_counter() - t0, "error": None}
    except Exception as e:  # noqa: BLE001 - reported with the run folder; the other jobs go on
        return {"history": [], "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}


def _triage(todo: list[Job], progress: bool) -> tuple[dict, list[Job], list]:
    """({method: {seed: history}} of the finished runs reused, the jobs to train, [(job, error)] refused)."""
    out: dict = {}
    pending, failed = [], []
    for job in todo:
        try:
            action = study_action(job.run_dir, job.cfg)
        except RunConflict as e:  # another run in the folder: refused and named at the end, the folder kept
            failed.append((job, f"RunConflict: {e}"))
            print(f"[study] {job.method} seed {job.seed}: REFUSED: {e}", flush=True)
            continue
        if action == "reuse":
            out.setdefault(job.method, {})[job.seed] = read_history(job.run_dir)
        else:
            pending.append(dataclasses.replace(job, allow_longer=action == "longer"))
        if progress and action in ("reuse", "longer"):
            what = "finished run reused" if action == "reuse" else f"run trained on to {job.cfg.epochs} epochs"
            print(f"[study] {job.method} seed {job.seed}: {what} ({shown(job.run_dir)})", flush=True)
    return out, pending, failed


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
    out, pending, failed = _triage(todo, progress)
    if progress and pending:
        print(f"[study] training {len(pending)} runs, {min(jobs, len(pending))} at a time, "
              f"{pending[0].cfg.threads} threads each", flush=True)

    def died(job: Job, how: str) -> dict:
        return {"history": [], "seconds": float("nan"), "error": f"the training process died ({how})"}

    if jobs <= 1:
        done = (run_job(job, on_event) for job in pending)
    else:
        done = isolated_map(run_job, pending, workers=jobs, on_death=died)
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
        raise TrainingFailed(f"{len(failed)} of {len(todo)} runs failed (the others finished):\n{lines}")
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
    method is scored on its source's runs with its `test_map` settings. Keywords go to evaluate_profile."""
    runs = seed_runs(root, methods, cfg, n_seeds)
    maps = {m: dict(METHODS[m].test_map) for m in runs if METHODS[m].test_map}
    return evaluate_profile(root, cfg.data_root, models=runs, test_maps=maps,
                            expect={m: method_fields(cfg, m) for m in runs}, **kw)


def method_fields(cfg: SSPLConfig, method: str) -> dict:
    """The fields that tell the methods apart (those any method sets), as `method` sets them on `cfg`: a run
    folder of that method must hold a checkpoint with these values."""
    keys = sorted({k for v in METHODS.values() for k in v.overrides})
    want = cfg.replace(**METHODS[METHODS[method].train_as or method].overrides)
    return {k: getattr(want, k) for k in keys}


def load_models(run_root, models, device="cpu", expect: dict | None = None) -> dict[str, dict[int, object]]:
    """{name: {seed: model}}: `models` names run folders under `run_root` (the seed read from the run), or maps
    names to {seed: run folder}. Folders without a run are skipped with a message; a run without best.pt, or
    whose checkpoint disagrees with its folder or with `expect` {name: {field: value}}, raises (`runs.load_run`)."""
    runs = dict(models) if isinstance(models, dict) else {m: {None: resolve(run_root) / m} for m in models}
    loaded: dict = {}
    for name, per_seed in runs.items():
        for seed, run_dir in per_seed.items():
            if not is_run(run_dir):
                print(f"[evaluate] {name}" + ("" if seed is None else f" seed {seed}") + f": skipped (no trained run "
                      f"in {shown(run_dir)})")
                continue
            m = load_run(run_dir, device=device, expect=(expect or {}).get(name))
            loaded.setdefault(name, {})[int(m.cfg.seed if seed is None else seed)] = m
    return loaded


def evaluate_profile(run_root, data_root, *, models=("sspl", "sspl_wo_pcm"), splits=None, batch_size: int = 100,
                     device="auto", seed: int = 0, controls=("shuffled", "silent"), protocol=("fixed", "median"),
                     amp: str = "none", progress: bool = True, baselines=BASELINES, test_maps: dict | None = None,
                     share_features: bool = True, expect: dict | None = None) -> tuple[dict, dict]:
    """Every trained model of a profile's run folder, its audio controls and the baselines on the test splits.

    models: names of run folders under `run_root`, or {name: {seed: run folder}} (a method's runs over seeds,
    `experiments.study.seed_runs`); missing runs are skipped with a message. splits: short names of
    `find_test_splits(data_root)` and `find_listen_splits` (swap, extended; default: all). test_maps:
    {name: {setting: value}} of that name's test-time map (`dataclasses.replace` of its models' method; a derived
    entry such as ezvsl_ogl: {"ogl_alpha": 0.4}).
    Returns (results {model: {split: evaluate result}}, test sets {split: TestSet}): a model's result is that of
    its first seed's run, with "per_seed" {seed: evaluate result} of every run; the audio controls of a model are
    named `<model>_<mode>_audio`. `baselines`: of `BASELINES`; "feature_l2norm" uses the first loaded model's
    visual encoder (skipped when no run is loaded). share_features: compute each split's encoder outputs once for
    the models whose encoders have the same weights (`SharedFeatures`; the same numbers, less time). expect:
    {name: {config field: value}} each of that name's checkpoints must hold (`method_fields`)."""
    dev = choose_device(device)
    files = find_test_splits(data_root) | find_listen_splits(data_root)
    if not files:
        raise FileNotFoundError(f"{resolve(data_root)}: no test split (test.h5 or test_<name>.h5); prepare the data "
                                "first (notebooks/01_data_preparation.ipynb)")
    data = {s: load_eval_split(files[s]) for s in (splits or files)}
    loaded = load_models(run_root, models, dev, expect)
    first_model = next((m for per in loaded.values() for m in per.values()), None)
    results: dict = {}
    for s, d in data.items():
        t0 = time.perf_counter()
        shared = SharedFeatures(d, batch_size=batch_size, device=dev, amp=amp) if share_features else None
        for name, per_seed in loaded.items():
            for a in ("matched", *controls):
                key = name if a == "matched" else f"{name}_{a}_audio"
                runs = {k: evaluate_model(m, None, data=d, batch_size=batch_size, device=dev, protocol=protocol,
                                          audio=a, seed=seed, amp=amp, shared=shared,
                                          method=replace(m.method, **(test_maps or {}).get(name, {})))
                        for k, m in per_seed.items()}
                results.setdefault(key, {})[s] = {**next(iter(runs.values())), "per_seed": runs}
        size = next(iter(results.values()))[s]["heatmaps"].shape[-1] if loaded else 14  # the models' grid
        for b in baselines:
            if b == "feature_l2norm" and first_model is None:
                continue
            results.setdefault(b, {})[s] = evaluate_baseline(b, data=d, size=size, protocol=protocol, seed=seed,
                                                             model=first_model, batch_size=batch_size, device=dev)
        if progress:
            print(f"[evaluate] {s}: {d.n} samples, {len(results)} entries scored ({time.perf_counter() - t0:.0f} s)")
    names = list(models)
    first = [m for m in names if m in results] + [b for b in baselines if b in results]
    return {k: results[k] for k in first + [k for k in results if k not in first]}, data

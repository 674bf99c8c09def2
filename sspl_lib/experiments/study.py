"""The experiment orchestrator (docs/experiments.md): a study's job list trained (`train_jobs`), scored into
records and aggregated one way, for the method comparison, the ablation and the seed study alike.

    python -m sspl_lib.experiments.study methods|seeds|ablation --profile quick [--jobs 2] [--set epochs=1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import traceback
from dataclasses import asdict, replace

from ..cli import HelpFormat
from ..config import SSPLConfig
from ..data.isolated_pool import isolated_map
from ..data.preflight import MissingFiles, check_profile_files
from ..distributed import choose_device
from ..paths import RUNS_DIR, resolve, shown
from ..profiles import as_list, load_profile, parse_overrides
from ..progress_lines import duration
from .atomic import write_json
from .estimate import plan_line
from .evaluate import find_listen_splits, find_test_splits, load_eval_split
from .feature_cache import prepare_training
from .jobs import (METHODS, Budget, Job, Variant, ablation_variants, first_seeds, method_fields, method_folder,
                   methods, plan, study_folder, subset_root)
from .progress import HistoryWatcher
from .provenance import RunConflict, study_action
from .results import aggregate, records
from .runs import is_run, load_run, read_history
from .scoring import score
from .train import fit, needs_pretraining


class TrainingFailed(RuntimeError):
    """One or more jobs failed or were refused; the message names each run folder and its error."""


# ----------------------------------------------------------------------------- training the jobs
def label(job: Job) -> str:
    return f"{job.name} seed {job.seed}"


def run_job(job: Job, on_event=None) -> dict:
    """Train one job (`fit`), catching its error: {"history", "seconds", "error" (None or the traceback)}."""
    t0 = time.perf_counter()
    tagged = (lambda e: on_event({**e, "run": label(job)})) if on_event is not None else None
    try:
        history = fit(job.cfg, job.run_dir, resume=job.resume, allow_longer=job.allow_longer, progress=False,
                      on_event=tagged)
        return {"history": history, "seconds": time.perf_counter() - t0, "error": None}
    except Exception as e:  # noqa: BLE001 - reported with the run folder; the other jobs go on
        return {"history": [], "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}


def _triage(jobs: list[Job], progress: bool) -> tuple[dict, list, list]:
    """Every folder checked before anything trains: ({i: reused run}, [(i, job to train)], [(job, refusal)])."""
    done, pending, failed = {}, [], []
    for i, job in enumerate(jobs):
        try:
            action = study_action(job.run_dir, job.cfg)
        except RunConflict as e:  # another run in the folder: refused and named at the end, the folder kept
            failed.append((job, f"RunConflict: {e}"))
            print(f"[study] {job.name} seed {job.seed}: REFUSED: {e}", flush=True)
            continue
        if action == "reuse":
            done[i] = {"history": read_history(job.run_dir), "seconds": 0.0, "status": "cached"}
        else:
            pending.append((i, replace(job, allow_longer=action == "longer")))
        if progress and action in ("reuse", "longer"):
            what = "finished run reused" if action == "reuse" else f"run trained on to {job.cfg.epochs} epochs"
            print(f"[study] {job.name} seed {job.seed}: {what} ({shown(job.run_dir)})", flush=True)
    return done, pending, failed


def cache_features(jobs: list[Job], progress: bool = True) -> None:
    """The cached features the `feature_cache` jobs read, built here once before they start (a job only reads
    them); a job that fits its own encoders first (no encoders_checkpoint) builds its own."""
    for job in jobs:
        if job.cfg.feature_cache and not needs_pretraining(job.cfg):
            prepare_training(job.cfg, progress=progress)


def train_jobs(jobs: list[Job], *, workers: int = 1, on_event=None, progress: bool = True) -> list[dict]:
    """Train (or reuse) every job, `workers` at a time; TrainingFailed at the end names each failed one."""
    done, pending, failed = _triage(jobs, progress)
    todo = [job for _, job in pending]
    cache_features(todo, progress)
    if progress and todo:
        print(f"[study] {plan_line(todo, workers)}", flush=True)

    def died(job: Job, how: str) -> dict:
        return {"history": [], "seconds": float("nan"), "error": f"the training process died ({how})"}

    runs = (isolated_map(run_job, todo, workers=workers, on_death=died) if workers > 1 else
            (run_job(job, on_event) for job in todo))
    watch = HistoryWatcher({label(j): (j.run_dir, j.cfg.epochs) for j in todo}, workers=workers,
                           on_event=on_event if workers > 1 else None) if progress else contextlib.nullcontext()
    with watch:
        for (i, job), r in zip(pending, runs):
            if progress:
                watch.finished(label(job))
            if r["error"] is not None:
                failed.append((job, r["error"]))
                print(f"[study] {label(job)}: FAILED ({shown(job.run_dir)}): {r['error'].splitlines()[0]}", flush=True)
                continue
            done[i] = {"history": r["history"], "seconds": r["seconds"], "status": "trained"}
            if progress:
                best = max(r["history"], key=lambda h: (h["val_ciou"], h["val_auc"])) if r["history"] else {}
                print(f"[study] {label(job)}: trained in {duration(r['seconds'])}, best val cIoU "
                      f"{best.get('val_ciou', float('nan')):.3f} ({shown(job.run_dir)})", flush=True)
    if failed:
        lines = "\n".join(f"  {j.name} seed {j.seed} ({j.run_dir}): {err.strip()}" for j, err in failed)
        raise TrainingFailed(f"{len(failed)} of {len(jobs)} runs failed (the others finished):\n{lines}")
    return [done[i] for i in range(len(jobs))]


def study_encoders(cfg: SSPLConfig, root, progress: bool = True) -> str | None:
    """The small encoders a study's runs share: found under `root` or its parent, else pretrained."""
    if not needs_pretraining(cfg):
        return cfg.encoders_checkpoint
    from . import pretrain

    found = pretrain.find_encoders(cfg, [root, resolve(root).parent])
    if found is not None:
        if progress:
            print(f"[study] label-pretrained small encoders: {shown(found)} (same labeled data and settings)", flush=True)
        return str(found)
    return str(pretrain.pretrain(cfg, root, progress=progress))


def train_methods(cfg: SSPLConfig, root, names, *, n_seeds: int = 1, jobs: int = 2, threads: int | None = None,
                  resume: bool = True, on_event=None, progress: bool = True) -> dict[str, dict[int, list[dict]]]:
    """Train (or reuse) the methods' runs for the first `n_seeds` study seeds; {method: {seed: history}}."""
    if jobs > 1 and choose_device(cfg.device).type != "cpu":  # CUDA cannot be used in a forked process
        jobs = 1
    # one run trains in this process with every thread; forked runs get one share each (a forked process must not
    # use more OpenMP threads than one once this one has used them: GNU OpenMP would hang it)
    jobs = max(1, min(int(jobs), sum(not v.train_as for v in methods(names)) * len(first_seeds(cfg, n_seeds))))
    threads = threads or max(1, (cfg.threads or os.cpu_count() or 1) // jobs)
    enc = study_encoders(cfg, root, progress=progress)
    changes = {"threads": threads, **({"encoders_checkpoint": enc} if enc != cfg.encoders_checkpoint else {})}
    todo = plan(cfg, methods(names), first_seeds(cfg, n_seeds), method_folder(root, cfg.seed), changes=changes,
                resume=resume)
    out: dict = {}
    for job, r in zip(todo, train_jobs(todo, workers=jobs, on_event=on_event, progress=progress)):
        out.setdefault(job.name, {})[job.seed] = r["history"]
    return out


# ----------------------------------------------------------------------------- scoring the runs
def load_models(run_root, models, device="cpu", expect: dict | None = None) -> dict[str, dict[int, object]]:
    """{name: {seed: model}} of run folders; a folder without a run is skipped, a foreign checkpoint raises."""
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


def _score_variants(variants, runs: dict, data: dict, *, expect: dict | None = None, device="cpu", controls=None,
                   **kw) -> dict:
    """`scoring.score` of the runs {name: {seed: folder}} of `variants` under their audio modes."""
    models = load_models(None, runs, device, expect)
    audio = {v.name: v.audio if controls is None else ("matched", *controls) for v in variants}
    return score(models, data, audio=audio, test_maps={v.name: v.test_map for v in variants if v.test_map},
                 overrides={v.name: v.overrides for v in variants}, device=device, **kw)


def evaluate_methods(cfg: SSPLConfig, root, names, *, n_seeds: int = 0, splits=None, device="auto",
                     controls=("shuffled", "silent"), progress: bool = True, **kw) -> tuple[dict, dict]:
    """The methods' trained runs, their audio controls and the baselines on the test splits."""
    files = find_test_splits(cfg.data_root) | find_listen_splits(cfg.data_root)
    if not files:
        raise FileNotFoundError(f"{resolve(cfg.data_root)}: no test split (test.h5 or test_<name>.h5); prepare the "
                                "data first (notebooks/01_data_preparation.ipynb)")
    data = {s: load_eval_split(files[s]) for s in (splits or files)}
    variants, folder = methods(names), method_folder(root, cfg.seed)
    runs = {v.name: {s: folder(v.train_as or v.name, s) for s in first_seeds(cfg, n_seeds)} for v in variants}
    runs = {m: {s: d for s, d in per.items() if is_run(d)} for m, per in runs.items()}
    for m in (m for m, per in runs.items() if not per):
        print(f"[study] {m}: no trained run under {shown(resolve(root))}, skipped")
    trained = [v for v in variants if runs[v.name]]
    results = _score_variants(trained, {v.name: runs[v.name] for v in trained}, data, device=choose_device(device),
                             expect={v.name: method_fields(cfg, v.name) for v in trained}, controls=controls,
                             progress=progress, **kw)
    return results, data


# ----------------------------------------------------------------------------- a study with its own runs
def run_study(base: SSPLConfig, variants: list[Variant], seeds, root, budget: Budget | None = None, *,
              device="cpu", progress: bool = True) -> list[dict]:
    """Train (or reuse) and score every variant x seed in `<root>/<variant>/seed<k>`; returns the records."""
    source = {v.name: v.train_as or v.name for v in variants}
    orphans = sorted({f"{v!r} scores the runs of {s!r}" for v, s in source.items() if s not in source})
    if orphans:
        raise ValueError(f"derived variant {'; '.join(orphans)}: add that variant to the study")
    budget, root, seeds = budget or Budget(), resolve(root), as_list(seeds, "seeds", int)
    root.mkdir(parents=True, exist_ok=True)
    write_json({"budget": asdict(budget), "seeds": seeds, "variants": [asdict(v) for v in variants]},
               root / "study.json")
    shared = {"data_root": str(subset_root(budget, base, root)),
              "encoders_checkpoint": study_encoders(base, root, progress=progress)}
    folder = study_folder(root)
    todo = plan(base, variants, seeds, folder, changes={**budget.changes(), **shared})
    trained = {(j.name, j.seed): r for j, r in zip(todo, train_jobs(todo, progress=progress))}
    data = {s: load_eval_split(p, limit=budget.n_test) for s, p in find_test_splits(base.data_root).items()}
    runs = {v.name: {s: folder(source[v.name], s) for s in seeds} for v in variants}
    results = _score_variants(variants, runs, data, device=choose_device(device), baselines=(), progress=False)
    out = []
    for r in records(results):
        job = trained[(source[r["variant"]], r["seed"])]
        out.append({**r, "seconds": round(job["seconds"], 1), "status": job["status"]})
    return out


def seed_study(profile: str = "quick", seeds=None, *, root=None, audio=("matched", "shuffled"), device="cpu",
               progress: bool = True, **overrides) -> list[dict]:
    """The profile trained with each of its seeds at its own settings (runs/<profile>/seed_study/)."""
    base = load_profile(profile, **overrides)
    root = resolve(root) if root is not None else RUNS_DIR / profile / "seed_study"
    return run_study(base, [Variant("sspl", {}, audio=tuple(audio))], seeds or base.seeds, root, Budget(),
                     device=device, progress=progress)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sspl_lib.experiments.study", formatter_class=HelpFormat,
        description="Train the compared methods (notebook 02's runs), or run a seed study or the ablation (trained "
                    "and scored; records in <root>/records.json). Finished runs are reused, interrupted ones resumed.")
    p.add_argument("study", choices=("methods", "seeds", "ablation"),
                   help="methods: train --methods x the first --n-seeds study seeds into runs/<profile>/ (what "
                        "notebook 02 trains); seeds: SSPL over the seeds, scored; ablation: the paper's questions, scored")
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, values read as YAML (`python -m sspl_lib.experiments.train --help` lists "
                        "the keys)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="methods study: the methods, comma-separated or a JSON list (jobs.METHODS)")
    p.add_argument("--n-seeds", type=int, default=1, help="methods study: the first N study seeds of each method (0: all)")
    p.add_argument("--jobs", type=int, default=2, help="methods study: runs trained at once, each in its own process")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds / ablation studies: the seeds (default: the profile's)")
    p.add_argument("--grid", choices=("reduced", "full"), default="reduced", help="ablation budget")
    p.add_argument("--root", help="default runs/<profile> (methods), runs/<profile>/seed_study (seeds) or "
                                  "runs/<profile>/ablation (ablation)")
    return p


def main(argv=None):
    p = parser()
    a = p.parse_args(argv)
    over = parse_overrides(a.set)
    sub = {"methods": "", "seeds": "seed_study", "ablation": "ablation"}[a.study]
    root = resolve(a.root) if a.root else RUNS_DIR / a.profile / sub
    try:
        check_profile_files(load_profile(a.profile, **over), "train", f"profile {a.profile!r}")
    except MissingFiles as e:
        p.exit(2, f"{e}\nNothing was trained.\n")
    if a.study == "methods":
        return train_methods(load_profile(a.profile, **over), root, a.methods, n_seeds=a.n_seeds, jobs=a.jobs)
    if a.study == "seeds":
        recs, by = seed_study(a.profile, a.seeds, root=root, **over), ("variant", "split", "audio")
    else:
        base = load_profile(a.profile, **over)
        budget = Budget.full() if a.grid == "full" else Budget.reduced()
        recs, by = run_study(base, ablation_variants(base), a.seeds or base.seeds, root, budget), ("variant", "split")
    write_json(recs, root / "records.json")
    for row in aggregate(recs, by=by):
        print("  ".join(f"{row[k]}" for k in by), f"cIoU@0.5 {row['ciou']:.3f} ± {row['ciou_std']:.3f}",
              f"AUC {row['auc']:.3f} ± {row['auc_std']:.3f} ({len(row['seeds'])} seeds)")
    return recs


if __name__ == "__main__":
    main()

"""One runner for seed studies, ablations and method comparisons.

A study trains a base configuration with a few fields changed (a `Variant`: a label and its config
overrides) for each seed, into `<root>/<variant>/seed<k>`, and scores each run on the test splits. A finished
run (best.pt, full history, same config) is reused, an interrupted one resumed, one with a longer schedule
trained further; a folder holding a run of another configuration refuses the study before anything is trained
(`provenance.RunConflict`: the differences and what to do); no run is deleted. Each record carries the overrides it was trained with (never a name to decode):

    {"variant", "overrides", "seed", "split", "audio", "protocol", "ciou", "auc", "n", "seconds", "status"}

    python -m sspl_lib.experiments.runner seeds --profile quick            # the profile's seeds
    python -m sspl_lib.experiments.runner ablation --profile quick --grid full

`Budget.reduced()` (the notebook default) is a small, honest budget that fits `make reproduce`: fewer
epochs, training samples and test samples; `Budget.full()` trains with the profile's settings on all data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import SSPLConfig
from ..profiles import load_profile
from ..distributed import choose_device
from ..paths import RUNS_DIR, resolve
from .evaluate import evaluate_model, find_test_splits
from .atomic import write_json
from .provenance import RunConflict, study_action
from .runs import load_run

AUDIO_CONTROLS = ("matched", "shuffled", "silent")


@dataclass(frozen=True)
class Variant:
    name: str  # a label for tables and folders
    overrides: dict = field(default_factory=dict)  # config fields changed from the base
    audio: tuple = ("matched",)  # audio modes scored at test time
    train_as: str | None = None  # a derived entry: scores that method's runs (trains nothing itself)
    test_map: dict = field(default_factory=dict)  # settings of the method's test-time map (e.g. EZ-VSL's ogl_alpha)


@dataclass(frozen=True)
class Budget:
    """How much of the profile a study trains and tests with. None = the profile's own value; 0 = all data."""

    epochs: int | None = None
    batch_size: int | None = None
    n_train: int = 0  # first training clips used
    n_val: int | None = None  # validation samples for model selection (None: the profile's val_samples; 0: all)
    n_test: int = 0  # test samples per split
    label: str = "profile"

    @classmethod
    def reduced(cls, **kw) -> "Budget":
        return cls(**{**dict(epochs=2, batch_size=32, n_train=512, n_val=64, n_test=100, label="reduced"), **kw})

    @classmethod
    def full(cls, **kw) -> "Budget":
        return cls(**{**dict(n_val=0, label="full"), **kw})


# ----------------------------------------------------------------------------- methods under identical conditions
# Each method is the profile's configuration with these fields changed (same data, encoders, budget, selection).
METHODS = {
    "sspl": Variant("sspl", {}, audio=AUDIO_CONTROLS),
    "sspl_wo_pcm": Variant("sspl_wo_pcm", {"use_pcm": False}, audio=AUDIO_CONTROLS),
    "ezvsl": Variant("ezvsl", {"method": "ezvsl", "use_pcm": False}, audio=AUDIO_CONTROLS),
    "sacl": Variant("sacl", {"method": "sacl", "use_pcm": False}, audio=AUDIO_CONTROLS),
    # object-guided EZ-VSL (methods/ezvsl.py; gamma chosen on val: docs/methods.md)
    "ezvsl_gated": Variant("ezvsl_gated", {"method": "ezvsl_gated", "use_pcm": False, "ezvsl_gated_region": 0.5,
                                           "ezvsl_gated_gamma": 2.0}, audio=AUDIO_CONTROLS),
    # EZ-VSL's published test-time map (OGL) on the ezvsl runs
    "ezvsl_ogl": Variant("ezvsl_ogl", {"method": "ezvsl", "use_pcm": False}, audio=AUDIO_CONTROLS,
                         train_as="ezvsl", test_map={"ogl_alpha": 0.4}),
}


def study_seeds(cfg: SSPLConfig) -> list[int]:
    """The seeds of a profile's study: its `seed` first, then its `seeds` (quick: 1234, 1, 2)."""
    return [int(s) for s in dict.fromkeys([cfg.seed, *cfg.seeds])]


def method_runs(root, method: str, cfg: SSPLConfig, n_seeds: int = 1) -> dict[int, Path]:
    """{seed: run folder} of a method (`METHODS`) for the first `n_seeds` study seeds (0: all of them). The run of
    `cfg.seed` is `<root>/<method>/` (the one the explorer and figures read); another seed k's is
    `<root>/seeds/<method>/seed<k>/`. A derived method (`train_as`) names the runs of the method it scores."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {tuple(METHODS)})")
    if n_seeds < 0:
        raise ValueError(f"n_seeds={n_seeds}: expected 0 (every study seed) or a positive count")
    name = METHODS[method].train_as or method
    root = resolve(root)
    seeds = study_seeds(cfg)
    return {s: root / name if s == cfg.seed else root / "seeds" / name / f"seed{s}"
            for s in (seeds[:n_seeds] if n_seeds else seeds)}


# ----------------------------------------------------------------------------- the paper's ablation questions
QUESTIONS = ("pcm", "cycles", "streams", "scratch", "objective", "protocol", "audio")
# question -> (config fields its variants may change, the record field that names the compared setting)
QUESTION_FIELDS = {"pcm": ({"use_pcm"}, "variant"), "cycles": ({"pcm_cycles"}, "variant"),
                   "streams": ({"streams"}, "variant"), "scratch": ({"from_scratch"}, "variant"),
                   "objective": ({"use_pcm", "method"}, "variant"), "protocol": (set(), "protocol"),
                   "audio": (set(), "audio")}


def ablation_variants(base: SSPLConfig, questions=QUESTIONS, cycles=(0, 2, 4)) -> list[Variant]:
    """The variants the questions need: pcm (w/o PCM vs w/), cycles (PCM cycles), streams (one view), scratch
    (visual encoder trained from scratch), objective (contrastive InfoNCE); protocol and audio re-score SSPL."""
    q = set(questions)
    out = [Variant("sspl", {}, audio=AUDIO_CONTROLS if "audio" in q else ("matched",))]
    if q & {"pcm", "objective"}:
        out.append(Variant("sspl_wo_pcm", {"use_pcm": False}))
    if "cycles" in q:
        out += [Variant(f"pcm_cycles_{k}", {"pcm_cycles": int(k)}) for k in cycles if int(k) != base.pcm_cycles]
    if "streams" in q:
        out.append(Variant("two_streams", {"streams": 2}))
    if "scratch" in q:
        out.append(Variant("from_scratch", {"from_scratch": True}))
    if "objective" in q:
        out.append(Variant("contrastive", {"method": "contrastive", "use_pcm": False}))
    return out


# ----------------------------------------------------------------------------- data and encoders
def subset_root(budget: Budget, base: SSPLConfig, root: Path) -> Path:
    """A data root with the first n_train / n_val samples of train / val (only the fields `fit` reads);
    the profile's own root when the budget uses whole splits."""
    if not budget.n_train and not budget.n_val:
        return resolve(base.data_root)
    from ..data.h5 import H5Writer, load_split

    src = resolve(base.data_root)
    stamp = ":".join(f"{(src / f'{sp}.h5').resolve()}:{(src / f'{sp}.h5').stat().st_size}:"
                     f"{(src / f'{sp}.h5').stat().st_mtime_ns}" for sp in ("train", "val"))
    out = root / "data" / f"train{budget.n_train}_val{budget.n_val}_{hashlib.sha1(stamp.encode()).hexdigest()[:8]}"
    for split, n in (("train", budget.n_train), ("val", budget.n_val)):
        path = out / f"{split}.h5"
        if path.is_file():
            continue
        keys = ["frames", "spects", "ids", "label", "boxes"]
        d = load_split(src / f"{split}.h5", keys)
        n = n or len(d["ids"])
        with H5Writer(path, attrs={**d["attrs"], "subset_of": str(src / f"{split}.h5"), "subset_n": n}) as w:
            w.append({k: d[k][:n] for k in keys})
    return out


def encoders_checkpoint(base: SSPLConfig, root: Path, progress: bool = False) -> str | None:
    """The small encoders pretrained on the profile's labeled splits: an existing matching `encoders.pt` under
    the profile's run folder (e.g. the main training run's), else pretrained once into `root`."""
    if base.encoders_checkpoint or "small" not in (base.visual_encoder, base.audio_encoder) or not base.pretrained:
        return base.encoders_checkpoint
    from . import pretrain

    want = pretrain.cache_meta(base)
    for cand in sorted(root.parent.rglob("encoders.pt")):
        try:
            meta = pretrain.load_meta(cand)
        except Exception:  # noqa: BLE001 - unreadable candidate: skip it
            continue
        if {k: meta.get(k) for k in want} == want:
            return str(cand)
    return str(pretrain.pretrain(base, root, progress=progress))


# ----------------------------------------------------------------------------- runs
def run_config(base: SSPLConfig, budget: Budget, overrides: dict, seed: int, data_root: Path,
               enc: str | None) -> SSPLConfig:
    ch = dict(overrides, seed=int(seed), data_root=str(data_root), encoders_checkpoint=enc)
    for key, value in (("epochs", budget.epochs), ("batch_size", budget.batch_size), ("val_samples", budget.n_val)):
        if value is not None:
            ch[key] = value
    return base.replace(**ch)


def evaluate_run(run_dir: Path, test_root: Path, budget: Budget, *, audio_modes=("matched",), device="cpu") -> dict:
    """{split: {audio: {protocol: {"ciou","auc","n"}}}} of a run's best checkpoint, cached in eval.json."""
    from ..data.testset import load_test_set

    cache = run_dir / "eval.json"
    key = {"n_test": budget.n_test, "test_root": str(test_root),
           "best_mtime": (run_dir / "checkpoints" / "best.pt").stat().st_mtime}
    splits = find_test_splits(test_root)
    old = json.loads(cache.read_text()) if cache.is_file() else {}
    if old.get("key") == key and all(a in old["scores"].get(s, {}) for s in splits for a in audio_modes):
        return old["scores"]
    model = load_run(run_dir, device=device)
    scores = old.get("scores", {}) if old.get("key") == key else {}
    for s, path in splits.items():
        data = load_test_set(path, limit=budget.n_test)
        for a in audio_modes:
            if a not in scores.get(s, {}):
                r = evaluate_model(model, None, data=data, audio=a, batch_size=100, device=device)
                scores.setdefault(s, {})[a] = r["summary"]
    write_json({"key": key, "scores": scores}, cache)
    return scores


def _study_actions(root: Path, jobs) -> list[str]:
    """`provenance.study_action` of every (variant, seed, config) job, all checked before any training: one
    RunConflict naming every folder that holds another run (none is deleted)."""
    actions, refused = [], []
    for v, seed, cfg in jobs:
        try:
            actions.append(study_action(root / v.name / f"seed{seed}", cfg))
        except RunConflict as e:
            refused.append(str(e))
    if refused:
        raise RunConflict("\n".join(refused))
    return actions


def run_study(base: SSPLConfig, variants: list[Variant], seeds, root, budget: Budget | None = None, *,
              device="cpu", progress: bool = True) -> list[dict]:
    """Train (or reuse) and score every variant x seed; returns the records (see the module docstring)."""
    from .train import fit

    derived = [v.name for v in variants if v.train_as or v.test_map]
    if derived:
        raise ValueError(f"variants {derived} are derived (train_as / test_map): run_study trains and scores "
                         "each variant's own runs; score derived entries with experiments.study.evaluate_methods")
    budget = budget or Budget()
    root = resolve(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json({"budget": asdict(budget), "seeds": [int(s) for s in seeds],
                "variants": [asdict(v) for v in variants]}, root / "study.json")
    test_root = resolve(base.data_root)
    data_root = subset_root(budget, base, root)
    enc = encoders_checkpoint(base, root, progress)
    device = choose_device(device)
    jobs = [(v, seed, run_config(base, budget, v.overrides, seed, data_root, enc)) for v in variants for seed in seeds]
    actions = _study_actions(root, jobs)
    records: list[dict] = []
    for (v, seed, cfg), action in zip(jobs, actions):
        run_dir = root / v.name / f"seed{seed}"
        t0 = time.perf_counter()
        status = "cached" if action == "reuse" else "trained"
        if status == "trained":
            fit(cfg, run_dir, resume=True, allow_longer=action == "longer", progress=False)
        scores = evaluate_run(run_dir, test_root, budget, audio_modes=v.audio, device=device)
        dt = time.perf_counter() - t0
        if progress:
            first = next(iter(scores.values()))["matched"]["fixed"]
            print(f"[runner] {v.name:16s} seed {seed}: {status:7s} cIoU {first['ciou']:.3f} "
                  f"(first test split, {dt:.0f} s)", flush=True)
        for split, per_audio in scores.items():
            for audio, per_p in per_audio.items():
                for p, sm in per_p.items():
                    records.append({"variant": v.name, "overrides": dict(v.overrides), "seed": int(seed),
                                    "split": split, "audio": audio, "protocol": p, **sm,
                                    "seconds": round(dt, 1), "status": status})
    return records


def seed_study(profile: str = "quick", seeds=None, *, root=None, audio=("matched", "shuffled"), device="cpu",
               progress: bool = True, **overrides) -> list[dict]:
    """The profile trained with each of its seeds (`seeds` in the profile, or given) at its own settings."""
    base = load_profile(profile, **overrides)
    # not runs/<profile>/seeds/: that folder holds the methods' runs of `method_runs` (another data_root spelling
    # and budget: sharing it would make each retrain the other's runs)
    root = resolve(root) if root is not None else RUNS_DIR / profile / "seed_study"
    return run_study(base, [Variant("sspl", {}, audio=tuple(audio))], seeds or base.seeds, root, Budget(),
                     device=device, progress=progress)


# ----------------------------------------------------------------------------- statistics over seeds
ORDER = ("single", "multi", "matched", "shuffled", "silent", "fixed", "median")


def aggregate(records: list[dict], *, audio="matched", protocol="fixed", by=("variant", "split")) -> list[dict]:
    """Mean ± sample std (ddof=1) over seeds of cIoU and AUC, one row per `by` key, in first-seen order of the
    first key (records filtered by audio / protocol unless those are in `by`)."""
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        if ("audio" not in by and r["audio"] != audio) or ("protocol" not in by and r["protocol"] != protocol):
            continue
        rows.setdefault(tuple(r[k] for k in by), []).append(r)
    first = {k[0]: i for i, k in reversed(list(enumerate(rows)))}
    rank = {v: i for i, v in enumerate(ORDER)}
    out = []
    for key, rs in sorted(rows.items(), key=lambda kv: (first[kv[0][0]],) + tuple(rank.get(k, 99) for k in kv[0][1:])):
        c, a = np.array([r["ciou"] for r in rs]), np.array([r["auc"] for r in rs])
        out.append({**dict(zip(by, key)), "ciou_mean": float(c.mean()), "ciou_std": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
                    "auc_mean": float(a.mean()), "auc_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                    "seeds": len(rs)})
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description="Seed studies and ablations (records in <root>/records.json).")
    p.add_argument("study", choices=("seeds", "ablation"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the profile's seeds")
    p.add_argument("--grid", choices=("reduced", "full"), default="reduced", help="ablation budget")
    p.add_argument("--root", help="default runs/<profile>/seed_study or runs/<profile>/ablation")
    a = p.parse_args(argv)
    root = resolve(a.root) if a.root else RUNS_DIR / a.profile / {"seeds": "seed_study"}.get(a.study, a.study)
    if a.study == "seeds":
        records = seed_study(a.profile, a.seeds, root=root)
        by = ("variant", "split", "audio")
    else:
        base = load_profile(a.profile)
        budget = Budget.full() if a.grid == "full" else Budget.reduced()
        records = run_study(base, ablation_variants(base), a.seeds or base.seeds, root, budget)
        by = ("variant", "split")
    write_json(records, root / "records.json")
    for row in aggregate(records, by=by):
        print("  ".join(f"{row[k]}" for k in by), f"cIoU@0.5 {row['ciou_mean']:.3f} ± {row['ciou_std']:.3f}",
              f"AUC {row['auc_mean']:.3f} ± {row['auc_std']:.3f} ({row['seeds']} seeds)")
    return records


if __name__ == "__main__":
    main()

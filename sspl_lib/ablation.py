"""The paper's ablation questions on the synthetic benchmark, each averaged over seeds (mean ± std).

An ablation run = `train.fit` of the profile's config with a few fields changed, into
`runs/<profile>/ablation/<variant>/seed<k>`; a finished run (history at `epochs`, best.pt present) is
reused, an interrupted one resumed. Its test scores are cached in `<run>/eval.json`.

Questions (variants trained; `protocol` and `audio` re-score the `sspl` runs):
    pcm        sspl_wo_pcm vs sspl (w/ PCM)
    cycles     PCM cycles (cycles<k>; the profile's own count is `sspl`)
    streams    three streams (two views) vs two streams (one view: cfg.views=1)
    scratch    frozen pretrained visual encoder vs trained from scratch (cfg.from_scratch=True)
    objective  negative-free SimSiam (w/ and w/o PCM) vs contrastive InfoNCE (cfg.objective="contrastive")
    protocol   fixed (SSPL) vs median (LVS / EZ-VSL) threshold
    audio      matched vs shuffled vs silent audio at test time

`Grid.reduced()` (the notebook default) is a small, honest grid that fits the `make reproduce` budget:
fewer seeds, epochs, training samples and test samples; `Grid.full()` is the complete one.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import SSPLConfig, load_profile
from .paths import RUNS_DIR, resolve

QUESTIONS = ("pcm", "cycles", "streams", "scratch", "objective", "protocol", "audio")
SPLITS = ("single", "multi")


@dataclass
class Grid:
    seeds: tuple = (0, 1)
    epochs: int = 2
    n_train: int = 512  # 0 = the whole train split
    n_val: int = 64  # validation samples for model selection (0 = all)
    n_test: int = 100  # test samples per split (0 = all)
    batch_size: int = 32
    cycles: tuple = (0, 2, 4)
    questions: tuple = QUESTIONS
    label: str = "reduced"

    @classmethod
    def reduced(cls, **kw) -> "Grid":
        return cls(**kw)

    @classmethod
    def full(cls, **kw) -> "Grid":
        base = dict(seeds=(0, 1, 2), epochs=0, n_train=0, n_val=0, n_test=0, batch_size=0, cycles=(0, 1, 2, 3, 4, 5),
                    label="full")
        return cls(**{**base, **kw})  # epochs/batch_size 0 = the profile's


def variants(grid: Grid, base: SSPLConfig) -> dict[str, dict]:
    """{variant name: config overrides} needed by the grid's questions."""
    v: dict[str, dict] = {"sspl": {}}
    q = set(grid.questions)
    if q & {"pcm", "objective"}:
        v["sspl_wo_pcm"] = {"use_pcm": False}
    if "cycles" in q:
        v.update({f"cycles{k}": {"pcm_cycles": int(k)} for k in grid.cycles if int(k) != base.pcm_cycles})
    if "streams" in q:
        v["two_streams"] = {"views": 1}
    if "scratch" in q:
        v["from_scratch"] = {"from_scratch": True}
    if "objective" in q:
        v["contrastive"] = {"objective": "contrastive", "use_pcm": False}
    return v


def cycles_variant(k: int, base: SSPLConfig) -> str:
    return "sspl" if int(k) == base.pcm_cycles else f"cycles{k}"


def fit_supports(overrides: dict) -> tuple[bool, str]:
    """Whether `train.fit` honours the config fields a variant changes (objective / views switches)."""
    from . import train

    src = inspect.getsource(train)
    for key in ("objective", "views"):
        if key in overrides and f"cfg.{key}" not in src:
            return False, f"sspl_lib.train.fit does not read cfg.{key} yet (see /work/notes/evaluation_requests.md)"
    return True, ""


# ----------------------------------------------------------------------------- data subset
def subset_root(grid: Grid, base: SSPLConfig, root: Path) -> Path:
    """A data root with the first n_train / n_val samples of train / val (only the fields `fit` reads);
    the profile's own root when the grid uses whole splits."""
    if not grid.n_train and not grid.n_val:
        return resolve(base.data_root)
    from .data.h5 import H5Writer, load_split

    import hashlib

    src = resolve(base.data_root)
    stamp = ":".join(f"{(src / f'{sp}.h5').resolve()}:{(src / f'{sp}.h5').stat().st_size}:{(src / f'{sp}.h5').stat().st_mtime_ns}"
                     for sp in ("train", "val"))
    out = root / "data" / f"train{grid.n_train}_val{grid.n_val}_{hashlib.sha1(stamp.encode()).hexdigest()[:8]}"
    for split, n in (("train", grid.n_train), ("val", grid.n_val)):
        path = out / f"{split}.h5"
        if path.is_file():
            continue
        d = load_split(src / f"{split}.h5", ["frames", "spects", "ids", "label", "boxes"])
        n = n or len(d["ids"])
        with H5Writer(path, attrs={**d["attrs"], "subset_of": str(src / f"{split}.h5"), "subset_n": n}) as w:
            w.append({k: d[k][:n] for k in ("frames", "spects", "ids", "label", "boxes")})
    return out


def encoders_checkpoint(base: SSPLConfig, root: Path, progress: bool = False) -> str | None:
    """The small encoders pretrained on the profile's labeled splits: an existing matching `encoders.pt` under
    runs/ (e.g. the main training run's), else pretrained once into `root`."""
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
def run_complete(run_dir: Path, epochs: int) -> bool:
    hist = run_dir / "history.json"
    if not (run_dir / "checkpoints" / "best.pt").is_file() or not hist.is_file():
        return False
    h = json.loads(hist.read_text())
    return len(h) >= epochs


def clear_stale(run_dir: Path, cfg: SSPLConfig) -> bool:
    """Remove a run folder trained with another configuration (so it is not resumed or reused); True if removed."""
    saved = run_dir / "config.json"
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(cfg.to_dict())):
        import shutil

        print(f"[ablation] {run_dir}: trained with another configuration, retraining")
        shutil.rmtree(run_dir)
        return True
    return False


def run_config(base: SSPLConfig, grid: Grid, overrides: dict, seed: int, data_root: Path, enc: str | None) -> SSPLConfig:
    ch = dict(overrides, seed=int(seed), data_root=str(data_root), encoders_checkpoint=enc, val_samples=grid.n_val)
    if grid.epochs:
        ch["epochs"] = grid.epochs
    if grid.batch_size:
        ch["batch_size"] = grid.batch_size
    return base.replace(**ch)


def evaluate_run(run_dir: Path, test_root: Path, grid: Grid, *, audio_modes=("matched",), device="cpu") -> dict:
    """{split: {audio: {protocol: {"ciou","auc","n"}}}} of a run's best checkpoint, cached in eval.json."""
    from .evaluate import evaluate_model, load_run, load_test_set, split_file

    cache = run_dir / "eval.json"
    key = {"n_test": grid.n_test, "test_root": str(test_root), "best_mtime": (run_dir / "checkpoints" / "best.pt").stat().st_mtime}
    old = json.loads(cache.read_text()) if cache.is_file() else {}
    if old.get("key") == key and all(a in old["scores"][s] for s in SPLITS for a in audio_modes):
        return old["scores"]
    model = load_run(run_dir, device=device)
    scores = old.get("scores", {}) if old.get("key") == key else {}
    for s in SPLITS:
        data = load_test_set(split_file(test_root, s), limit=grid.n_test)
        for a in audio_modes:
            if a in scores.get(s, {}):
                continue
            r = evaluate_model(model, None, data=data, audio=a, batch_size=100, device=device)
            scores.setdefault(s, {})[a] = r["summary"]
    cache.write_text(json.dumps({"key": key, "scores": scores}, indent=1) + "\n")
    return scores


def run_ablation(profile: str = "quick", grid: Grid | None = None, *, root=None, device="cpu", progress: bool = True,
                 **profile_overrides) -> list[dict]:
    """Train (or reuse) and score every variant x seed the grid's questions need.

    Returns records {"variant", "seed", "split", "audio", "protocol", "ciou", "auc", "n", "seconds"}; skipped
    variants come back as {"variant", "skipped": reason}."""
    from .train import fit

    grid = grid or Grid.reduced()
    base = load_profile(profile, **profile_overrides)
    root = resolve(root) if root is not None else RUNS_DIR / profile / "ablation"
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.json").write_text(json.dumps(asdict(grid), indent=1) + "\n")
    test_root = resolve(base.data_root)
    data_root = subset_root(grid, base, root)
    enc = encoders_checkpoint(base, root, progress)
    records: list[dict] = []
    for name, over in variants(grid, base).items():
        ok, why = fit_supports(over)
        if not ok:
            print(f"[ablation] skipping {name}: {why}")
            records.append({"variant": name, "skipped": why})
            continue
        audio_modes = ("matched", "shuffled", "silent") if name == "sspl" and "audio" in grid.questions else ("matched",)
        for seed in grid.seeds:
            cfg = run_config(base, grid, over, seed, data_root, enc)
            run_dir = root / name / f"seed{seed}"
            t0 = time.perf_counter()
            clear_stale(run_dir, cfg)
            if run_complete(run_dir, cfg.epochs):
                status = "cached"
            else:
                fit(cfg, run_dir, resume=True, progress=False)
                status = "trained"
            scores = evaluate_run(run_dir, test_root, grid, audio_modes=audio_modes, device=device)
            dt = time.perf_counter() - t0
            if progress:
                s = scores["single"]["matched"]["fixed"]
                print(f"[ablation] {name:14s} seed {seed}: {status:7s} single cIoU {s['ciou']:.3f} ({dt:.0f} s)", flush=True)
            for split, per_audio in scores.items():
                for audio, per_p in per_audio.items():
                    for p, sm in per_p.items():
                        records.append({"variant": name, "seed": seed, "split": split, "audio": audio, "protocol": p,
                                        **sm, "seconds": round(dt, 1), "status": status})
    return records


# ----------------------------------------------------------------------------- tables (moved to .ablation_report)
from .ablation_report import (LABELS, aggregate, figure, headline, markdown, question_rows,  # noqa: E402,F401
                              report)

"""Seed study: the same profile trained with several seeds, scored on the test splits with the audio
controls, reported as mean ± std (runs vary with the seed; one number is not a result).

    python -m sspl_lib.seeds --profile quick --seeds 1234 1 2      # runs/quick/seeds/seed<k>, seeds.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from .config import SSPLConfig, load_profile
from .evaluate import evaluate_baseline, evaluate_model, load_run, split_file
from .paths import RUNS_DIR, resolve
from .train import fit

SPLITS = {"single": "test_single", "multi": "test_multi"}
AUDIO = ("matched", "shuffled")


def run_seeds(base: SSPLConfig, seeds, root, *, device: str = "cpu", progress: bool = False) -> dict:
    """Train `base` with each seed into root/seed<k> (a finished run is reused) and evaluate it;
    returns {seed: {"<split>_<audio>": cIoU@0.5, "<split>_center_prior": ...}}."""
    root = resolve(root)
    out = {}
    for seed in seeds:
        cfg = base.replace(seed=int(seed))
        run = root / f"seed{seed}"
        if not (run / "checkpoints" / "best.pt").is_file() or len(_history(run)) < cfg.epochs:
            fit(cfg, run, resume=(run / "checkpoints" / "last.pt").is_file(), progress=progress)
        model = load_run(run, device=device)
        rec = {}
        for name, split in SPLITS.items():
            for audio in AUDIO:
                r = evaluate_model(model, split_file(cfg.data_root, name), protocol=("fixed",), audio=audio,
                                   device=device)
                rec[f"{split}_{audio}"] = float(r["summary"]["fixed"]["ciou"])
            rec[f"{split}_center_prior"] = float(
                evaluate_baseline("center_prior", split_file(cfg.data_root, name), protocol=("fixed",))["summary"]["fixed"]["ciou"])
        out[int(seed)] = rec
    return out


def _history(run) -> list:
    path = run / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def summarize(per_seed: dict) -> dict:
    """{key: (mean, std)} over seeds (population std)."""
    keys = next(iter(per_seed.values())).keys()
    return {k: (float(np.mean([r[k] for r in per_seed.values()])), float(np.std([r[k] for r in per_seed.values()])))
            for k in keys}


def table(per_seed: dict, digits: int = 3) -> str:
    keys = list(next(iter(per_seed.values())))
    lines = ["| seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for seed, rec in per_seed.items():
        lines.append(f"| {seed} | " + " | ".join(f"{rec[k]:.{digits}f}" for k in keys) + " |")
    s = summarize(per_seed)
    lines.append("| mean ± std | " + " | ".join(f"{m:.{digits}f} ± {sd:.{digits}f}" for m, sd in s.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[1234, 1, 2])
    p.add_argument("--root", help="folder of the seed runs (default runs/<profile>/seeds)")
    a = p.parse_args(argv)
    root = resolve(a.root) if a.root else RUNS_DIR / a.profile / "seeds"
    per_seed = run_seeds(load_profile(a.profile), a.seeds, root, progress=True)
    (root / "seeds.json").write_text(json.dumps({"per_seed": per_seed, "mean_std": summarize(per_seed)}, indent=1))
    print(table(per_seed))
    return per_seed


if __name__ == "__main__":
    main()

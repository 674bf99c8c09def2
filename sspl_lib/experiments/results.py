"""results.json and its tables: evaluation results of every model (the mean over its seeds' runs, with the
sample std and the per-seed values) -> the file, a per-split table, the README's headline table, and the facts
that hold on any machine (what nbval checks).

Reads evaluation results (`study.evaluate_profile`, `study.evaluate_methods`) or a results.json dict;
never trains or evaluates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..paths import resolve
from .atomic import write_json

SEED_KEYS = ("ciou", "auc", "follow_rate", "ap", "max_f1")  # kept per seed, with a sample std over seeds


def _record(r: dict, protocols) -> dict:
    """One evaluate result -> {"ciou","auc","n", ...} (fixed protocol; other protocols suffixed)."""
    s = r["summary"]
    rec = {"ciou": float(s["fixed"]["ciou"]), "auc": float(s["fixed"]["auc"]), "n": int(s["fixed"]["n"])}
    for p in protocols:
        if p != "fixed" and p in s:
            rec[f"ciou_{p}"], rec[f"auc_{p}"] = float(s[p]["ciou"]), float(s[p]["auc"])
    if "follow_rate" in r:
        rec["follow_rate"] = float(r["follow_rate"])
    for p, e in r.get("extended", {}).items():
        if p == "fixed" or p in protocols:
            tag = "" if p == "fixed" else f"_{p}"
            rec[f"ap{tag}"], rec[f"max_f1{tag}"] = float(e["ap"]), float(e["max_f1"])
    return rec


def _over_seeds(per_seed: dict) -> dict:
    """{seed: record} -> one record: every score the mean over the seeds, `<key>_std` (sample std, ddof=1; 0.0
    with one seed) for SEED_KEYS, `seeds` and `per_seed` {"<seed>": {SEED_KEYS it has}}."""
    recs = list(per_seed.values())
    out = {}
    for k, v in recs[0].items():
        vals = np.array([r[k] for r in recs], dtype=np.float64)
        out[k] = int(v) if k == "n" else float(vals.mean())
        if k in SEED_KEYS:
            out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    out["seeds"] = [int(s) for s in per_seed]
    out["per_seed"] = {str(s): {k: r[k] for k in SEED_KEYS if k in r} for s, r in per_seed.items()}
    return out


def results_json(results: dict, protocols=("fixed", "median")) -> dict:
    """{model: {split: evaluate result}} -> {model: {split: {"ciou","auc","n", ...}}} (fixed protocol), plus
    `ciou_<protocol>`/`auc_<protocol>` keys for the other protocols; `follow_rate` on the swap split and
    `ap`, `max_f1` (+ `ap_<protocol>`, `max_f1_<protocol>`) on the extended one (n = its visible clips).

    A trained model's result carries "per_seed" (evaluate_profile): its scores are then the mean over its seeds'
    runs, with `ciou_std`, `auc_std` (and `follow_rate_std`, `ap_std`, `max_f1_std` where those exist; sample
    std, 0.0 with one seed), `seeds` [int] and `per_seed` {"<seed>": {"ciou","auc", ...}}. A baseline
    (deterministic) has `seeds` [], `per_seed` {} and stds 0.0."""
    out = {}
    for model, per_split in results.items():
        out[model] = {}
        for split, r in per_split.items():
            if "per_seed" in r:
                out[model][split] = _over_seeds({s: _record(x, protocols) for s, x in r["per_seed"].items()})
            else:
                rec = _record(r, protocols)
                out[model][split] = {**rec, **{f"{k}_std": 0.0 for k in SEED_KEYS if k in rec},
                                     "seeds": [], "per_seed": {}}
    return out


def write_results(results: dict, path) -> Path:
    return write_json(results_json(results), resolve(path))


def results_table(results: dict, protocols=("fixed", "median"), digits: int = 3) -> str:
    """A markdown table: one row per model, cIoU@0.5 and AUC per split and protocol; a model scored over several
    seeds shows mean ± std (fixed protocol) and its seed count."""
    rows = results_json(results, protocols)
    splits = list(dict.fromkeys(s for r in rows.values() for s in r))
    head = ["model", "seeds"] + [f"{s} {m} ({p})" for s in splits for p in protocols for m in ("cIoU", "AUC")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, per in rows.items():
        seeds = next(iter(per.values()))["seeds"] if per else []
        cells = [model, str(len(seeds)) if seeds else ""]
        for s in splits:
            for p in protocols:
                tag = "" if p == "fixed" else f"_{p}"
                r = per.get(s)
                if r is None or f"ciou{tag}" not in r:
                    cells += ["", ""]
                    continue
                for m in ("ciou", "auc"):
                    std = f" ± {r[f'{m}_std']:.{digits}f}" if len(r["seeds"]) > 1 and p == "fixed" else ""
                    cells.append(f"{r[f'{m}{tag}']:.{digits}f}{std}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_facts(results: dict) -> dict:
    """{model: {split: n}} and whether every score is a number in [0, 1] (stable across machines)."""
    scores = [v for per in results.values() for r in per.values() for p in r["summary"].values()
              for v in (p["ciou"], p["auc"])]
    return {"n": {m: {s: int(r["n"]) for s, r in per.items()} for m, per in results.items()},
            "scores_in_0_1": bool(all(0.0 <= v <= 1.0 for v in scores))}


def listening_facts(results: dict, method: str = "ezvsl_gated", *, follow: float = 0.5, gap: float = 0.2) -> dict:
    """Does `method` listen, per the bands of the seed study (issue 12: ezvsl_gated's follow rate 0.85-1.0 and multi
    matched - shuffled 0.49-0.57 over seeds 1234/1/2; SSPL 0.05 and ~0)? Loose bands: facts that hold on any
    machine, not decimals. Skipped splits / models are left out."""
    out = {}
    for m in (method, "sspl"):
        per = results.get(m, {})
        if "swap" in per:
            out[f"{m} follows the sound (swap follow rate > {follow})"] = bool(per["swap"]["follow_rate"] > follow)
        shuffled = results.get(f"{m}_shuffled_audio", {})
        if "multi" in per and "multi" in shuffled:
            d = per["multi"]["summary"]["fixed"]["ciou"] - shuffled["multi"]["summary"]["fixed"]["ciou"]
            out[f"{m}: multi matched - shuffled > {gap}"] = bool(d > gap)
    return out



HEADLINE_MODELS = ("sspl", "sspl_wo_pcm", "ezvsl", "ezvsl_ogl", "sacl", "ezvsl_gated", "feature_l2norm",
                   "center_prior", "whole_image", "random")


def _pm(vals: list[float], digits: int) -> str:
    """'mean ± sample std' of per-seed values ('mean' alone for one value)."""
    a = np.asarray(vals, dtype=np.float64)
    return f"{a.mean():.{digits}f}" + (f" ± {a.std(ddof=1):.{digits}f}" if len(a) > 1 else "")


def _seed_values(entry: dict, key: str) -> list[float]:
    """Per-seed values of one results.json entry's score (its mean alone for a baseline)."""
    return [v[key] for v in entry["per_seed"].values()] if entry.get("per_seed") else [entry[key]]


def headline_table(rj: dict, models=HEADLINE_MODELS, digits: int = 3) -> str:
    """The README's headline table from a results.json dict: per model, cIoU@0.5 on single and multi, multi
    matched - shuffled (per seed, then mean ± std), swap cIoU, follow rate, extended AP / max-F1, seeds."""
    head = ["model", "single", "multi", "multi: matched - shuffled", "swap cIoU", "follow rate", "extended AP",
            "extended max-F1", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m in [m for m in models if m in rj]:
        per, cells = rj[m], [m]
        for split, key in (("single", "ciou"), ("multi", "ciou")):
            cells.append(_pm(_seed_values(per[split], key), digits) if split in per else "-")
        shuffled = rj.get(f"{m}_shuffled_audio", {}).get("multi")
        if shuffled and "multi" in per:
            a, b = per["multi"]["per_seed"], shuffled["per_seed"]
            cells.append(_pm([a[s]["ciou"] - b[s]["ciou"] for s in a if s in b], digits))
        else:
            cells.append("-")
        for split, key in (("swap", "ciou"), ("swap", "follow_rate"), ("extended", "ap"), ("extended", "max_f1")):
            cells.append(_pm(_seed_values(per[split], key), digits) if key in per.get(split, {}) else "-")
        cells.append(str(len(next(iter(per.values())).get("seeds", []))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Records and their one aggregation (mean and sample std over seeds), results.json and its tables
(docs/experiments.md). Reads evaluation results and records; never trains or evaluates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..paths import resolve
from .atomic import write_json

RECORD = ("variant", "overrides", "seed", "split", "audio", "protocol")
SEED_KEYS = ("ciou", "auc", "follow_rate", "ap", "max_f1")  # aggregated with a sample std over seeds


def records(results: dict) -> list[dict]:
    """Evaluation results {entry: {split: result}} -> flat records, by variant, seed, split, audio, protocol."""
    tagged = [(split, x) for per in results.values() for split, r in per.items()
              for x in (r["per_seed"].values() if "per_seed" in r else [r])]
    order = {k: {} for k in ("variant", "seed", "split", "audio")}
    for split, x in tagged:
        for k, v in (("variant", x["variant"]), ("seed", x["seed"]), ("split", split), ("audio", x["audio"])):
            order[k].setdefault(v, len(order[k]))
    tagged.sort(key=lambda t: (order["variant"][t[1]["variant"]], order["seed"][t[1]["seed"]], order["split"][t[0]],
                               order["audio"][t[1]["audio"]]))
    out = []
    for split, x in tagged:
        extra = {"follow_rate": float(x["follow_rate"])} if "follow_rate" in x else {}
        for p, sm in x["summary"].items():
            ext = {k: float(v) for k, v in x["extended"][p].items() if k in ("ap", "max_f1")} if "extended" in x else {}
            out.append({"variant": x["variant"], "overrides": dict(x["overrides"]), "seed": x["seed"], "split": split,
                        "audio": x["audio"], "protocol": p, **sm, **extra, **ext})
    return out


def aggregate(recs: list[dict], *, by=("variant", "split"), audio="matched", protocol="fixed") -> list[dict]:
    """One row per `by` key: each score's mean over seeds, `<score>_std` (ddof=1), `n`, `seeds`, `per_seed`."""
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        if ("audio" not in by and r["audio"] != audio) or ("protocol" not in by and r["protocol"] != protocol):
            continue
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    first = {k[0]: i for i, k in reversed(list(enumerate(groups)))}
    out = []
    for key in sorted(groups, key=lambda k: first[k[0]]):
        rs, row = groups[key], dict(zip(by, key))
        for k in (k for k in SEED_KEYS if k in rs[0]):
            vals = np.array([r[k] for r in rs], dtype=np.float64)
            row[k], row[f"{k}_std"] = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            if k == "auc":
                row["n"] = int(rs[0]["n"])
        row["seeds"] = [r["seed"] for r in rs if r["seed"] is not None]
        row["per_seed"] = {str(r["seed"]): {k: r[k] for k in SEED_KEYS if k in r} for r in rs if r["seed"] is not None}
        out.append(row)
    return out


def results_json(results: dict, protocols=("fixed", "median")) -> dict:
    """{model: {split: result}} -> results.json's {model: {split: scores}} (docs/experiments.md)."""
    out: dict = {}
    rows = aggregate(records(results), by=("protocol", "variant", "audio", "split"))
    for row in (r for p in protocols for r in rows if r["protocol"] == p):  # the fixed protocol first
        model = row["variant"] if row["audio"] in (None, "matched") else f"{row['variant']}_{row['audio']}_audio"
        scores = {k: v for k, v in row.items() if k not in ("protocol", "variant", "audio", "split")}
        if row["protocol"] == "fixed":
            out.setdefault(model, {})[row["split"]] = scores
        else:
            extra = {f"{k}_{row['protocol']}": scores[k] for k in ("ciou", "auc", "ap", "max_f1") if k in scores}
            out[model][row["split"]] = {**out[model][row["split"]], **extra}
    return {m: {s: _ordered(r) for s, r in out[m].items()} for m in results if m in out}


def _ordered(r: dict) -> dict:  # results.json's key order: cIoU, AUC, n, other protocols, other scores, seeds
    head = ("ciou", "ciou_std", "auc", "auc_std", "n")
    other = [k for k in r if k.startswith(("ciou_", "auc_")) and not k.endswith("_std")]
    rest = [k for k in r if k not in (*head, *other, "seeds", "per_seed")]
    return {k: r[k] for k in (*head, *other, *rest, "seeds", "per_seed") if k in r}


def write_results(results: dict, path) -> Path:
    return write_json(results_json(results), resolve(path))


def results_table(results: dict, protocols=("fixed", "median"), digits: int = 3) -> str:
    """A markdown table: per model, cIoU@0.5 and AUC per split and protocol (mean ± std over seeds)."""
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
    """Does `method` listen? Loose bands that hold on any machine (docs/methods.md)."""
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
    a = np.asarray(vals, dtype=np.float64)
    return f"{a.mean():.{digits}f}" + (f" ± {a.std(ddof=1):.{digits}f}" if len(a) > 1 else "")


def _seed_values(entry: dict, key: str) -> list[float]:
    return [v[key] for v in entry["per_seed"].values()] if entry.get("per_seed") else [entry[key]]


def _gap(rj: dict, m: str, digits: int) -> str:
    """multi cIoU with the matched sound minus with shuffled sounds, per seed, as mean ± std ("-" without both)."""
    shuffled, per = rj.get(f"{m}_shuffled_audio", {}).get("multi"), rj.get(m, {})
    if not (shuffled and "multi" in per):
        return "-"
    a, b = per["multi"]["per_seed"], shuffled["per_seed"]
    return _pm([a[s]["ciou"] - b[s]["ciou"] for s in a if s in b], digits)


def headline_table(rj: dict, models=HEADLINE_MODELS, digits: int = 3) -> str:
    """The README's headline table from a results.json dict."""
    head = ["model", "single", "multi", "multi: matched - shuffled", "swap cIoU", "follow rate", "extended AP",
            "extended max-F1", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m in [m for m in models if m in rj]:
        per, cells = rj[m], [m]
        for split, key in (("single", "ciou"), ("multi", "ciou")):
            cells.append(_pm(_seed_values(per[split], key), digits) if split in per else "-")
        cells.append(_gap(rj, m, digits))
        for split, key in (("swap", "ciou"), ("swap", "follow_rate"), ("extended", "ap"), ("extended", "max_f1")):
            cells.append(_pm(_seed_values(per[split], key), digits) if key in per.get(split, {}) else "-")
        cells.append(str(len(next(iter(per.values())).get("seeds", []))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side_by_side(benchmarks: dict[str, dict], models=HEADLINE_MODELS, digits: int = 2) -> str:
    """One row per model, for each benchmark (name -> results.json dict) single, multi, multi matched - shuffled
    and the swap follow rate, mean ± std over seeds: the README's table of one recipe on two benchmarks."""
    cols = ("single", "multi", "gap", "follow")
    head = ["model"] + [f"{b}: {c}" for b in benchmarks for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m in [m for m in models if any(m in rj for rj in benchmarks.values())]:
        cells = [m]
        for rj in benchmarks.values():
            per = rj.get(m, {})
            cells += [_pm(_seed_values(per[s], "ciou"), digits) if s in per else "-" for s in ("single", "multi")]
            cells.append(_gap(rj, m, digits))
            cells.append(_pm(_seed_values(per["swap"], "follow_rate"), digits) if "follow_rate" in per.get("swap", {})
                         else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

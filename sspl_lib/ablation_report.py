"""Reporting of the ablation: mean ± std over seeds, per-question rows, markdown tables, figures, headline numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .config import SSPLConfig

if TYPE_CHECKING:
    from .ablation import Grid


# ----------------------------------------------------------------------------- tables
def aggregate(records: list[dict], *, variants_=None, audio="matched", protocol="fixed", by=("variant", "split")) -> list[dict]:
    """Mean ± std over seeds of cIoU and AUC, one row per `by` key (records filtered by audio / protocol
    unless those are in `by`)."""
    from .ablation import SPLITS

    rows: dict[tuple, list[dict]] = {}
    for r in records:
        if "skipped" in r:
            continue
        if "audio" not in by and r["audio"] != audio:
            continue
        if "protocol" not in by and r["protocol"] != protocol:
            continue
        if variants_ is not None and r["variant"] not in variants_:
            continue
        rows.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    order = {v: i for i, v in enumerate(variants_ or [])}
    rank = {v: i for i, v in enumerate(SPLITS + ("matched", "shuffled", "silent", "fixed", "median"))}
    for key, rs in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 0),) + tuple(rank.get(k, 99) for k in kv[0][1:])):
        c, a = np.array([r["ciou"] for r in rs]), np.array([r["auc"] for r in rs])
        out.append({**dict(zip(by, key)), "ciou_mean": float(c.mean()), "ciou_std": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
                    "auc_mean": float(a.mean()), "auc_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                    "seeds": len(rs)})
    return out


def question_rows(records: list[dict], question: str, base: SSPLConfig, grid: Grid) -> tuple[list[dict], str]:
    """Aggregated rows of one question and the column that names the compared setting."""
    from .ablation import QUESTIONS, cycles_variant

    if question == "pcm":
        return aggregate(records, variants_=["sspl_wo_pcm", "sspl"]), "variant"
    if question == "cycles":
        names = [cycles_variant(k, base) for k in grid.cycles]
        rows = aggregate(records, variants_=names)
        for r in rows:
            r["cycles"] = int(grid.cycles[names.index(r["variant"])])
        return rows, "cycles"
    if question == "streams":
        return aggregate(records, variants_=["sspl", "two_streams"]), "variant"
    if question == "scratch":
        return aggregate(records, variants_=["sspl", "from_scratch"]), "variant"
    if question == "objective":
        return aggregate(records, variants_=["sspl_wo_pcm", "sspl", "contrastive"]), "variant"
    if question == "protocol":
        return aggregate(records, variants_=["sspl"], by=("variant", "split", "protocol")), "protocol"
    if question == "audio":
        return aggregate(records, variants_=["sspl"], by=("variant", "split", "audio")), "audio"
    raise ValueError(f"unknown question {question!r} (choose from {QUESTIONS})")


LABELS = {"sspl": "SSPL (w/ PCM, 3 streams, frozen)", "sspl_wo_pcm": "SSPL w/o PCM", "two_streams": "2 streams (1 view)",
          "from_scratch": "visual from scratch", "contrastive": "contrastive (InfoNCE, w/o PCM)"}


def markdown(rows: list[dict], key: str) -> str:
    """Rows of one question as a markdown table: setting x split, cIoU and AUC as mean ± std (seeds)."""
    splits = list(dict.fromkeys(r["split"] for r in rows))
    settings = list(dict.fromkeys(r[key] for r in rows))
    head = [key] + [f"{s} {m}" for s in splits for m in ("cIoU@0.5", "AUC")] + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st in settings:
        cells = [LABELS.get(st, str(st))]
        n = 0
        for s in splits:
            r = next((r for r in rows if r[key] == st and r["split"] == s), None)
            cells += [f"{r['ciou_mean']:.3f} ± {r['ciou_std']:.3f}", f"{r['auc_mean']:.3f} ± {r['auc_std']:.3f}"] if r else ["", ""]
            n = max(n, r["seeds"] if r else 0)
        lines.append("| " + " | ".join(cells + [str(n)]) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], key: str, question: str):
    """One figure per question, two panels (cIoU@0.5 and AUC, fixed protocol unless compared): bars
    (mean ± std over seeds) by setting and split; lines with ±std bands for the cycles sweep."""
    import matplotlib.pyplot as plt

    from . import viz

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, name in zip(axes, ("ciou", "auc"), ("cIoU@0.5", "AUC")):
        if question == "cycles":
            for s in dict.fromkeys(r["split"] for r in rows):
                rs = sorted((r for r in rows if r["split"] == s), key=lambda r: r["cycles"])
                viz.plot_curve_vs([r["cycles"] for r in rs], [r[f"{metric}_mean"] for r in rs],
                                  [r[f"{metric}_std"] for r in rs], xlabel="PCM cycles", ylabel=name, label=s, ax=ax)
            ax.set_xticks(sorted({r["cycles"] for r in rows}))
        else:
            bars = [{**r, "variant": LABELS.get(r[key], str(r[key]))} for r in rows]
            viz.plot_ablation(bars, metric=metric, group="split", ax=ax)
            ax.set_ylabel(name)
    fig.suptitle(f"ablation: {question} (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def report(records: list[dict], question: str, base: SSPLConfig, grid: Grid, *, save: bool = True, show: bool = True):
    """Table (markdown) and figure of one question; the figure is saved as figures/ablation_<question>.png.
    Returns (rows, markdown text, figure)."""
    rows, key = question_rows(records, question, base, grid)
    skipped = sorted({r["variant"] for r in records if "skipped" in r})
    if not rows:
        text = f"*{question}: no runs* (skipped: {', '.join(skipped) or 'none'})"
        fig = None
    else:
        text = markdown(rows, key) + f"\n\n*{grid.label} grid: {len(grid.seeds)} seeds, mean ± std; test split subsets of " \
            f"{grid.n_test or 'all'} samples.*"
        if question in ("objective", "streams") and skipped:
            text += f" Not run: {', '.join(skipped)}."
        fig = figure(rows, key, question)
        if save:
            from .viz import savefig

            savefig(fig, f"ablation_{question}")
    if show:
        from IPython.display import Markdown, display

        display(Markdown(text))
    return rows, text, fig


def headline(records: list[dict], digits: int = 2) -> dict:
    """{variant: {split: mean cIoU@0.5 (fixed, matched audio)}} rounded (for the notebook's checked output)."""
    out: dict = {}
    for r in aggregate(records):
        out.setdefault(r["variant"], {})[r["split"]] = round(r["ciou_mean"], digits)
    return out

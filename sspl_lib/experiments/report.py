"""Reporting: figures of evaluation results (cases, the swap test), the ablation's tables and figures from a
study's records, the facts of a training history. Never trains or evaluates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..config import SSPLConfig
from ..progress_lines import count
from .jobs import QUESTION_FIELDS, Budget
from .results import aggregate

if TYPE_CHECKING:
    from ..data.testset import TestSet


def best_worst(res: dict, k: int = 6, protocol: str = "fixed") -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the result's arrays) of the k best and k worst samples by cIoU (stable order)."""
    c = res["cious"][protocol]
    scored = np.flatnonzero(np.isfinite(c))  # the extended split's clips without a visible source are NaN
    order = scored[np.argsort(-c[scored], kind="stable")]
    return order[:k], order[::-1][:k]


def case_figure(res: dict, data: TestSet, k: int = 6, protocol: str = "fixed", title: str = ""):
    """Best and worst k samples of a result as heatmap overlays with the gt boxes (two rows)."""
    from ..viz import case_grid

    best, worst = best_worst(res, k, protocol)
    pos = np.concatenate([best, worst])
    c = res["cious"][protocol]
    titles = [f"best {c[i]:.2f}" for i in best] + [f"worst {c[i]:.2f}" for i in worst]
    boxes = data.boxes[pos] if data.boxes is not None else None
    return case_grid(data.frames[pos], res["heatmaps"][pos].numpy(), boxes, titles, ncols=k, suptitle=title)


def swap_figure(results: dict, data: TestSet, scene: int | None = None, *, models=None, protocol: str = "fixed",
                class_names: list[str] | None = None, title: str = ""):
    """The swap test as pictures: one scene, a column per object's sound, a row per model (`data`: the split)."""
    import matplotlib.pyplot as plt

    from ..viz import draw_boxes, overlay

    if "scene" not in data.rows:
        raise ValueError(f"{data.path}: not a swap split (no `scene` field); pass evaluate_profile's data['swap']")
    res = {m: (r if "heatmaps" in r else r["swap"]) for m, r in results.items() if "heatmaps" in r or "swap" in r}
    names = list(models) if models is not None else list(res)
    missing = [m for m in names if m not in res]
    if missing:
        raise ValueError(f"no swap result for {missing} (have {list(res)})")
    sc, obj = data.rows["scene"], data.rows["object"]
    if scene is None:
        ids, counts = np.unique(sc, return_counts=True)
        scene = int(ids[np.argmax(counts)])
    pos = np.flatnonzero(sc == scene)
    if len(pos) == 0:
        raise ValueError(f"scene {scene} not in {data.path} (scenes {int(sc.min())}..{int(sc.max())})")
    pos = pos[np.argsort(obj[pos], kind="stable")]
    if class_names is None:
        from ..data.overview import class_list

        class_names = [c["name"] for c in class_list(data.path.parent)] if (data.path.parent / "meta.json").is_file() else []

    def label(k: int) -> str:
        return class_names[k] if 0 <= k < len(class_names) else f"class {k}"

    fig, axes = plt.subplots(len(names), len(pos), figsize=(2.6 * len(pos), 2.8 * len(names)), squeeze=False)
    all_boxes = data.rows["all_boxes"][pos[0]]
    for i, m in enumerate(names):
        r = res[m]
        for j, p in enumerate(pos):
            img = overlay(data.frames[p], r["heatmaps"][p].numpy())
            img = draw_boxes(draw_boxes(img, all_boxes[np.isfinite(all_boxes).all(1)], color=(200, 200, 200), width=1),
                             data.boxes[p], color=(0, 255, 0), width=2)
            ax = axes[i, j]
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            ok = bool(r["follows"][p]) if "follows" in r else None
            ax.set_title((f"sound of {label(int(data.rows['label'][p]))}\n" if i == 0 else "") +
                         f"cIoU {r['cious'][protocol][p]:.2f}" + ("" if ok is None else (" · follows" if ok else " · does not")),
                         fontsize=9)
            if j == 0:
                ax.set_ylabel(m, fontsize=9)
    fig.suptitle(title or f"swap test, scene {scene}: the same frame heard with each object's sound")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- ablation questions
def question_rows(records: list[dict], question: str, base: SSPLConfig) -> tuple[list[dict], str]:
    """Aggregated rows of one ablation question and the column naming the compared setting."""
    if question not in QUESTION_FIELDS:
        raise ValueError(f"unknown question {question!r} (choose from {tuple(QUESTION_FIELDS)})")
    fields, by = QUESTION_FIELDS[question]
    mine = [r for r in records if set(r["overrides"]) <= fields]
    if question == "cycles":
        mine = [{**r, "pcm_cycles": int(r["overrides"].get("pcm_cycles", base.pcm_cycles))} for r in mine]
        return aggregate(mine, by=("pcm_cycles", "split")), "pcm_cycles"
    if by == "variant":
        return aggregate(mine, by=("variant", "split")), "variant"
    return aggregate(mine, by=("variant", "split", by)), by


LABELS = {"sspl": "SSPL (w/ PCM, 3 streams, frozen)", "sspl_wo_pcm": "SSPL w/o PCM", "two_streams": "2 streams (1 view)",
          "from_scratch": "visual from scratch", "contrastive": "contrastive (InfoNCE, w/o PCM)"}


def markdown(rows: list[dict], key: str) -> str:
    splits = list(dict.fromkeys(r["split"] for r in rows))
    settings = list(dict.fromkeys(r[key] for r in rows))
    head = [key] + [f"{s} {m}" for s in splits for m in ("cIoU@0.5", "AUC")] + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st in settings:
        cells = [LABELS.get(st, str(st))]
        n = 0
        for s in splits:
            r = next((r for r in rows if r[key] == st and r["split"] == s), None)
            many = r is not None and len(r["seeds"]) > 1  # a std of one seed is not shown (it is not 0)
            cells += [f"{r[m]:.3f}" + (f" ± {r[f'{m}_std']:.3f}" if many else "") for m in ("ciou", "auc")] if r \
                else ["", ""]
            n = max(n, len(r["seeds"]) if r else 0)
        lines.append("| " + " | ".join(cells + [str(n)]) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], key: str, question: str):
    """One question's figure: cIoU@0.5 and AUC, mean ± std over seeds, by setting and split."""
    import matplotlib.pyplot as plt

    from .. import viz

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, name in zip(axes, ("ciou", "auc"), ("cIoU@0.5", "AUC")):
        if key == "pcm_cycles":
            for s in dict.fromkeys(r["split"] for r in rows):
                rs = sorted((r for r in rows if r["split"] == s), key=lambda r: r[key])
                viz.plot_curve_vs([r[key] for r in rs], [r[metric] for r in rs],
                                  [r[f"{metric}_std"] for r in rs], xlabel="PCM cycles", ylabel=name, label=s, ax=ax)
            ax.set_xticks(sorted({r[key] for r in rows}))
        else:
            bars = [{**r, "variant": LABELS.get(r[key], str(r[key])), f"{metric}_mean": r[metric]} for r in rows]
            viz.plot_ablation(bars, metric=metric, group="split", ax=ax)
            ax.set_ylabel(name)
    fig.suptitle(f"ablation: {question} (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def report(records: list[dict], question: str, base: SSPLConfig, budget: Budget, *, save: bool = True,
           show: bool = True, figures_dir=None):
    """Table and figure of one question (saved as `ablation_<question>.png`); returns (rows, text, figure)."""
    rows, key = question_rows(records, question, base)
    if not rows:
        text, fig = f"*{question}: no runs*", None
    else:
        seeds = len({r["seed"] for r in records})
        spread = "mean ± std" if seeds > 1 else "one seed, no std"
        text = markdown(rows, key) + f"\n\n*{budget.label} budget: {count(seeds, 'seed')}, {spread}; test split " \
            f"subsets of {budget.n_test or 'all'} samples.*"
        fig = figure(rows, key, question)
        if save:
            from ..viz import savefig

            savefig(fig, f"ablation_{question}", figures_dir)
    if show:
        from IPython.display import Markdown, display

        display(Markdown(text))
    return rows, text, fig


def headline(records: list[dict], digits: int = 2) -> dict:
    """{variant: {split: mean cIoU@0.5 (fixed, matched audio)}} rounded (for the notebook's checked output)."""
    out: dict = {}
    for r in aggregate(records):
        out.setdefault(r["variant"], {})[r["split"]] = round(r["ciou"], digits)
    return out


# ----------------------------------------------------------------------------- checks stable across machines
def history_facts(history: list[dict], run_dir) -> dict:
    """Facts of a finished run that hold on any machine: epochs, finiteness, best.pt = best epoch."""
    from .runs import checkpoint_path, load_checkpoint

    best = max(history, key=lambda h: (h["val_ciou"], h["val_auc"]))
    stored = load_checkpoint(checkpoint_path(run_dir, "best"))["epoch"] + 1
    finite = all(np.isfinite([h[k] for k in ("train_loss", "val_loss", "val_ciou", "val_auc")]).all() for h in history)
    return {"epochs": len(history), "finite": bool(finite), "best_pt_is_best_val_epoch": stored == best["epoch"],
            "val_ciou_in_0_1": all(0.0 <= h["val_ciou"] <= 1.0 for h in history)}

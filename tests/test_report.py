"""sspl_lib.experiments.report on runs made by fit: the facts nbval checks (best.pt holds the best validation
epoch; scores in [0, 1]), the ablation report's table and figure, the live plot of a notebook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.profiles import load_profile
from sspl_lib.experiments import runs
from sspl_lib.experiments.progress import LivePlot, history_table
from sspl_lib.experiments.report import history_facts, report
from sspl_lib.experiments.results import results_facts
from sspl_lib.experiments.jobs import Budget
from sspl_lib.experiments.train import fit


@pytest.fixture(scope="module")
def run(tiny_benchmark, tmp_path_factory):
    cfg = SSPLConfig(img_size=48, pretrained=False, pcm_cycles=1, encoder_width=8, data_root=str(tiny_benchmark),
                     epochs=3, batch_size=8, threads=1, lr_head=5e-3)
    root = tmp_path_factory.mktemp("run")
    return root, fit(cfg, root, progress=False)


def test_history_facts_detect_a_wrong_best_checkpoint(run, tmp_path):
    root, hist = run
    facts = history_facts(hist, root)
    assert facts == {"epochs": 3, "finite": True, "best_pt_is_best_val_epoch": True, "val_ciou_in_0_1": True}
    # a best.pt that holds another epoch than the best validation one is reported
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    state = runs.load_checkpoint(bad / "checkpoints" / "best.pt")
    best = max(hist, key=lambda h: (h["val_ciou"], h["val_auc"]))["epoch"]
    state["epoch"] = best  # stored epochs are 0-based: this claims the next one
    torch.save(state, bad / "checkpoints" / "best.pt")
    assert history_facts(hist, bad)["best_pt_is_best_val_epoch"] is False
    nan = [dict(h, val_loss=float("nan")) if i == 1 else h for i, h in enumerate(hist)]
    assert history_facts(nan, root)["finite"] is False


def test_results_facts():
    summary = {"fixed": {"ciou": 0.4, "auc": 0.3, "n": 5}, "median": {"ciou": 0.2, "auc": 0.25, "n": 5}}
    res = {"sspl": {"single": {"n": 5, "summary": summary}}, "random": {"single": {"n": 5, "summary": summary}}}
    assert results_facts(res) == {"n": {"sspl": {"single": 5}, "random": {"single": 5}}, "scores_in_0_1": True}
    res["sspl"]["single"]["summary"] = {"fixed": {"ciou": 1.5, "auc": 0.3, "n": 5}}
    assert results_facts(res)["scores_in_0_1"] is False


def test_ablation_report_table_and_figure(tmp_path):
    recs = [{"variant": v, "overrides": o, "seed": s, "split": sp, "audio": "matched", "protocol": "fixed",
             "ciou": c + 0.1 * s, "auc": c / 2, "n": 10}
            for v, o, c in (("sspl", {}, 0.6), ("sspl_wo_pcm", {"use_pcm": False}, 0.3))
            for s in (0, 1) for sp in ("single", "multi")]
    rows, text, fig = report(recs, "pcm", load_profile("quick"), Budget.reduced(), show=False, figures_dir=tmp_path)
    assert (tmp_path / "ablation_pcm.png").is_file() and fig is not None
    assert "0.650 ± 0.071" in text and "2 seeds" in text and "100 samples" in text
    assert [(r["variant"], r["split"]) for r in rows] == [("sspl", "single"), ("sspl", "multi"),
                                                          ("sspl_wo_pcm", "single"), ("sspl_wo_pcm", "multi")]


def test_live_plot_and_history_table(run):
    _, hist = run
    live = LivePlot(display=False, every=0.0)
    for e in range(1, 3):
        for s in range(1, 4):
            live({"kind": "step", "epoch": e, "step": s, "steps": 3, "loss": -0.1 * s})
        live({"kind": "epoch", "record": hist[e - 1], "history": hist[:e]})
    assert len(live.steps) == 6 and live.steps[-1] == (2.0, pytest.approx(-0.3)) and len(live.history) == 2
    fig = live.figure()
    ax1, ax2 = fig.axes
    assert len(ax1.lines) == 2 and len(ax2.lines) == 2  # step loss + val loss; val cIoU + val AUC
    table = history_table(hist).splitlines()
    assert len(table) == 4 and table[0].split()[:3] == ["epoch", "train", "val"]


def test_listening_facts_read_the_follow_rate_and_the_shuffled_gap():
    from sspl_lib.experiments.results import listening_facts

    def res(ciou, follow=None):
        r = {"multi": {"summary": {"fixed": {"ciou": ciou}}}}
        if follow is not None:
            r["swap"] = {"follow_rate": follow}
        return r

    results = {"ezvsl_gated": res(0.8, follow=0.95), "ezvsl_gated_shuffled_audio": res(0.3),
               "sspl": res(0.1, follow=0.05), "sspl_shuffled_audio": res(0.09)}
    assert listening_facts(results) == {
        "ezvsl_gated follows the sound (swap follow rate > 0.5)": True, "ezvsl_gated: multi matched - shuffled > 0.2": True,
        "sspl follows the sound (swap follow rate > 0.5)": False, "sspl: multi matched - shuffled > 0.2": False}
    assert listening_facts({"sspl": res(0.1)}) == {}  # no swap split, no shuffled control: nothing claimed


def test_headline_table_from_results_json_by_hand():
    from sspl_lib.experiments.results import headline_table

    def entry(per):  # per-seed values -> a results.json entry (means as write_results stores them)
        return {"ciou": float(np.mean([v["ciou"] for v in per.values()])), "per_seed": per, "seeds": [int(s) for s in per]}

    rj = {"ezvsl_gated": {"single": entry({"1": {"ciou": 0.7}, "2": {"ciou": 0.8}}),
                       "multi": entry({"1": {"ciou": 0.8}, "2": {"ciou": 0.6}}),
                       "swap": {**entry({"1": {"ciou": 0.5, "follow_rate": 1.0}, "2": {"ciou": 0.5, "follow_rate": 0.8}}),
                                "follow_rate": 0.9}},
          "ezvsl_gated_shuffled_audio": {"multi": entry({"1": {"ciou": 0.2}, "2": {"ciou": 0.3}})},
          "center_prior": {"single": {"ciou": 0.1, "per_seed": {}, "seeds": []}}}
    table = headline_table(rj, digits=2).splitlines()
    assert len(table) == 4
    # gaps per seed 0.6 and 0.3: mean 0.45, sample std 0.21; single 0.75 ± 0.07; follow 0.90 ± 0.14
    assert table[2] == "| ezvsl_gated | 0.75 ± 0.07 | 0.70 ± 0.14 | 0.45 ± 0.21 | 0.50 ± 0.00 | 0.90 ± 0.14 | - | - | 2 |"
    assert table[3] == "| center_prior | 0.10 | - | - | - | - | - | - | 0 |"


def test_side_by_side_table_of_two_benchmarks_by_hand():
    from sspl_lib.experiments.results import side_by_side

    def entry(per):
        return {"ciou": float(np.mean([v["ciou"] for v in per.values()])), "per_seed": per, "seeds": [int(s) for s in per]}

    drawn = {"sspl": {"single": entry({"1": {"ciou": 0.9}, "2": {"ciou": 0.7}}),
                      "multi": entry({"1": {"ciou": 0.2}, "2": {"ciou": 0.2}})},
             "sspl_shuffled_audio": {"multi": entry({"1": {"ciou": 0.1}, "2": {"ciou": 0.3}})},
             "center_prior": {"single": {"ciou": 0.1, "per_seed": {}, "seeds": []}}}
    real = {"sspl": {"single": entry({"1": {"ciou": 0.5}, "2": {"ciou": 0.5}}),
                     "swap": {**entry({"1": {"ciou": 0.4, "follow_rate": 0.2}, "2": {"ciou": 0.4, "follow_rate": 0.4}}),
                              "follow_rate": 0.3}}}
    table = side_by_side({"drawn": drawn, "real": real}).splitlines()
    assert table[0] == ("| model | drawn: single | drawn: multi | drawn: gap | drawn: follow | real: single | real: multi | "
                        "real: gap | real: follow |")
    # drawn gaps per seed 0.1 and -0.1: 0.00 ± 0.14; real follow 0.30 ± 0.14; what a benchmark lacks is "-"
    assert table[2] == "| sspl | 0.80 ± 0.14 | 0.20 ± 0.00 | 0.00 ± 0.14 | - | 0.50 ± 0.00 | - | - | 0.30 ± 0.14 |"
    assert table[3] == "| center_prior | 0.10 | - | - | - | - | - | - | - |"

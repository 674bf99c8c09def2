"""A study with its own runs (experiments.study.run_study: ablation, seed study) and its report: a real tiny study
through fit (cached, refused on a changed configuration), records that carry their overrides, seed statistics with
the sample std (experiments.results.aggregate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.profiles import load_profile
from sspl_lib.data.testset import load_test_set
from sspl_lib.experiments.evaluate import evaluate_model
from sspl_lib.experiments.report import headline, markdown, question_rows
from sspl_lib.experiments.jobs import METHODS, Budget, Variant, ablation_variants
from sspl_lib.experiments.results import aggregate
from sspl_lib.experiments.study import TrainingFailed, run_study, seed_study
from sspl_lib.experiments.runs import load_run

TINY = dict(img_size=48, encoder_width=8, pretrain_epochs=1, pretrain_batch_size=8, threads=1)


def _rec(variant, seed, ciou, overrides=None, split="single", audio="matched", protocol="fixed"):
    return {"variant": variant, "overrides": overrides or {}, "seed": seed, "split": split, "audio": audio,
            "protocol": protocol, "ciou": ciou, "auc": ciou / 2, "n": 10}


def test_ablation_variants_carry_their_overrides():
    base = load_profile("quick")
    v = {x.name: x for x in ablation_variants(base, cycles=(0, 1, 2, 3, 4, 5))}
    assert v["sspl"].overrides == {} and v["sspl"].audio == ("matched", "shuffled", "silent")
    assert v["sspl_wo_pcm"].overrides == {"use_pcm": False} and v["two_streams"].overrides == {"streams": 2}
    assert v["from_scratch"].overrides == {"from_scratch": True}
    assert v["contrastive"].overrides == {"method": "contrastive", "use_pcm": False}
    cyc = sorted(x.overrides["pcm_cycles"] for x in v.values() if "pcm_cycles" in x.overrides)
    assert cyc == [k for k in range(6) if k != base.pcm_cycles]  # the profile's own count is `sspl`
    only_pcm = {x.name for x in ablation_variants(base, questions=("pcm",))}
    assert only_pcm == {"sspl", "sspl_wo_pcm"}


def test_aggregate_is_mean_and_sample_std():
    recs = [_rec("a", s, c) for s, c in enumerate((0.2, 0.4, 0.9))]
    (row,) = aggregate(recs)
    assert row["ciou"] == pytest.approx(0.5)
    assert row["ciou_std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))  # sample std, not population
    assert row["auc"] == pytest.approx(0.25) and row["seeds"] == [0, 1, 2] and row["per_seed"]["2"]["ciou"] == 0.9
    assert "0.500 ± 0.361" in markdown([row], "variant")
    (one,) = aggregate(recs[:1])
    assert one["ciou_std"] == 0.0
    assert headline(recs) == {"a": {"single": 0.5}}


def test_report_reads_overrides_not_names():
    """The cycles question takes the PCM cycle count from each record's overrides (the base's count when the
    record overrides nothing): a variant's name is only a label."""
    base = load_profile("quick")
    recs = [_rec("sspl", 0, 0.8), _rec("misleading_name_7", 0, 0.3, {"pcm_cycles": 2}),
            _rec("sspl_wo_pcm", 0, 0.5, {"use_pcm": False})]
    rows, key = question_rows(recs, "cycles", base)
    assert key == "pcm_cycles" and {r["pcm_cycles"]: r["ciou"] for r in rows} == {2: 0.3, base.pcm_cycles: 0.8}
    rows, key = question_rows(recs, "pcm", base)
    assert key == "variant" and [r["variant"] for r in rows] == ["sspl", "sspl_wo_pcm"]
    with pytest.raises(ValueError, match="unknown question"):
        question_rows(recs, "nope", base)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sspl_lib.data.synthetic import generate_benchmark

    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("bench"), n_train=16, n_val=8, n_test=8, n_labeled=16,
                              frame_size=48, workers=1, progress=False)


def test_tiny_study_runs_caches_and_refuses_another_configuration(bench, tmp_path):
    base = load_profile("quick", data_root=str(bench), **TINY)
    budget = Budget(epochs=1, n_train=16, n_val=8, n_test=6, batch_size=8)
    variants = [Variant("sspl", {}, audio=("matched", "shuffled", "silent")), Variant("sspl_wo_pcm", {"use_pcm": False})]
    root = tmp_path / "runs" / "ablation"
    recs = run_study(base, variants, (0, 1), root, budget, progress=False)
    assert {r["status"] for r in recs} == {"trained"}
    assert {(r["variant"], r["seed"]) for r in recs} == {(v, s) for v in ("sspl", "sspl_wo_pcm") for s in (0, 1)}
    assert {r["audio"] for r in recs if r["variant"] == "sspl_wo_pcm"} == {"matched"}
    assert all(r["overrides"] == {"use_pcm": False} for r in recs if r["variant"] == "sspl_wo_pcm")
    for name in ("sspl", "sspl_wo_pcm"):
        for s in (0, 1):
            run = root / name / f"seed{s}"
            assert (run / "checkpoints" / "best.pt").is_file()
            cfg = SSPLConfig.load(run / "config.json")
            assert cfg.seed == s and cfg.epochs == 1 and cfg.val_samples == 8 and cfg.use_pcm == (name == "sspl")
    # a record is the evaluation of that run's best checkpoint on the first n_test samples
    (r,) = [r for r in recs if (r["variant"], r["seed"], r["split"], r["audio"], r["protocol"])
            == ("sspl", 1, "multi", "matched", "fixed")]
    direct = evaluate_model(load_run(root / "sspl" / "seed1"), None, data=load_test_set(bench / "test_multi.h5", limit=6))
    assert r["ciou"] == direct["summary"]["fixed"]["ciou"] and r["n"] == 6
    again = run_study(base, variants, (0, 1), root, budget, progress=False)  # cached: no retraining, same scores
    assert {r["status"] for r in again} == {"cached"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("status", "seconds")} for r in rs]  # noqa: E731
    assert strip(again) == strip(recs)
    # another configuration: refused before anything is trained, naming the difference; the runs are kept
    best = root / "sspl_wo_pcm" / "seed0" / "checkpoints" / "best.pt"
    before = best.stat().st_mtime_ns
    with pytest.raises(TrainingFailed, match=r"1 of 1 runs failed(.|\n)*RunConflict: .*sspl_wo_pcm/seed0: cannot "
                                             r"reuse or resume.*lr_head: 0\.002 -> 0\.0001"):
        run_study(base.replace(lr_head=1e-4), variants[1:], (0,), root, budget, progress=False)
    assert best.stat().st_mtime_ns == before


def test_seed_study_uses_the_profile_settings(bench, tmp_path):
    recs = seed_study("quick", (3, 4), root=tmp_path, progress=False, data_root=str(bench), epochs=1, batch_size=8,
                      val_samples=0, **TINY)
    assert {(r["seed"], r["audio"]) for r in recs} == {(s, a) for s in (3, 4) for a in ("matched", "shuffled")}
    assert SSPLConfig.load(tmp_path / "sspl" / "seed3" / "config.json").batch_size == 8
    rows = aggregate(recs, by=("variant", "split", "audio"))
    single = [r for r in recs if r["split"] == "single" and r["audio"] == "matched" and r["protocol"] == "fixed"]
    (row,) = [x for x in rows if x["split"] == "single" and x["audio"] == "matched"]
    assert row["ciou"] == pytest.approx(np.mean([r["ciou"] for r in single]))
    assert row["seeds"] == [3, 4]


def test_run_study_refuses_a_derived_variant_without_its_runs(tmp_path):
    with pytest.raises(ValueError, match=r"derived variant 'ezvsl_ogl' scores the runs of 'ezvsl': add that variant"):
        run_study(load_profile("quick"), [METHODS["ezvsl_ogl"]], (0,), tmp_path / "study")
    assert not (tmp_path / "study").exists()

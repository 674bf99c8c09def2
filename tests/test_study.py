"""sspl_lib.experiments.study: the methods x seeds of a profile on a tiny generated benchmark, the job list, real
runs trained by fit in parallel processes (run layout, reuse across thread counts, a failing job), scored with
shared encoder outputs (bit-identical heatmaps), a derived entry (ezvsl_ogl) and results.json aggregated over
seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.data.transforms import eval_frame
from sspl_lib.experiments.evaluate import evaluate_model, load_eval_split
from sspl_lib.experiments.features import SharedFeatures
from sspl_lib.experiments.results import results_json, results_table, write_results
from sspl_lib.experiments.provenance import study_action
from sspl_lib.experiments.jobs import METHODS, method_folder, method_runs, methods, plan, study_seeds
from sspl_lib.experiments.runs import load_run
from sspl_lib.experiments.study import TrainingFailed, evaluate_methods, train_methods
from sspl_lib.methods.ezvsl import EZVSL, EZVSLGated

TINY = dict(img_size=48, pretrained=False, pcm_cycles=1, encoder_width=8, visual_dim=16, out_dim=16, audio_hidden=32,
            proj_dim=32, pred_hidden=16, epochs=1, batch_size=4, threads=1, val_samples=0, seed=7, seeds=(1, 7, 2))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sspl_lib.data.synthetic import generate_benchmark

    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("bench"), n_train=8, n_val=4, n_test=6, n_labeled=0,
                              n_swap=4, n_extended=8, chunk=4, frame_size=48, workers=1, progress=False)


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    """sspl and ezvsl, seeds 7 and 1, trained by train_methods in two processes."""
    root = tmp_path_factory.mktemp("runs") / "quick"
    cfg = SSPLConfig(data_root=str(bench), **TINY)
    hist = train_methods(cfg, root, ["sspl", "ezvsl", "ezvsl_ogl"], n_seeds=2, jobs=2, progress=False)
    assert {m: sorted(h) for m, h in hist.items()} == {"sspl": [1, 7], "ezvsl": [1, 7]}  # ezvsl_ogl trains nothing
    return cfg, root


def test_method_runs_layout(tmp_path):
    cfg = SSPLConfig(seed=7, seeds=(1, 7, 2))
    assert study_seeds(cfg) == [7, 1, 2]
    assert method_runs(tmp_path, "sspl", cfg, 0) == {7: tmp_path / "sspl", 1: tmp_path / "seeds" / "sspl" / "seed1",
                                                     2: tmp_path / "seeds" / "sspl" / "seed2"}
    assert method_runs(tmp_path, "sacl", cfg) == {7: tmp_path / "sacl"}  # n_seeds=1: the profile's seed only
    assert method_runs(tmp_path, "ezvsl_ogl", cfg, 2) == method_runs(tmp_path, "ezvsl", cfg, 2)  # derived: ezvsl's
    assert METHODS["ezvsl_ogl"].test_map == {"ogl_alpha": 0.4} and METHODS["ezvsl_ogl"].train_as == "ezvsl"
    jobs = plan(cfg, methods(["sspl_wo_pcm", "ezvsl_ogl"]), study_seeds(cfg), method_folder(tmp_path, cfg.seed),
                changes={"threads": 1})
    assert [(j.name, j.seed, j.cfg.seed, j.cfg.use_pcm, j.cfg.threads) for j in jobs] == \
        [("sspl_wo_pcm", s, s, False, 1) for s in (7, 1, 2)]  # the derived ezvsl_ogl trains nothing
    assert [j.run_dir for j in jobs] == list(method_runs(tmp_path, "sspl_wo_pcm", cfg, 0).values())
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_runs(tmp_path, "nope", cfg)


def test_runs_trained_in_parallel_are_those_of_fit(trained, bench, tmp_path):
    cfg, root = trained
    for m in ("sspl", "ezvsl"):
        for s, run in method_runs(root, m, cfg, 2).items():
            saved = SSPLConfig.load(run / "config.json")
            assert (run / "checkpoints" / "best.pt").is_file() and saved.seed == s and saved.threads == 1
    # the run of seed 1 trained in a worker process = the same run trained here, one after the other
    from sspl_lib.experiments.train import fit

    fit(cfg.replace(seed=1), tmp_path / "alone", progress=False)
    a, b = load_run(root / "seeds" / "sspl" / "seed1"), load_run(tmp_path / "alone")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def test_a_finished_run_is_reused_whatever_the_thread_count(trained, capsys):
    cfg, root = trained
    best = root / "sspl" / "checkpoints" / "best.pt"
    before = best.stat().st_mtime_ns
    assert study_action(root / "sspl", cfg.replace(threads=2, workers=3)) == "reuse"  # execution-only fields
    hist = train_methods(cfg.replace(threads=2), root, ["sspl"], n_seeds=1, jobs=1)
    assert "finished run reused" in capsys.readouterr().out
    assert best.stat().st_mtime_ns == before and len(hist["sspl"][7]) == 1
    assert SSPLConfig.load(root / "sspl" / "config.json").threads == 1  # left as it was trained


def test_a_failing_job_is_reported_and_the_others_finish(bench, tmp_path):
    cfg = SSPLConfig(data_root=str(bench), **TINY)
    bad = tmp_path / "seeds" / "sspl" / "seed1"
    (bad / "checkpoints").mkdir(parents=True)
    (bad / "checkpoints" / "last.pt").write_bytes(b"")  # a run killed while writing its checkpoint
    with pytest.raises(TrainingFailed) as err:
        train_methods(cfg, tmp_path, ["sspl"], n_seeds=3, jobs=2, progress=False)
    msg = str(err.value)
    assert "1 of 3 runs failed" in msg and f"sspl seed 1 ({bad})" in msg and "empty file" in msg
    assert (tmp_path / "sspl" / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "seeds" / "sspl" / "seed2" / "checkpoints" / "best.pt").is_file()
    assert not (bad / "checkpoints" / "best.pt").exists()


def test_shared_encoder_outputs_give_bit_identical_heatmaps(trained, bench):
    cfg, root = trained
    data = load_eval_split(bench / "test_multi.h5")
    shared = SharedFeatures(data, batch_size=4, device="cpu")
    models = [load_run(root / "sspl"), load_run(root / "ezvsl"), load_run(root / "seeds" / "sspl" / "seed1")]
    ezvsl = models[1]
    ogl, gated = EZVSL(ogl_alpha=0.4), EZVSLGated(gamma=2.0)  # test-time maps of the ezvsl run
    for m, method in [*((m, None) for m in models), (ezvsl, ogl), (ezvsl, gated)]:
        for audio in ("matched", "shuffled", "silent"):
            a = evaluate_model(m, None, data=data, batch_size=4, audio=audio, seed=3, shared=shared, method=method)
            b = evaluate_model(m, None, data=data, batch_size=4, audio=audio, seed=3, method=method)
            assert torch.equal(a["heatmaps"], b["heatmaps"]) and a["summary"] == b["summary"]
    # seed 7's sspl and ezvsl share one random encoder (same seed), seed 1 has another: 2 visual passes, not 4
    assert shared.computed == {"visual": 2, "audio": 2 * 3}
    with pytest.raises(ValueError, match="batch_size=4"):
        evaluate_model(models[0], None, data=data, batch_size=5, shared=shared)
    with pytest.raises(ValueError, match="test_single.h5"):
        evaluate_model(models[0], None, data=load_eval_split(bench / "test_single.h5"), batch_size=4, shared=shared)


def test_results_json_aggregates_seeds_and_scores_the_derived_entry(trained, bench, tmp_path):
    cfg, root = trained
    res, data = evaluate_methods(cfg, root, ["sspl", "ezvsl", "ezvsl_ogl", "sacl"], n_seeds=0, batch_size=4,
                                 device="cpu", controls=("shuffled",), progress=False)
    assert list(res)[:3] == ["sspl", "ezvsl", "ezvsl_ogl"] and "sacl" not in res  # not trained: skipped
    assert "ezvsl_ogl_shuffled_audio" in res and "center_prior" in res
    out = json.loads(write_results(res, tmp_path / "results.json").read_text())
    assert out == results_json(res)
    for split, rec in out["sspl"].items():
        assert rec["seeds"] == [7, 1] and set(rec["per_seed"]) == {"7", "1"}
        for k in ("ciou", "auc") + (("follow_rate",) if split == "swap" else ()) + \
                (("ap", "max_f1") if split == "extended" else ()):
            vals = [rec["per_seed"][s][k] for s in ("7", "1")]
            assert rec[k] == np.mean(vals) and rec[f"{k}_std"] == pytest.approx(np.std(vals, ddof=1), abs=0)
        assert ("follow_rate_std" in rec) == (split == "swap") and ("ap_std" in rec) == (split == "extended")
        # per seed: the evaluation of that seed's run
        one = res["sspl"][split]["per_seed"][1]["summary"]["fixed"]
        assert rec["per_seed"]["1"]["ciou"] == one["ciou"] and rec["n"] == one["n"]
    for b in ("center_prior", "whole_image", "feature_l2norm", "random"):
        for rec in out[b].values():
            assert rec["seeds"] == [] and rec["per_seed"] == {} and rec["ciou_std"] == rec["auc_std"] == 0.0
    # the derived entry: the ezvsl runs with EZ-VSL's object-guided map (ogl_alpha 0.4), not ezvsl's own map
    assert out["ezvsl_ogl"]["single"]["seeds"] == out["ezvsl"]["single"]["seeds"] == [7, 1]
    plain, guided = res["ezvsl"]["single"]["per_seed"][1], res["ezvsl_ogl"]["single"]["per_seed"][1]
    assert not torch.equal(plain["heatmaps"], guided["heatmaps"])
    m = load_run(root / "seeds" / "ezvsl" / "seed1")
    d = data["single"]
    with torch.no_grad():
        want = m.heatmap(eval_frame(torch.from_numpy(d.frames[:4]), 48), torch.from_numpy(d.spects[:4]),
                         EZVSL(ogl_alpha=0.4))
    assert m.cfg.ezvsl_ogl_alpha == 0.0 and m.method == EZVSL()  # the loaded run is left as it is
    assert torch.equal(guided["heatmaps"][:4], want)
    table = results_table(res)
    assert " ± " in table.splitlines()[2] and table.count("\n") == len(res) + 1

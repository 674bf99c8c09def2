"""sspl_lib.experiments.evaluate on a tiny generated benchmark and hand-made splits (real files, runs made by fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sspl_lib import metrics
from sspl_lib.audio import silent_examples, vggish_examples
from sspl_lib.config import SSPLConfig
from sspl_lib.data.h5 import H5Writer
from sspl_lib.data.transforms import eval_frame
from sspl_lib.data.testset import load_test_set
from sspl_lib.experiments.evaluate import (derangement, evaluate_baseline, evaluate_model, find_test_splits,
                                           vggss_center_prior)
from sspl_lib.experiments.results import results_json, results_table, write_results
from sspl_lib.experiments.runs import load_run
from sspl_lib.experiments.study import evaluate_methods
from sspl_lib.experiments.train import fit
from sspl_lib.methods.registry import build_model

TINY = dict(img_size=48, pretrained=False, pcm_cycles=1, encoder_width=8, epochs=1, batch_size=4, threads=1,
            val_samples=0)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sspl_lib.data.synthetic import generate_benchmark

    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("bench"), n_train=8, n_val=4, n_test=10, n_labeled=0,
                              frame_size=48, workers=1, progress=False)


@pytest.fixture(scope="module")
def run_root(bench, tmp_path_factory):
    """Two runs trained by fit (w/ and w/o PCM, random small encoders, one epoch) in one profile folder."""
    root = tmp_path_factory.mktemp("runs")
    cfg = SSPLConfig(data_root=str(bench), **TINY)
    fit(cfg, root / "sspl", progress=False)
    fit(cfg.replace(use_pcm=False, out_dim=cfg.visual_dim), root / "sspl_wo_pcm", progress=False)
    return root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SSPLConfig(img_size=48, pretrained=False, pcm_cycles=1, encoder_width=8)).eval()


def test_ciou_equals_metrics_per_sample(bench, model):
    res = evaluate_model(model, bench / "test_single.h5", batch_size=4)
    data = load_test_set(bench / "test_single.h5")
    assert res["n"] == data.n == 10 and res["heatmaps"].shape[0] == 10
    # batched heatmaps = one sample at a time (eval mode)
    hm0 = model.heatmap(eval_frame(torch.from_numpy(data.frames[:1]), 48), torch.from_numpy(data.spects[:1]))
    torch.testing.assert_close(res["heatmaps"][:1], hm0, rtol=1e-4, atol=1e-5)
    gt = data.gt_maps()
    for p in ("fixed", "median"):
        ref = [metrics.ciou(res["heatmaps"][i], gt[i], protocol=p) for i in range(data.n)]
        np.testing.assert_allclose(res["cious"][p], ref, atol=1e-12)
        assert res["summary"][p] == metrics.summarize(np.array(ref))
        x, y = res["curves"][p]
        assert len(x) == len(y) == 21 and y[0] == 1.0


def test_shuffled_audio_is_a_derangement(bench, model):
    for n in (2, 3, 10, 257):
        p = derangement(n, seed=3)
        assert sorted(p) == list(range(n)) and np.all(p != np.arange(n))
        np.testing.assert_array_equal(p, derangement(n, seed=3))
    res = evaluate_model(model, bench / "test_single.h5", batch_size=4, audio="shuffled", seed=5)
    data = load_test_set(bench / "test_single.h5")
    perm = res["perm"]
    assert np.all(perm != np.arange(data.n))
    ref = model.heatmap(eval_frame(torch.from_numpy(data.frames), 48), torch.from_numpy(data.spects[perm]))
    torch.testing.assert_close(res["heatmaps"], ref, rtol=1e-4, atol=1e-5)


def test_silent_audio_is_zero_waveform_log_mel(bench, model):
    s = silent_examples()
    assert s.shape == (3, 96, 64)
    torch.testing.assert_close(s, vggish_examples(np.zeros(48000)))
    res = evaluate_model(model, bench / "test_multi.h5", batch_size=4, audio="silent")
    data = load_test_set(bench / "test_multi.h5")
    ref = model.heatmap(eval_frame(torch.from_numpy(data.frames), 48), s.expand(data.n, 3, 96, 64))
    torch.testing.assert_close(res["heatmaps"], ref, rtol=1e-4, atol=1e-5)


def _box_split(path, box, n=6):
    with H5Writer(path, attrs={"source": "synthetic"}) as w:
        w.append({"frames": np.zeros((n, 32, 32, 3), np.uint8), "spects": np.zeros((n, 3, 96, 64), np.float32),
                  "ids": [f"s{i}" for i in range(n)], "label": np.zeros(n, np.int16),
                  "boxes": np.tile(np.asarray(box, np.float32), (n, 1))})
    return path


def test_center_prior_prefers_centred_boxes(tmp_path):
    centred = _box_split(tmp_path / "centred.h5", [0.3, 0.3, 0.7, 0.7])
    corner = _box_split(tmp_path / "corner.h5", [0.0, 0.0, 0.3, 0.3])
    for p in ("fixed", "median"):
        a = evaluate_baseline("center_prior", centred, protocol=p)["summary"][p]
        b = evaluate_baseline("center_prior", corner, protocol=p)["summary"][p]
        assert a["auc"] > b["auc"] and a["n"] == b["n"] == 6
    assert evaluate_baseline("center_prior", centred)["summary"]["fixed"]["ciou"] == 1.0
    r1, r2 = evaluate_baseline("random", centred, seed=1), evaluate_baseline("random", centred, seed=1)
    np.testing.assert_array_equal(r1["cious"]["fixed"], r2["cious"]["fixed"])


def test_load_run_round_trip(run_root, bench):
    loaded = load_run(run_root / "sspl")
    assert not loaded.training and loaded.cfg == SSPLConfig(data_root=str(bench), **TINY)
    again = load_run(run_root / "sspl", which="last")  # one epoch: best == last
    a = evaluate_model(loaded, bench / "test_single.h5", batch_size=5)
    b = evaluate_model(again, bench / "test_single.h5", batch_size=3)
    torch.testing.assert_close(a["heatmaps"], b["heatmaps"], rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_run(run_root / "sspl", which="nothing")


def test_test_splits_of_a_data_root(bench, tmp_path):
    assert list(find_test_splits(bench)) == ["single", "multi"]
    (tmp_path / "test.h5").write_bytes(b"")
    assert list(find_test_splits(tmp_path)) == ["test"]


def test_evaluate_methods_and_results_json(tmp_path, run_root, bench):
    cfg = SSPLConfig(data_root=str(bench), **TINY)
    res, data = evaluate_methods(cfg, run_root, ["sspl", "sspl_wo_pcm"], batch_size=5, device="cpu", progress=False)
    models = ["sspl", "sspl_wo_pcm", "center_prior", "whole_image", "feature_l2norm", "random", "sspl_shuffled_audio",
              "sspl_silent_audio", "sspl_wo_pcm_shuffled_audio", "sspl_wo_pcm_silent_audio"]
    assert list(res) == models and list(data) == ["single", "multi"]
    path = write_results(res, tmp_path / "results.json")
    out = json.loads(path.read_text())
    assert list(out) == models
    for mname in models:
        assert set(out[mname]) == {"single", "multi"}
        for rec in out[mname].values():
            assert isinstance(rec["ciou"], float) and isinstance(rec["auc"], float) and rec["n"] == 10
            assert 0 <= rec["ciou"] <= 1 and 0 <= rec["auc"] <= 1 and "ciou_median" in rec
    assert out == results_json(res)
    # the stored numbers are those of a direct evaluation of the same run
    direct = evaluate_model(load_run(run_root / "sspl"), bench / "test_multi.h5", batch_size=7)["summary"]["fixed"]
    assert out["sspl"]["multi"]["ciou"] == direct["ciou"] and out["sspl"]["multi"]["auc"] == direct["auc"]
    assert results_table(res).count("\n") == len(res) + 1
    missing, _ = evaluate_methods(cfg, run_root, ["sspl", "sacl"], controls=(), progress=False)  # sacl: no run
    assert list(missing) == ["sspl", "center_prior", "whole_image", "feature_l2norm", "random"]
    alone, _ = evaluate_methods(cfg, tmp_path / "no_runs", ["sspl"], progress=False)
    assert list(alone) == ["center_prior", "whole_image", "random"]  # feature_l2norm needs a run's visual encoder


def test_vggss_center_prior(tmp_path):
    assert vggss_center_prior(tmp_path) is None  # metadata absent: skipped cleanly
    boxes = {"a": [[0.25, 0.25, 0.75, 0.75]], "b": [[0.0, 0.0, 0.2, 0.2], [0.8, 0.8, 1.0, 1.0]], "c": [[0.3, 0.3, 0.7, 0.7]]}
    (tmp_path / "vggss_test_5158.json").write_text(json.dumps([{"file": k, "class": "x", "bbox": v} for k, v in boxes.items()]))
    (tmp_path / "vggss_test_4692.csv").write_text("a\nb\n")
    out = vggss_center_prior(tmp_path, batch_size=1)
    assert out["n"] == 2
    from sspl_lib.baselines import center_prior
    from sspl_lib.data.gt import vggss_gt_map

    for p in ("fixed", "median"):
        ref = [metrics.ciou(center_prior(1)[0], vggss_gt_map(boxes[k]), protocol=p) for k in ("a", "b")]
        np.testing.assert_allclose(out["cious"][p], ref)
    assert out["cious"]["fixed"][0] > out["cious"]["fixed"][1]


def test_real_flickr_layout_through_reader(tmp_path, model):
    """A miniature SoundNet-Flickr test layout (jpg + wav + XML) read by data.real.FlickrTest."""
    import soundfile as sf
    from PIL import Image

    from sspl_lib.data.gt import flickr_gt_map
    from sspl_lib.data.real import FlickrTest
    from sspl_lib.data.synthetic import flickr_xml

    base = tmp_path / "SoundNet_Flickr"
    rng = np.random.default_rng(0)
    ids = ["1001", "1002", "1003"]
    for sub in ("5k_labeled/Data/frames", "5k_labeled/Data/audio", "5k_labeled/Annotations"):
        (base / sub).mkdir(parents=True)
    for k, i in enumerate(ids):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / f"5k_labeled/Data/frames/{i}.jpg")
        sf.write(base / f"5k_labeled/Data/audio/{i}.wav", rng.normal(0, 0.1, 16000 * 3).astype(np.float32), 16000)
        box = np.array([[40 + 10 * k, 40, 200, 180 - 20 * k]] * 2)
        (base / f"5k_labeled/Annotations/{i}.xml").write_text(flickr_xml(i, box))
    (base / "flickr_test249_in5k.csv").write_text("".join(f"{i},{k}\n" for k, i in enumerate(ids)))
    ds = FlickrTest(tmp_path, img_size=48)
    for audio in ("matched", "shuffled", "silent"):
        res = evaluate_model(model, ds, batch_size=2, audio=audio)
        assert res["n"] == 3 and res["ids"] == ids and res["heatmaps"].shape[0] == 3
        for j, i in enumerate(ids):
            gt = flickr_gt_map(base / f"5k_labeled/Annotations/{i}.xml")
            assert res["cious"]["fixed"][j] == pytest.approx(metrics.ciou(res["heatmaps"][j], gt), abs=1e-12)
    frames = torch.stack([ds[j]["frame"] for j in range(3)])
    ref = model.heatmap(frames, torch.stack([ds[j]["spect"] for j in range(3)]))
    torch.testing.assert_close(evaluate_model(model, ds, batch_size=3)["heatmaps"], ref, rtol=1e-4, atol=1e-5)


def test_bf16_evaluation_is_close_to_float32(bench, model):
    """amp="bf16" really runs in bf16 (heatmaps differ) yet stays within the bf16 tolerance of float32;
    the default is float32 (the reported numbers)."""
    f32 = evaluate_model(model, bench / "test_single.h5", batch_size=4)
    again = evaluate_model(model, bench / "test_single.h5", batch_size=4, amp="none")
    b16 = evaluate_model(model, bench / "test_single.h5", batch_size=4, amp="bf16")
    assert torch.equal(f32["heatmaps"], again["heatmaps"])
    d = (b16["heatmaps"] - f32["heatmaps"]).abs().max().item()
    assert 0 < d <= 1e-2
    assert np.abs(b16["cious"]["fixed"] - f32["cious"]["fixed"]).mean() <= 0.05
    with pytest.raises(ValueError, match="amp"):
        evaluate_model(model, bench / "test_single.h5", batch_size=4, amp="fp8")


def test_bf16_quality_script_on_a_run_folder(run_root, bench):
    from benchmarks.bf16_quality import main

    out = main(["--run-dir", str(run_root), "--data-root", str(bench), "--threads", "1", "--models", "sspl", "absent"])
    assert set(out) == {"sspl/single", "sspl/multi"}  # a missing run is skipped
    f32 = evaluate_model(load_run(run_root / "sspl"), bench / "test_single.h5", protocol=("fixed",))["summary"]["fixed"]
    r = out["sspl/single"]
    assert r["ciou_f32"] == f32["ciou"] and r["auc_f32"] == f32["auc"]
    assert 0 <= r["ciou_bf16"] <= 1 and 0 < r["heatmap_max_abs_diff"] <= 5e-2

"""The audio-dependence splits (swap, extended) of generated benchmarks, drawn and composited, and their scoring
through sspl_lib.experiments.evaluate: real files, a run made by fit, maps with known answers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from sspl_lib import metrics
from sspl_lib.av_metrics import extended_ap, slavc_confidence
from sspl_lib.config import SSPLConfig
from sspl_lib.data.gt import vggss_gt_map
from sspl_lib.data.h5 import load_split
from sspl_lib.data.synthetic import generate_benchmark
from sspl_lib.data.transforms import eval_frame

SMALL = dict(seed=5, n_train=8, n_val=4, n_test=3, n_labeled=2, frame_size=48, workers=1, progress=False)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("listen") / "b", n_swap=6, n_extended=16, chunk=4, **SMALL)


def _hashes(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "meta.json"}


def check_swap(d: dict) -> None:
    """Each row's box is its scene's object `object`; every object of a scene sounds once; one frame a scene."""
    scenes = np.unique(d["scene"])
    for s in scenes:
        rows = np.flatnonzero(d["scene"] == s)
        n_obj = int(np.isfinite(d["all_boxes"][rows[0]]).all(-1).sum())
        assert n_obj in (2, 3) and len(rows) == n_obj
        assert sorted(d["object"][rows]) == list(range(n_obj))  # each object sounds exactly once
        labels = d["all_labels"][rows[0], :n_obj]
        assert len(set(labels.tolist())) == n_obj  # different classes
        for r in rows:
            assert d["frames"][r].tobytes() == d["frames"][rows[0]].tobytes()  # the same scene
            np.testing.assert_array_equal(d["all_boxes"][r], d["all_boxes"][rows[0]])
            np.testing.assert_array_equal(d["boxes"][r], d["all_boxes"][r, d["object"][r]])  # its own object's box
            assert d["label"][r] == labels[d["object"][r]]
        assert len({d["audio"][r].tobytes() for r in rows}) == n_obj  # one sound each
        assert d["ids"][rows[0]] == f"swap_{s:06d}_0"


def check_extended(d: dict) -> None:
    vis = d["visible"].astype(bool)
    assert vis.any() and (~vis).any()
    np.testing.assert_array_equal(vis, d["label"] >= 0)
    np.testing.assert_array_equal(d["boxes"][vis], d["all_boxes"][vis, 0])
    np.testing.assert_array_equal(d["sound_label"][vis], d["label"][vis])
    assert np.isnan(d["boxes"][~vis]).all()
    for r in np.flatnonzero(~vis):  # off screen (a class not in the frame) or only noise
        assert d["sound_label"][r] == -1 or d["sound_label"][r] not in d["all_labels"][r]


def test_swap_and_extended_splits_drawn(bench):
    sw, ex = load_split(bench / "swap.h5"), load_split(bench / "extended.h5")
    assert sorted(np.unique(sw["scene"])) == list(range(6)) and list(sw["scene"]) == sorted(sw["scene"])
    assert sw["spects"].shape == (len(sw["ids"]), 3, 96, 64) and sw["audio"].shape[1] == 48000
    check_swap(sw)
    assert len(ex["ids"]) == 16 and 4 <= int(ex["visible"].sum()) <= 12
    check_extended(ex)
    meta = json.loads((bench / "meta.json").read_text())
    assert meta["sizes"]["swap"] == 6 and meta["sizes"]["extended"] == 16


def test_new_splits_leave_the_others_unchanged_and_chunking_is_free(bench, tmp_path):
    plain = generate_benchmark(tmp_path / "plain", chunk=4, **SMALL)
    assert not (plain / "swap.h5").exists() and not (plain / "extended.h5").exists()
    new, old = _hashes(bench), _hashes(plain)
    assert {k: new[k] for k in old} == old and set(new) - set(old) == {"swap.h5", "extended.h5"}  # byte for byte
    m_new, m_old = (json.loads((r / "meta.json").read_text()) for r in (bench, plain))
    assert "swap" not in m_old["sizes"] and {k for k in m_new if m_new[k] != m_old[k]} <= {"sizes", "seconds"}
    other = generate_benchmark(tmp_path / "c1", **(SMALL | dict(n_train=0, n_val=0, n_test=0, n_labeled=0)),
                               n_swap=6, n_extended=16, chunk=1)
    for split in ("swap", "extended"):
        a, b = load_split(bench / f"{split}.h5"), load_split(other / f"{split}.h5")
        for k in a.keys() - {"attrs"}:
            assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), (split, k)


def test_swap_and_extended_splits_from_assets(tmp_path):
    from sspl_lib.data.demo_assets import make_demo_assets

    demo = make_demo_assets(tmp_path / "demo", seed=0, n_classes=4, image_size=64)
    out = generate_benchmark(tmp_path / "a", seed=2, n_train=0, n_val=0, n_test=0, n_labeled=0, frame_size=48,
                             workers=1, progress=False, assets=demo, n_swap=4, n_extended=12)
    check_swap(load_split(out / "swap.h5"))
    check_extended(load_split(out / "extended.h5"))
    assert json.loads((out / "meta.json").read_text())["sizes"] == dict(
        train=0, val=0, test_single=0, test_multi=0, labeled_images=0, labeled_sounds=0, swap=4, extended=12)


# ----------------------------------------------------------------------------- scoring with known answers
def _box_maps(boxes, size=56) -> torch.Tensor:
    """Maps that are 1 inside each normalized box (NaN box -> zeros), on a size x size grid."""
    out = torch.zeros(len(boxes), size, size)
    for i, b in enumerate(boxes):
        if np.isfinite(b).all():
            x0, y0, x1, y1 = (np.asarray(b) * size).round().astype(int)
            out[i, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1
    return out


def test_swap_scores_of_known_maps(bench):
    from sspl_lib.experiments.evaluate import evaluate_baseline, load_eval_split, score_heatmaps

    data = load_eval_split(bench / "swap.h5")
    oracle = score_heatmaps(_box_maps(data.boxes[:, 0]), data, "fixed")
    assert oracle["follow_rate"] == 1.0 and oracle["n_scenes"] == 6 and oracle["follows"].all()
    first = score_heatmaps(_box_maps(data.rows["all_boxes"][:, 0]), data, "fixed")  # always object 0
    assert first["follow_rate"] == 0.0 and first["follows"].sum() == 6  # only the rows where object 0 sounds
    # the per-row cIoU is metrics.ciou against the sounding object's box
    i = 1
    assert oracle["cious"]["fixed"][i] == metrics.ciou(_box_maps(data.boxes[:, 0])[i], vggss_gt_map([data.boxes[i, 0]]))
    whole = evaluate_baseline("whole_image", bench / "swap.h5", protocol="fixed")
    assert whole["follow_rate"] == 0.0 and whole["summary"]["fixed"]["n"] == data.n
    cut = evaluate_baseline("center_prior", bench / "swap.h5", limit=data.n - 1)  # the last scene is incomplete
    assert cut["n_scenes"] == 5
    assert "follow_rate" not in evaluate_baseline("center_prior", bench / "test_multi.h5")  # not a swap split


def test_extended_scores_of_known_maps(bench):
    from sspl_lib.experiments.evaluate import evaluate_baseline, load_eval_split, score_heatmaps

    data = load_eval_split(bench / "extended.h5")
    vis = data.rows["visible"].astype(bool)
    assert data.n == 16  # every clip kept
    oracle = score_heatmaps(_box_maps(data.boxes[:, 0]), data, "fixed")  # the box where visible, zeros elsewhere
    assert np.isnan(oracle["cious"]["fixed"][~vis]).all() and oracle["summary"]["fixed"]["n"] == vis.sum()
    assert oracle["max_f1"] == 1.0 and oracle["ap"] > 0.5
    assert oracle["ap"] == extended_ap(vis, oracle["cious"]["fixed"], slavc_confidence(_box_maps(data.boxes[:, 0])))
    whole = evaluate_baseline("whole_image", data=data, protocol="fixed")  # no confidence, empty masks
    assert whole["ap"] == 0.0 and whole["max_f1"] == 0.0
    assert "ap" not in evaluate_baseline("center_prior", bench / "swap.h5")  # not an extended split


def test_profile_scores_the_listen_splits(bench, tmp_path):
    from sspl_lib.experiments.evaluate import evaluate_baseline, load_eval_split
    from sspl_lib.experiments.study import evaluate_methods
    from sspl_lib.experiments.results import results_json
    from sspl_lib.experiments.runs import load_run
    from sspl_lib.experiments.train import fit

    cfg = SSPLConfig(data_root=str(bench), img_size=48, pretrained=False, pcm_cycles=1, encoder_width=8, epochs=1,
                     batch_size=4, threads=1, val_samples=0)
    fit(cfg, tmp_path / "sspl", progress=False)
    res, data = evaluate_methods(cfg, tmp_path, ["sspl"], controls=("shuffled",), batch_size=8, device="cpu",
                                 progress=False)
    assert list(data) == ["single", "multi", "swap", "extended"]
    assert list(res) == ["sspl", "center_prior", "whole_image", "feature_l2norm", "random", "sspl_shuffled_audio"]
    out = results_json(res)
    n_vis = int(load_split(bench / "extended.h5")["visible"].sum())
    for model, per in out.items():
        assert set(per) == {"single", "multi", "swap", "extended"}
        assert 0 <= per["swap"]["follow_rate"] <= 1 and "follow_rate" not in per["single"]
        assert 0 <= per["extended"]["ap"] <= 1 and 0 <= per["extended"]["max_f1"] <= 1
        assert "ap_median" in per["extended"] and per["extended"]["n"] == n_vis
        assert "ap" not in per["swap"]
    assert out["whole_image"]["swap"]["follow_rate"] == 0.0 and out["whole_image"]["extended"]["ap"] == 0.0
    # feature_l2norm: the first run's frozen visual encoder, its per-location L2 norm
    model = load_run(tmp_path / "sspl")
    sw = load_eval_split(bench / "swap.h5")
    with torch.no_grad():
        want = torch.linalg.vector_norm(model.visual(eval_frame(torch.from_numpy(sw.frames), 48)), dim=1)
    torch.testing.assert_close(res["feature_l2norm"]["swap"]["heatmaps"], want)
    direct = evaluate_baseline("feature_l2norm", data=sw, model=model)
    assert direct["follow_rate"] == res["feature_l2norm"]["swap"]["follow_rate"]
    with pytest.raises(ValueError, match="needs model="):
        evaluate_baseline("feature_l2norm", data=sw)


def test_swap_figure_of_one_scene(bench, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from sspl_lib.experiments.evaluate import evaluate_baseline, load_eval_split, score_heatmaps
    from sspl_lib.experiments.report import swap_figure

    data = load_eval_split(bench / "swap.h5")
    oracle = {"heatmaps": _box_maps(data.boxes[:, 0])} | score_heatmaps(_box_maps(data.boxes[:, 0]), data, "fixed")
    results = {"oracle": {"swap": oracle}, "center_prior": {"swap": evaluate_baseline("center_prior", data=data)},
               "whole_image": {"single": {}}}  # no swap entry: left out
    fig = swap_figure(results, data)  # default: the first scene with the most objects
    counts = np.bincount(data.rows["scene"])
    scene = int(np.argmax(counts))
    assert len(fig.axes) == 2 * counts[scene] and f"scene {scene}" in fig._suptitle.get_text()
    names = [c["name"] for c in json.loads((bench / "meta.json").read_text())["classes"]]
    rows = np.flatnonzero(data.rows["scene"] == scene)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t.split("\n")[0] for t in titles[:len(rows)]] == [f"sound of {names[data.rows['label'][r]]}" for r in rows]
    assert all("follows" in t for t in titles[:len(rows)])  # the oracle follows every sound
    assert [ax.get_ylabel() for ax in fig.axes[::len(rows)]] == ["oracle", "center_prior"]
    fig.savefig(tmp_path / "swap.png")
    assert (tmp_path / "swap.png").stat().st_size > 1000
    one = swap_figure(results, data, scene=0, models=["center_prior"])
    follow = ["· follows" in ax.get_title() for ax in one.axes]
    assert len(follow) == counts[0] and sum(follow) <= 1  # one map for every sound: at most one sound followed
    with pytest.raises(ValueError, match="no swap result"):
        swap_figure(results, data, models=["whole_image"])
    with pytest.raises(ValueError, match="not a swap split"):
        swap_figure(results, load_eval_split(bench / "test_multi.h5"))


def test_ensure_benchmark_knows_the_new_sizes(tmp_path):
    from sspl_lib.data.overview import ensure_benchmark

    params = SMALL | dict(n_train=2, n_val=0, n_test=0, n_labeled=0)
    root, reused = ensure_benchmark(tmp_path / "e", **params)
    assert not reused and not (root / "swap.h5").exists()
    assert ensure_benchmark(root, **params, n_swap=0)[1]  # 0 = not asked: the same benchmark
    root, reused = ensure_benchmark(root, **params, n_swap=2)
    assert not reused and (root / "swap.h5").is_file()
    assert ensure_benchmark(root, **params, n_swap=2)[1]

"""Synthetic benchmark: determinism, split properties, annotation files."""

import json
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from sspl_lib.data.gt import flickr_gt_map, load_vggss_annotations, vggss_gt_map
from sspl_lib.data.h5 import load_split
from sspl_lib.data.synth_sample import MAXOBJ, render_sample
from sspl_lib.data.synthetic import generate_benchmark, render_chunk

SPLITS = ("train", "val", "test_single", "test_multi", "labeled_images", "labeled_sounds")


def test_render_sample_is_deterministic_and_seed_dependent():
    f1, w1, i1 = render_sample(0, "test_multi", 5, frame_size=64)
    f2, w2, i2 = render_sample(0, "test_multi", 5, frame_size=64)
    f3, w3, _ = render_sample(1, "test_multi", 5, frame_size=64)
    assert f1.dtype == np.uint8 and f1.shape == (64, 64, 3) and w1.dtype == np.float32 and w1.shape == (48000,)
    assert f1.tobytes() == f2.tobytes() and w1.tobytes() == w2.tobytes()
    np.testing.assert_array_equal(i1["all_boxes"], i2["all_boxes"])
    assert f1.tobytes() != f3.tobytes() and w1.tobytes() != w3.tobytes()
    # other splits are other streams: same index, different content
    assert render_sample(0, "test_single", 5, frame_size=64)[0].tobytes() != f1.tobytes()


def test_chunking_does_not_change_bytes():
    whole = render_chunk((0, "val", 0, 6, 48, 8, 0.0, 3))[1]
    parts = [render_chunk((0, "val", a, b, 48, 8, 0.0, 3))[1] for a, b in ((0, 2), (2, 6))]
    for key in ("frames", "audio", "spects", "boxes", "label", "annotators"):
        assert np.concatenate([p[key] for p in parts]).tobytes() == whole[key].tobytes(), key


def test_parallel_equals_serial(tmp_path, tiny_benchmark):
    par = generate_benchmark(tmp_path / "par", seed=3, n_train=40, n_val=8, n_test=24, n_labeled=16,
                             frame_size=64, workers=2, chunk=16, progress=False)
    for split in SPLITS:
        a, b = load_split(tiny_benchmark / f"{split}.h5"), load_split(par / f"{split}.h5")
        assert a.keys() == b.keys()
        for k in a:
            if k != "attrs":
                assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), (split, k)
    assert (tiny_benchmark / "annotations/test_multi/vggss.json").read_bytes() == \
        (par / "annotations/test_multi/vggss.json").read_bytes()


def test_layout_formats_and_meta(tiny_benchmark):
    meta = json.loads((tiny_benchmark / "meta.json").read_text())
    assert meta["n_classes"] == 8 and len(meta["classes"]) == 8 and meta["sizes"]["train"] == 40
    assert len({c["shape"] for c in meta["classes"]}) == 8 and len({c["colour"] for c in meta["classes"]}) == 8
    with h5py.File(tiny_benchmark / "train.h5") as f:
        assert f.attrs["format"] == "sspl-h5/1" and f.attrs["source"] == "synthetic" and f.attrs["split"] == "train"
        assert f["frames"].dtype == np.uint8 and f["frames"].shape == (40, 64, 64, 3)
        assert f["frames"].chunks == (1, 64, 64, 3)
        assert f["audio"].shape == (40, 48000) and f["spects"].shape == (40, 3, 96, 64)
        assert f["all_boxes"].shape == (40, MAXOBJ, 4) and f["all_labels"].dtype == np.int16
    li = load_split(tiny_benchmark / "labeled_images.h5")
    assert set(li) == {"frames", "label", "boxes", "ids", "attrs"}
    ls = load_split(tiny_benchmark / "labeled_sounds.h5")
    assert set(ls) == {"audio", "spects", "label", "ids", "attrs"}
    assert ls["audio"].min() >= -1 and ls["audio"].max() <= 1 and np.isfinite(ls["spects"]).all()
    assert not (tiny_benchmark / "train.h5.partial").exists()


def _areas(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def test_split_properties(tiny_benchmark):
    single = load_split(tiny_benchmark / "test_single.h5")
    multi = load_split(tiny_benchmark / "test_multi.h5")
    train = load_split(tiny_benchmark / "train.h5")
    assert ((single["all_labels"] >= 0).sum(1) == 1).all()
    n_multi = (multi["all_labels"] >= 0).sum(1)
    assert set(n_multi) <= {2, 3} and len(set(n_multi)) == 2
    for d in (single, multi, train):
        assert (d["label"] >= 0).all()  # off_screen_frac = 0: every clip has an on-screen source
        np.testing.assert_array_equal(d["label"], d["all_labels"][:, 0])  # the sounding object is stored first
        np.testing.assert_array_equal(d["boxes"], d["all_boxes"][:, 0])
        a = _areas(d["boxes"])
        assert (a > 0.03).all() and (a < 0.5).all() and 0.06 < np.median(a) < 0.3
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 1).all()
    # classes within a multi scene differ
    for row in multi["all_labels"]:
        k = row[row >= 0]
        assert len(set(k)) == len(k)


def test_positions_spread_and_classes_balanced():
    info = [render_sample(0, "test_single", i, frame_size=48)[2] for i in range(120)]
    cx = np.array([(i["box"][0] + i["box"][2]) / 2 for i in info])
    cy = np.array([(i["box"][1] + i["box"][3]) / 2 for i in info])
    assert cx.std() > 0.12 and cy.std() > 0.12 and cx.min() < 0.3 and cx.max() > 0.7
    assert np.bincount([i["label"] for i in info], minlength=8).min() >= 5


def test_off_screen_fraction(tmp_path):
    infos = [render_sample(0, "train", i, frame_size=32, off_screen_frac=0.5)[2] for i in range(60)]
    silent = [i for i in infos if i["label"] == -1]
    assert 15 <= len(silent) <= 45
    assert all(np.isnan(i["box"]).all() for i in silent)
    assert all(i["audio"] == "noise" or int(i["audio"].split()[1]) not in i["all_labels"] for i in silent)


def test_annotations_match_boxes(tiny_benchmark):
    d = load_split(tiny_benchmark / "test_multi.h5")
    ann = load_vggss_annotations(tiny_benchmark / "annotations/test_multi/vggss.json")
    assert list(ann) == d["ids"]
    for k, i in enumerate(d["ids"][:6]):
        np.testing.assert_allclose(ann[i][0], d["boxes"][k], atol=1e-6)
        xml = tiny_benchmark / f"annotations/test_multi/{i}.xml"
        root = ET.parse(xml).getroot()
        boxes = [[int(c.text) for c in list(b)[1:]] for b in root.iter("bbox")]
        assert len(boxes) == 3
        jit = np.abs(np.asarray(boxes) / 256 - d["boxes"][k]).max()
        assert jit < 0.08  # annotators agree roughly with the true box
        gt = flickr_gt_map(xml)
        assert set(np.unique(gt)) <= {0, 0.5, 1} and gt.max() == 1
        v = vggss_gt_map(ann[i])
        assert ((gt == 1) & (v == 0)).mean() < 0.02  # consensus region ~ the true box


def test_without_audio_and_empty_splits(tmp_path):
    out = generate_benchmark(tmp_path / "na", seed=1, n_train=4, n_val=0, n_test=2, n_labeled=0, frame_size=32,
                             store_audio=False, workers=1, progress=False)
    assert sorted(p.name for p in out.glob("*.h5")) == ["test_multi.h5", "test_single.h5", "train.h5"]
    d = load_split(out / "train.h5")
    assert "audio" not in d and d["spects"].shape == (4, 3, 96, 64)
    assert json.loads((out / "meta.json").read_text())["store_audio"] is False


def test_split_gt_maps(tiny_benchmark):
    from sspl_lib.data.synthetic import split_gt_maps

    f = split_gt_maps(tiny_benchmark, "test_single")
    v = split_gt_maps(tiny_benchmark, "test_single", style="vggss", size=64)
    assert f.shape == (24, 224, 224) and v.shape == (24, 64, 64)
    assert set(np.unique(f)) <= {0, 0.5, 1} and set(np.unique(v)) == {0, 1}
    b = load_split(tiny_benchmark / "test_single.h5", ["boxes"])["boxes"]
    np.testing.assert_allclose(v.mean((1, 2)), _areas(b), atol=0.05)

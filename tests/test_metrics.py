"""Tests of sspl_lib.metrics against an independent numpy reference (the official procedure) and hand-computed
cases; the batched kernel against the reference `ciou`, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sspl_lib import metrics as M
from sspl_lib.baselines import center_prior

REPO = Path(__file__).resolve().parents[1]
META = REPO.parent / "shared" / "metadata"


# ----------------------------------------------------------------------------- independent reference
def bilinear_axis(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of half-pixel bilinear resampling with edge clamping (OpenCV INTER_LINEAR)."""
    w = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0 if i0 < n_in - 1 else 0.0
        w[d, i0] += 1 - lam
        w[d, i1] += lam
    return w


def resize_ref(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    return bilinear_axis(img.shape[0], size[0]) @ img @ bilinear_axis(img.shape[1], size[1]).T


def ciou_ref(heatmap, gt, protocol="fixed", thres=0.5) -> float:
    """Per-sample procedure of the official eval_cal_ciou, numpy only (constant map -> zeros, 0/0 -> 0)."""
    m = resize_ref(heatmap, gt.shape)
    ptp = m.max() - m.min()
    m = (m - m.min()) / ptp if ptp > 0 else np.zeros_like(m)
    if protocol == "fixed":
        mask = np.zeros_like(m)
        mask[m >= thres] = 1
    else:
        thr = np.sort(m.flatten())[int(m.shape[0] * m.shape[1] / 2)]
        mask = (m >= thr).astype(np.float64)
    union = np.sum(gt) + np.sum(mask * (gt == 0))
    return float(np.sum(mask * gt) / union) if union > 0 else 0.0


def auc_ref(cious) -> float:
    c = np.asarray(cious)
    x = [0.05 * i for i in range(21)]
    y = [np.sum(c >= t) / len(c) for t in x]
    return float(np.trapezoid(y, x))


def random_gt(rng, n, size=224, consensus=True) -> np.ndarray:
    """(n,size,size) maps made of 1-3 random boxes; with consensus, summed/2 and clipped (Flickr rule)."""
    out = np.zeros((n, size, size))
    for k in range(n):
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, size - 20, 2)
            x1, y1 = x0 + rng.integers(10, size - x0), y0 + rng.integers(10, size - y0)
            out[k, y0:y1, x0:x1] += 1
        out[k] = np.minimum(out[k] / 2, 1) if consensus else (out[k] > 0)
    return out


# ----------------------------------------------------------------------------- upsampling
def test_reference_resize_agrees_with_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    img = np.random.default_rng(0).normal(size=(14, 14))
    sp = ndimage.zoom(img, 16, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(resize_ref(img, (224, 224)), sp, atol=1e-12)


@pytest.mark.parametrize("shape", [(14, 14), (7, 7), (13, 17), (224, 224)])
def test_upsample_matches_reference(shape):
    img = np.random.default_rng(1).normal(size=shape)
    up64 = M.upsample(torch.from_numpy(img)[None], (224, 224))[0]
    assert up64.dtype == np.float64 and up64.shape == (224, 224)
    np.testing.assert_allclose(up64, resize_ref(img, (224, 224)), atol=1e-12)
    img32 = img.astype(np.float32)
    up32 = M.upsample(img32, (224, 224))  # computed in float64 whatever the input dtype
    np.testing.assert_allclose(up32, resize_ref(img, (224, 224)), atol=1e-5)
    np.testing.assert_allclose(up32, resize_ref(img32, (224, 224)), atol=1e-12)
    if shape[0] in (7, 14, 224):  # power-of-two scale: mirrored weights are exact, symmetry is kept exactly
        sym = img + img[::-1]
        assert np.array_equal(M.upsample(sym, (224, 224)), M.upsample(sym, (224, 224))[::-1])


def test_minmax_exact_and_constant_maps():
    m = M.minmax(M.upsample(np.array([[0.0, 2.0], [1.0, 4.0]]), (8, 8)))
    assert m.shape == (8, 8) and m.min() == 0.0 and m.max() == 1.0
    np.testing.assert_array_equal(M.minmax(np.array([[-1.0, 0.0], [1.0, 3.0]])), [[0.0, 0.25], [0.5, 1.0]])
    assert np.all(M.minmax(np.ones((3, 3))) == 0) and np.all(M.minmax(np.full((2, 5, 5), -7.5)) == 0)
    batch = np.stack([np.arange(4.0).reshape(2, 2), np.full((2, 2), 3.0)])  # each map normalized on its own
    np.testing.assert_array_equal(M.minmax(batch), [[[0, 1 / 3], [2 / 3, 1]], [[0, 0], [0, 0]]])


# ----------------------------------------------------------------------------- hand-computed cIoU
def square_gt(a=56, b=168):
    gt = np.zeros((224, 224))
    gt[a:b, a:b] = 1
    return gt


def test_ciou_exact_top_half_mask():
    hm = np.zeros((224, 224))
    hm[:112] = 1  # identity resize -> mask = top half exactly
    # gt 112x112 square rows/cols 56..167: inter 56*112, mask outside gt 112*224 - 56*112
    expected = 56 * 112 / (112 * 112 + 112 * 224 - 56 * 112)
    assert expected == pytest.approx(0.2)
    assert M.ciou(hm, square_gt()) == pytest.approx(expected, abs=1e-15)
    assert float(M.ciou_batch(torch.from_numpy(hm)[None], torch.from_numpy(square_gt())[None])[0]) == \
        pytest.approx(expected, abs=1e-15)


def test_ciou_exact_after_upsampling():
    # 1x2 map [1, 0] -> columns d with 1 - l(d) >= 0.4, l(d) = (d+0.5)/112 - 0.5 -> d <= 122 (123 columns)
    hm = np.array([[1.0, 0.0]])
    gt = np.zeros((224, 224))
    gt[:, 100:150] = 1
    expected = 23 / (50 + 100)
    for proto_kw in ({"threshold": 0.4},):
        assert M.ciou(hm, gt, **proto_kw) == pytest.approx(expected, abs=1e-15)
        got = M.ciou_batch(torch.tensor(hm)[None], torch.tensor(gt)[None], **proto_kw)
        assert float(got[0]) == pytest.approx(expected, abs=1e-15)


def test_median_protocol_hand_case():
    hm = np.arange(224 * 224, dtype=np.float64).reshape(224, 224)  # sorted index 25088 -> rows 112..223
    gt = square_gt()
    expected = 56 * 112 / (112 * 112 + 112 * 224 - 56 * 112)
    assert M.ciou(hm, gt, protocol="median") == pytest.approx(expected, abs=1e-15)
    assert float(M.ciou_batch(torch.tensor(hm)[None], torch.tensor(gt)[None], "median")[0]) == \
        pytest.approx(expected, abs=1e-15)
    # the fixed protocol on the same map: normalized >= 0.5 starts at value 25087.5 -> same rows here
    assert M.ciou(hm, gt) == pytest.approx(expected, abs=1e-15)


def test_consensus_half_values():
    hm = np.zeros((224, 224))
    hm[:112] = 1  # top-half mask
    gt = np.zeros((224, 224))
    gt[0:56, 0:224] = 0.5  # inside mask, half weight
    gt[56:112, 0:112] = 1  # inside mask, full weight
    gt[150:200, 0:100] = 1  # outside mask
    inter = 0.5 * 56 * 224 + 56 * 112
    union = gt.sum() + 56 * 112  # zero-gt pixels inside the mask: rows 56..111, cols 112..223
    assert M.ciou(hm, gt) == pytest.approx(inter / union, abs=1e-15)
    assert M.ciou(hm, gt) == pytest.approx(ciou_ref(hm, gt), abs=1e-15)


def test_ties_at_the_threshold_are_in_the_mask():
    """Normalized values exactly at the threshold are in the mask, the next float below is not (identity resize)."""
    hm = np.zeros((224, 224))
    hm[:, 112:] = 1.0
    hm[:56, :56] = 0.5  # exactly the fixed threshold after normalization
    hm[56:112, :56] = np.nextafter(0.5, 0.0)
    gt = np.zeros((224, 224))
    gt[:112, :56] = 1
    expected = 56 * 56 / (112 * 56 + 224 * 112)  # hits rows 0..55; false alarms: the right half
    assert M.ciou(hm, gt) == pytest.approx(expected, abs=1e-15)
    assert float(M.ciou_batch(hm[None], gt[None])[0]) == M.ciou(hm, gt)
    mask = M.localization_mask(hm, (224, 224))
    assert mask[:56, :56].all() and not mask[56:112, :56].any()
    for t in (0.0, 1.0):  # the extreme levels: everything, and only the maximum
        assert float(M.ciou_batch(hm[None], gt[None], threshold=t)[0]) == M.ciou(hm, gt, threshold=t)
    assert M.localization_mask(hm, (224, 224), threshold=0.0).all()


def test_constant_map_is_nan_safe():
    gt = square_gt()
    for c in (0.0, 3.5, -2.0):
        hm = np.full((14, 14), c)
        assert M.ciou(hm, gt) == 0.0  # normalized to zeros -> empty mask
        assert M.ciou(hm, gt, protocol="median") == pytest.approx(0.25)  # full mask: 12544 / 50176
        b = M.ciou_batch(torch.tensor(hm)[None], torch.tensor(gt)[None])
        assert not torch.isnan(b).any() and float(b[0]) == 0.0
        assert float(M.ciou_batch(torch.tensor(hm)[None], torch.tensor(gt)[None], "median")[0]) == pytest.approx(0.25)
    empty = np.zeros((224, 224))
    assert M.ciou(np.full((14, 14), 1.0), empty) == 0.0  # 0/0 -> 0
    assert M.ciou(np.random.default_rng(0).random((14, 14)), empty) == 0.0  # mask only outside gt


# ----------------------------------------------------------------------------- scalar vs reference vs batch
@pytest.mark.parametrize("protocol", ["fixed", "median"])
@pytest.mark.parametrize("shape", [(14, 14), (7, 7), (20, 20)])
def test_scalar_and_batch_match_reference(protocol, shape):
    rng = np.random.default_rng([("fixed", "median").index(protocol), *shape])  # fixed integers: replayable
    n = 24
    hm = rng.normal(size=(n, *shape))
    gt = random_gt(rng, n, consensus=shape != (7, 7))
    ref = np.array([ciou_ref(hm[i], gt[i], protocol) for i in range(n)])
    scalar = np.array([M.ciou(hm[i], gt[i], protocol) for i in range(n)])
    batch = M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt), protocol).numpy()
    np.testing.assert_allclose(scalar, ref, atol=1e-12)
    np.testing.assert_array_equal(batch, scalar)  # float64: exactly equal
    assert 0 < ref.mean() < 1


@pytest.mark.parametrize("protocol", ["fixed", "median"])
def test_batch_matches_scalar_float32(protocol):
    rng = np.random.default_rng(7)
    n = 40
    hm = torch.from_numpy(rng.normal(size=(n, 14, 14))).float()
    hm[3] = 1.25  # a constant map inside a batch
    gt = torch.from_numpy(random_gt(rng, n)).float()
    batch = M.ciou_batch(hm, gt, protocol).numpy()
    scalar = np.array([M.ciou(hm[i], gt[i].numpy(), protocol) for i in range(n)])
    np.testing.assert_array_equal(batch, scalar)
    for thr in (0.3, 0.7):
        b = M.ciou_batch(hm, gt, threshold=thr).numpy()
        s = np.array([M.ciou(hm[i].numpy(), gt[i].numpy(), threshold=thr) for i in range(n)])
        np.testing.assert_array_equal(b, s)


def test_batch_chunking_and_empty():
    rng = np.random.default_rng(3)
    hm, gt = torch.from_numpy(rng.normal(size=(37, 14, 14))), torch.from_numpy(random_gt(rng, 37))
    full = M.ciou_batch(hm, gt)
    parts = torch.cat([M.ciou_batch(hm[i:i + 5], gt[i:i + 5]) for i in range(0, 37, 5)])
    assert torch.equal(full, parts) and full.dtype == torch.float64 and full.shape == (37,)
    assert M.ciou_batch(hm[:0], gt[:0]).shape == (0,)


# ----------------------------------------------------------------------------- errors
def test_shape_and_protocol_errors():
    gt = square_gt()
    with pytest.raises(ValueError, match="2-D heatmap"):
        M.ciou(np.zeros((2, 14, 14)), gt)
    with pytest.raises(ValueError, match="2-D heatmap"):
        M.ciou(np.zeros((14, 14)), gt[None])
    with pytest.raises(ValueError, match="same B"):
        M.ciou_batch(torch.zeros(3, 14, 14), torch.zeros(2, 224, 224))
    with pytest.raises(ValueError, match=r"\(B,h,w\)"):
        M.ciou_batch(torch.zeros(14, 14), torch.zeros(224, 224))
    with pytest.raises(ValueError, match="protocol"):
        M.ciou(np.zeros((14, 14)), gt, protocol="mean")
    with pytest.raises(ValueError, match="NaN"):
        M.ciou(np.full((14, 14), np.nan), gt)
    with pytest.raises(ValueError, match="no cIoU"):
        M.auc([])


def test_batch_finds_a_bad_gt_value_anywhere():
    """The kernel counts gt values outside [0, 1] on its one read of the gt: one bad pixel in any map of any thread's
    share raises the reference's error."""
    hm, gt = np.random.default_rng(0).random((40, 14, 14)), np.zeros((40, 224, 224), np.float32)
    for k, (v, msg) in enumerate([(np.nan, "gt_maps contains NaN"), (1.5, r"gt_maps has values in \[0, 1\.5\]"),
                                  (-0.25, r"gt_maps has values in \[-0\.25, 0\]"),
                                  (255.0, r"divide it by 255")]):
        bad = gt.copy()
        bad[(7, 33, 39, 0)[k], 223, 5] = v
        with pytest.raises(ValueError, match=msg):
            M.ciou_batch(hm, bad)
        with pytest.raises(ValueError, match=msg.replace("gt_maps", "gt_map")):
            M.ciou(hm[0], bad[(7, 33, 39, 0)[k]])


# ----------------------------------------------------------------------------- AUC and summaries
def test_auc_known_values():
    assert M.auc([1.0] * 5) == pytest.approx(1.0)
    assert M.auc([0.0] * 5) == pytest.approx(0.025)  # success 1 at t=0 only: 0.05 * (1 + 0) / 2
    assert M.auc([0.5] * 5) == pytest.approx(0.525)  # 0.05*10 == 0.5 exactly: 10 full steps + a half step
    assert M.auc([0.15]) == pytest.approx(0.125)  # 0.05*3 > 0.15 in floating point: fails at t=0.15
    x, y = M.success_curve([0.15])
    assert len(x) == 21 and y[2] == 1.0 and y[3] == 0.0
    c = np.random.default_rng(0).random(500)
    assert M.auc(c) == pytest.approx(auc_ref(c), abs=1e-15)
    assert M.auc(torch.from_numpy(c)) == pytest.approx(auc_ref(c), abs=1e-15)


def test_ciou_at_and_summarize():
    c = [0.1, 0.5, 0.49, 0.9]
    assert M.ciou_at(c) == 0.5 and M.ciou_at(c, 0.05) == 1.0
    s = M.summarize(c)
    assert s == {"ciou": 0.5, "auc": pytest.approx(auc_ref(c)), "n": 4}


# ----------------------------------------------------------------------------- real VGG-SS boxes
def vggss_map(bboxes, size=224):
    try:
        from sspl_lib.data.gt import vggss_gt_map
    except ImportError:  # local fallback, same rule as the official testset_gt
        gt = np.zeros((size, size))
        for b in bboxes:
            x0, y0, x1, y1 = (int(size * max(v, 0)) for v in b)
            gt[y0:y1, x0:x1] = 1
        return gt
    return vggss_gt_map(bboxes, size=size)


@pytest.mark.skipif(not (META / "vggss_test_5158.json").is_file(), reason=f"{META} (VGG-SS annotations) absent")
def test_center_prior_on_vggss():
    boxes = {e["file"]: e["bbox"] for e in json.loads((META / "vggss_test_5158.json").read_text())}
    ids = [line.strip() for line in (META / "vggss_test_4692.csv").read_text().splitlines() if line.strip()]
    assert len(ids) == 4692 and all(i in boxes for i in ids)
    hm = center_prior(len(ids))  # (4692,14,14) float32
    cious = {"fixed": [], "median": []}
    for s in range(0, len(ids), 512):  # gt built per chunk: (<=512,224,224) float32
        gt = torch.from_numpy(np.stack([vggss_map(boxes[i]) for i in ids[s:s + 512]])).float()
        for protocol, out in cious.items():
            c = M.ciou_batch(hm[s:s + 512], gt, protocol)
            out.append(c)
            k = int(torch.randint(len(c), (1,), generator=torch.Generator().manual_seed(s)))
            assert float(c[k]) == M.ciou(hm[s + k], gt[k].numpy(), protocol)  # batch == scalar
            # the reference works in float64; the centre prior's symmetric ties may split differently
            tol = 1e-6 if protocol == "fixed" else 2e-3
            assert float(c[k]) == pytest.approx(ciou_ref(hm[s + k].numpy(), gt[k].numpy(), protocol), abs=tol)
    res = {p: M.summarize(torch.cat(c)) for p, c in cious.items()}
    for protocol, r in res.items():
        print(f"VGG-SS 4692 centre prior ({protocol}): {r}")
    # deterministic: 739 resp. 1595 of the 4692 maps reach cIoU >= 0.5 (README: 0.16 / 0.33, 0.34 / 0.37)
    assert res["fixed"] == {"ciou": pytest.approx(739 / 4692, abs=1e-6), "auc": pytest.approx(0.3314898, abs=1e-6),
                            "n": 4692}
    assert res["median"] == {"ciou": pytest.approx(1595 / 4692, abs=1e-6), "auc": pytest.approx(0.3739876, abs=1e-6),
                             "n": 4692}


# ----------------------------------------------------------------------------- batched kernel vs reference
def test_kernel_upsample_is_bit_identical():
    rng = np.random.default_rng(11)
    for shape in [(14, 14), (7, 7), (13, 17), (224, 224)]:
        img = rng.normal(size=shape)
        t_, u, lo_x, hi_x = np.empty((shape[0], 224)), np.empty((224, 224)), np.empty(224), np.empty(224)
        lo, hi = M._upsample_into(img, *M.axis_weights(shape[0], 224), *M.axis_weights(shape[1], 224), t_, u,
                                  lo_x, hi_x)
        up = M.upsample(img, (224, 224))
        assert np.array_equal(u, up) and lo == up.min() and hi == up.max()


def _hard_maps(rng, n, size=14):
    """Random maps plus plateaus, ties, constant, symmetric and centre-prior-like maps."""
    hm = rng.normal(size=(n, size, size))
    hm[0] = 2.0  # constant
    hm[1] = np.round(hm[1])  # many ties
    hm[2, :, :size // 2] = 5.0  # plateau holding the median
    hm[3] = np.outer(np.hanning(size), np.hanning(size))  # symmetric
    hm[4] = 0.0
    hm[4, size // 2, size // 2] = 1.0  # one peak: most of the map equal to the minimum
    hm[5] = rng.normal(size=(size, size)) * 1e-300  # tiny (subnormal-range) differences
    hm[6] = rng.normal(size=(size, size)) * 1e300  # huge values
    hm[7] = np.where(rng.random((size, size)) < 0.5, 0.0, 1.0)  # two levels: ties at any threshold
    hm[8] = -np.abs(hm[8])  # all negative
    return hm


@pytest.mark.parametrize("protocol", ["fixed", "median"])
@pytest.mark.parametrize("size", [14, 224])
def test_batch_equals_reference_on_hard_maps(protocol, size):
    rng = np.random.default_rng([21, size])
    n = 40
    hm, gt = _hard_maps(rng, n, size), random_gt(rng, n)
    gt[9], gt[10] = 0.0, 1.0  # empty and full ground truth
    scalar = np.array([M.ciou(hm[i], gt[i], protocol) for i in range(n)])
    batch = M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt), protocol)
    np.testing.assert_array_equal(batch.numpy(), scalar)
    ref = np.array([ciou_ref(hm[i], gt[i], protocol) for i in range(n)])
    np.testing.assert_allclose(scalar[11:], ref[11:], atol=1e-12)  # random maps: same masks as the reference
    for t in (0.0, 0.25, 1.0):
        np.testing.assert_array_equal(M.ciou_batch(hm, gt, threshold=t).numpy(),
                                      [M.ciou(hm[i], gt[i], threshold=t) for i in range(n)])
    # float32 heatmaps and gt: same values -> same results (everything is done in float64)
    hm32 = np.delete(hm, 6, axis=0).astype(np.float32)  # all but the map beyond float32's range
    f32 = M.ciou_batch(torch.from_numpy(hm32), torch.from_numpy(np.delete(gt, 6, axis=0)).float(), protocol)
    assert torch.equal(f32, M.ciou_batch(hm32.astype(np.float64), np.delete(gt, 6, axis=0), protocol))


def test_batch_does_not_depend_on_threads():
    rng = np.random.default_rng(2)
    hm, gt = rng.normal(size=(50, 14, 14)), random_gt(rng, 50)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = M.ciou_batch(hm, gt, "median")
        torch.set_num_threads(3)
        three = M.ciou_batch(hm, gt, "median")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)


def _ciou_in_child(args):
    hm, gt = args
    return M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt)).numpy()


def test_ciou_batch_works_in_a_forked_child_after_the_parent_used_its_threads():
    """A forked child (a DataLoader worker) must not wait on the parent's threads, which do not exist there."""
    import multiprocessing

    rng = np.random.default_rng(4)
    hm, gt = rng.normal(size=(32, 14, 14)), random_gt(rng, 32)
    want = M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt)).numpy()  # parent: threads used
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_ciou_in_child, ((hm, gt),)).get(timeout=120)
    assert np.array_equal(got, want)

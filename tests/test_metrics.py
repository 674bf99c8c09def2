"""Tests of sspl_lib.metrics against an independent numpy reference and hand-computed cases."""

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
    up64 = M.upsample(torch.from_numpy(img)[None], (224, 224))[0].numpy()
    np.testing.assert_allclose(up64, resize_ref(img, (224, 224)), atol=1e-12)
    up32 = M.upsample(torch.from_numpy(img).float()[None], (224, 224))[0].numpy()
    np.testing.assert_allclose(up32, resize_ref(img, (224, 224)), atol=1e-5)


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
    np.testing.assert_allclose(batch, scalar, atol=1e-6)
    for thr in (0.3, 0.7):
        b = M.ciou_batch(hm, gt, threshold=thr).numpy()
        s = np.array([M.ciou(hm[i].numpy(), gt[i].numpy(), threshold=thr) for i in range(n)])
        np.testing.assert_allclose(b, s, atol=1e-6)


def test_batch_chunking_and_empty():
    rng = np.random.default_rng(3)
    hm, gt = torch.from_numpy(rng.normal(size=(37, 14, 14))), torch.from_numpy(random_gt(rng, 37))
    full = M.ciou_batch(hm, gt)
    parts = torch.cat([M.ciou_batch(hm[i:i + 5], gt[i:i + 5]) for i in range(0, 37, 5)])
    assert torch.equal(full, parts) and full.dtype == torch.float64 and full.shape == (37,)
    assert M.ciou_batch(hm[:0], gt[:0]).shape == (0,)


def test_raw_threshold_is_exact_boundary():
    rng = np.random.default_rng(5)
    for dtype in (torch.float32, torch.float64):
        lo = torch.tensor(rng.normal(size=200) * 10.0 ** rng.integers(-3, 4, 200), dtype=dtype)
        hi = lo + torch.tensor(rng.random(200) * 10.0 ** rng.integers(-3, 4, 200), dtype=dtype)
        lo[:3], hi[:3] = torch.tensor([-1.0, -1e-3, 0.0], dtype=dtype), torch.tensor([1.0, 1e-3, 0.0], dtype=dtype)
        t = torch.tensor(rng.random(200), dtype=dtype)
        t[:3] = 0.5
        tau = M.raw_threshold(lo, hi, t)
        norm = lambda v: M._normalized_value(v, lo, hi)  # noqa: E731
        fin = torch.isfinite(tau)
        assert (fin == (hi > lo)).all()  # constant maps normalize to 0 < t -> no pixel qualifies
        assert (norm(tau)[fin] >= t[fin]).all()
        below = torch.nextafter(tau, torch.full_like(tau, -float("inf")))
        assert (norm(below)[fin] < t[fin]).all()


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


# ----------------------------------------------------------------------------- fused kernel vs torch path
from sspl_lib import _upsample as U  # noqa: E402


@pytest.mark.parametrize("shape", [(14, 14), (7, 7), (13, 17), (224, 224)])
def test_exact_upsample_numpy_torch_numba_bit_identical(shape):
    img = np.random.default_rng(11).normal(size=shape)
    up = U.upsample_np(img, (224, 224))
    np.testing.assert_allclose(up, resize_ref(img, (224, 224)), atol=1e-12)
    assert np.array_equal(U.upsample_torch(torch.from_numpy(img)[None], (224, 224))[0].numpy(), up)
    if U.upsample_nb is not None:
        w = (*U.axis_weights(shape[0], 224), *U.axis_weights(shape[1], 224))
        assert np.array_equal(U.upsample_nb(img, *w), up)
    if shape[0] in (7, 14, 224):  # power-of-two scale: mirrored weights are exact, symmetry is kept exactly
        sym = img + img[::-1]
        assert np.array_equal(U.upsample_np(sym, (224, 224)), U.upsample_np(sym, (224, 224))[::-1])


def _hard_maps(rng, n):
    """Random maps plus plateaus, ties, constant, symmetric and centre-prior-like maps."""
    hm = rng.normal(size=(n, 14, 14))
    hm[0] = 2.0  # constant
    hm[1] = np.round(hm[1])  # many ties
    hm[2, :, :7] = 5.0  # plateau holding the median
    hm[3] = np.outer(np.hanning(14), np.hanning(14))  # symmetric
    hm[4] = 0.0
    hm[4, 7, 7] = 1.0  # one peak: most of the map equal to the minimum
    hm[5] = rng.normal(size=(14, 14)) * 1e-300  # tiny (subnormal-range) differences
    return hm


@pytest.mark.parametrize("protocol", ["fixed", "median"])
def test_numba_and_torch_paths_identical(protocol, monkeypatch):
    rng = np.random.default_rng(21)
    n = 40
    hm, gt = _hard_maps(rng, n), random_gt(rng, n)
    ref = np.array([ciou_ref(hm[i], gt[i], protocol) for i in range(n)])
    scalar = np.array([M.ciou(hm[i], gt[i], protocol) for i in range(n)])
    fused = M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt), protocol)
    monkeypatch.setattr(M, "_USE_NUMBA", False)
    plain = M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt), protocol)
    assert torch.equal(fused, plain)
    np.testing.assert_array_equal(fused.numpy(), scalar)
    np.testing.assert_allclose(scalar[6:], ref[6:], atol=1e-12)  # random maps: same masks as the reference
    # float32 heatmaps and gt: same values -> same results (everything is done in float64)
    monkeypatch.setattr(M, "_USE_NUMBA", U.ciou_kernel is not None)
    f32 = M.ciou_batch(torch.from_numpy(hm).float(), torch.from_numpy(gt).float(), protocol)
    f32_ref = M.ciou_batch(torch.from_numpy(hm).float().double(), torch.from_numpy(gt), protocol)
    assert torch.equal(f32, f32_ref)


@pytest.mark.skipif(U.ciou_kernel is None, reason="numba not installed")
def test_kernel_median_value_is_exact_kth():
    rng = np.random.default_rng(5)
    w = (*U.axis_weights(14, 224), *U.axis_weights(14, 224))
    hist, cand, full = np.empty(U._HIST_BINS, np.int64), np.empty(224 * 224 + 1), np.empty(224 * 224 + 1)
    for hm in _hard_maps(rng, 30):
        up = U.upsample_nb(hm, *w)
        t_ = np.empty((14, 224))
        U._t_rows(hm, *w[4:], t_)
        for k in (0, 1, 25088, 50175):
            got = U._median_value(t_, *w[:4], k, up.min(), up.max(), hist, cand, full)
            assert got == np.sort(up.ravel())[k]


@pytest.mark.skipif(U.ciou_kernel is None, reason="numba not installed")
def test_kernel_raw_threshold_matches_torch():
    rng = np.random.default_rng(8)
    lo = rng.normal(size=300) * 10.0 ** rng.integers(-3, 4, 300)
    hi = lo + rng.random(300) * 10.0 ** rng.integers(-3, 4, 300)
    hi[:5] = lo[:5]
    t = rng.random(300)
    want = M.raw_threshold(torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(t)).numpy()
    fb = np.empty(1)
    got = np.array([U._raw_threshold(a, b, c, fb, fb.view(np.int64)) for a, b, c in zip(lo, hi, t)])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("h, H", [(14, 224), (7, 224), (13, 224), (14, 100), (20, 224)])
def test_axis_edges_hold_the_min_and_max(h, H):
    """Bilinear values are extreme at the ends of each source cell, so the min / max of the upsampled map
    are among the (edge row, edge column) values, here for float32 and wide-range float64 maps."""
    rng = np.random.default_rng(h * 1000 + H)
    e = U.axis_edges(h, H)
    assert e[0] == 0 and e[-1] == H - 1 and len(e) <= 2 * h + 2
    maps = list(rng.normal(size=(30, h, h)).astype(np.float32))
    maps += list(rng.normal(size=(30, h, h)) * 10.0 ** rng.integers(-20, 5, (30, h, h)))
    for m in maps:
        up = U.upsample_np(m, (H, H))
        sub = up[np.ix_(e, e)]
        assert sub.min() == up.min() and sub.max() == up.max()


@pytest.mark.skipif(U.ciou_kernel is None, reason="numba not installed")
def test_kernel_redoes_the_pass_when_the_edge_range_is_not_exact():
    """Given edges that miss the true min / max (one pixel only), the kernel's full-pass check finds the
    exact range and the result is still the reference one."""
    rng = np.random.default_rng(3)
    n = 12
    hm, gt = _hard_maps(rng, n), random_gt(rng, n)
    w = (*U.axis_weights(14, 224), *U.axis_weights(14, 224))
    want = np.array([ciou_ref(hm[i], gt[i], "fixed") for i in range(n)])
    for ey, ex in ((U.axis_edges(14, 224),) * 2, (np.array([100]), np.array([37]))):
        out = np.empty(n)
        U.ciou_kernel(hm, gt.astype(np.float32), *w, ey, ex, False, 0.5, 25088, out)
        assert np.array_equal(out, want)


def _ciou_in_child(args):
    hm, gt = args
    return M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt)).numpy()


def test_ciou_batch_works_in_a_forked_child_after_the_parent_used_its_threads():
    """The kernel's thread pool is per process: a forked child (a DataLoader worker) must not wait on the
    parent's threads, which do not exist there."""
    import multiprocessing

    rng = np.random.default_rng(4)
    hm, gt = rng.normal(size=(32, 14, 14)), random_gt(rng, 32)
    want = M.ciou_batch(torch.from_numpy(hm), torch.from_numpy(gt)).numpy()  # parent: pool started
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_ciou_in_child, ((hm, gt),)).get(timeout=120)
    assert np.array_equal(got, want)

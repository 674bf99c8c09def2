"""Audio-dependence metrics against hand-computed cases: box means, follow rate, SLAVC confidence, AP, max-F1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sspl_lib.av_metrics import (box_means, box_pixels, extended_ap, extended_max_f1, extended_summary, follow_rate,
                                 follows, precision_recall, slavc_confidence, swap_summary)

NAN4 = [np.nan] * 4
LEFT_TOP, RIGHT_BOTTOM, RIGHT_TOP = [0, 0, .5, .5], [.5, .5, 1, 1], [.5, 0, 1, .5]


def test_box_pixels_rule_and_padding():
    px = box_pixels(np.array([[0.1, 0.26, 0.5, 1.2], [0.99, 0.5, 0.99, 0.5], NAN4]), size=4)
    np.testing.assert_array_equal(px, [[0, 1, 2, 4], [3, 2, 4, 3], [-1, -1, -1, -1]])  # >= 1 pixel each


def test_box_means_by_hand():
    hm = np.arange(16, dtype=np.float64).reshape(1, 4, 4)  # 4x4 -> 4x4: no resampling
    m = box_means(hm, np.array([[LEFT_TOP, RIGHT_BOTTOM, NAN4]]), size=4)
    assert m[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4) and m[0, 1] == pytest.approx((10 + 11 + 14 + 15) / 4)
    assert np.isnan(m[0, 2])
    # a 2x2 map upsampled to 8x8 is constant inside each quadrant's inner pixels; a whole-frame box = map mean
    m2 = box_means(torch.tensor([[[1.0, 3.0], [5.0, 7.0]]]), np.array([[[0, 0, 1, 1]]]), size=8)
    assert m2[0, 0] == pytest.approx(4.0)


def test_follows_and_follow_rate_by_hand():
    #      scene 0 (2 objects): both rows follow;  scene 1 (3 objects): row 3 prefers box 0 -> the scene fails
    means = np.array([[5.0, 1.0, np.nan], [1.0, 5.0, np.nan], [9.0, 2.0, 3.0], [4.0, 3.0, 3.5], [0.0, 1.0, 2.0]])
    sounding = np.array([0, 1, 0, 1, 2])
    scene = np.array([0, 0, 1, 1, 1])
    np.testing.assert_array_equal(follows(means, sounding), [True, True, True, False, True])
    assert follow_rate(means, sounding, scene) == 0.5
    # ties do not follow: a map that ignores the sound (constant) follows nothing
    assert not follows(np.array([[2.0, 2.0, np.nan]]), [0]).any()
    s = swap_summary(np.array([0.6, 0.4, 0.9, 0.1, 0.5]), means, sounding, scene)
    assert s["ciou"] == pytest.approx(3 / 5) and s["n"] == 5 and s["follow_rate"] == 0.5 and s["n_scenes"] == 2


def test_follow_rate_of_maps_through_box_means():
    """Two scenes of 2 objects: a map peaked on the sounding object follows; a map fixed on one object does not."""
    def peak(box):
        hm = np.zeros((4, 4))
        x0, y0 = int(box[0] * 4), int(box[1] * 4)
        hm[y0:y0 + 2, x0:x0 + 2] = 1
        return hm

    boxes = np.array([[LEFT_TOP, RIGHT_TOP, NAN4]] * 4)
    maps = np.stack([peak(LEFT_TOP), peak(RIGHT_TOP), peak(LEFT_TOP), peak(LEFT_TOP)])
    means = box_means(maps, boxes, size=4)
    assert follow_rate(means, [0, 1, 0, 1], [7, 7, 8, 8]) == 0.5


def test_slavc_confidence_top_quarter():
    hm = np.arange(16, dtype=np.float64).reshape(1, 4, 4)  # size 4: n = 16, top 4 = 12..15
    assert slavc_confidence(hm, size=4)[0] == pytest.approx(13.5)
    assert slavc_confidence(hm, value_range=(-2, 18), size=4)[0] == pytest.approx((13.5 + 2) / 20)
    c = slavc_confidence(np.full((3, 7, 7), 0.25), size=224)  # a constant map: its value
    np.testing.assert_allclose(c, 0.25, atol=1e-12)
    with pytest.raises(ValueError, match="value_range"):
        slavc_confidence(hm, value_range=(1, 1))


# Six clips by hand (module docstring formula): visible & cIoU >= 0.5 for clips 0, 2, 5; clip 1 visible but
# in the wrong place; clips 3, 4 have no visible source (their cIoU is not used).
VIS = np.array([1, 1, 1, 0, 0, 1])
CIOU = np.array([0.8, 0.3, 0.6, np.nan, np.nan, 0.9])
CONF = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def test_precision_recall_by_hand():
    p, r = precision_recall(VIS, CIOU, CONF, [0.8, 0.7, 0.6, 0.5, 0.4, 1.0])
    # t=0.8: TP {0}, FP {1}, FN {2,5}; t=0.7: TP {0,2}, FP {1}, FN {5}; t=0.6: + FP {3}; t=0.5: + FP {4};
    # t=0.4: TP {0,2,5}, FP {1,3,4}, FN {}; t=1.0: nothing detected -> precision 1, recall 0
    np.testing.assert_allclose(p, [1 / 2, 2 / 3, 1 / 2, 2 / 5, 1 / 2, 1.0])
    np.testing.assert_allclose(r, [1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0, 0.0])


def test_extended_ap_and_max_f1_by_hand():
    # AP: thresholds 0.8, 0.7, 0.6, 0.5, 0.4 (all but the largest confidence, top down);
    # precision made monotone [2/3, 2/3, 1/2, 1/2, 1/2]; recall [1/3, 2/3, 2/3, 2/3, 1]
    # AP = 2/3 * 1/3 + 2/3 * 0 + 1/2 * 0 + 1/2 * 1/3 = 7/18
    assert extended_ap(VIS, CIOU, CONF) == pytest.approx(7 / 18)
    # max-F1 over every confidence (N // 10 = 0 -> step 1): F1 at 0.9 (P 1, R 1/4) 0.4, at 0.8 0.4, at 0.7 2/3,
    # at 0.6 4/7, at 0.5 1/2, at 0.4 (P 1/2, R 1) 2/3
    assert extended_max_f1(VIS, CIOU, CONF) == pytest.approx(2 / 3)
    s = extended_summary(VIS, CIOU, CONF)
    assert s == {"ap": pytest.approx(7 / 18), "max_f1": pytest.approx(2 / 3), "n_clips": 6, "n_visible": 4}
    # an affine rescaling of the confidences (SLAVC's fixed range) changes nothing
    assert extended_ap(VIS, CIOU, CONF * 20 - 10) == pytest.approx(7 / 18)
    # a confidence that does not separate anything: all clips tie -> one threshold is dropped, AP over none = 0
    assert extended_ap(VIS, CIOU, np.full(6, 0.3)) == 0.0


def _published_loops(visible, cious, conf):
    """The published formula written out clip by clip (the module docstring's description, loop form)."""
    def pr(thr):
        tp = fp = fn = 0
        for v, c, s in zip(visible, cious, conf):
            if s >= thr:
                if v and c >= 0.5:
                    tp += 1
                else:
                    fp += 1
            elif v:
                fn += 1
        return (1.0 if tp + fp == 0 else tp / (tp + fp)), (1.0 if tp + fn == 0 else tp / (tp + fn))

    ths = sorted(conf)[:-1][::-1][::max(1, len(conf) // 200)]
    prs = [pr(t) for t in ths]
    pmax = [max(p for p, _ in prs[i:]) for i in range(len(prs))]
    ap = sum(pmax[i] * (prs[i + 1][1] - prs[i][1]) for i in range(len(prs) - 1))
    f1 = [2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in (pr(t) for t in sorted(conf)[::max(1, len(conf) // 10)])]
    return ap, max(f1)


@pytest.mark.parametrize("n", [37, 450])  # 450: every 2nd threshold for AP, every 45th for F1
def test_extended_matches_the_loop_form(n):
    rng = np.random.default_rng(n)
    vis = rng.random(n) < 0.5
    cious = np.where(vis, rng.random(n), np.nan)
    conf = np.round(rng.random(n) + 0.4 * vis * (cious >= 0.5), 2)  # rounding makes ties
    ap, f1 = _published_loops(vis, cious, conf)
    assert extended_ap(vis, cious, conf) == pytest.approx(ap, abs=1e-12)
    assert extended_max_f1(vis, cious, conf) == pytest.approx(f1, abs=1e-12)
    assert 0.2 < ap < 1.0  # an informative confidence


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="one value per clip"):
        extended_ap([1, 0], [0.5], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"boxes \(N,M,4\)"):
        box_means(np.zeros((2, 4, 4)), np.zeros((2, 4)))


def test_chunking_changes_nothing():
    rng = np.random.default_rng(0)
    hm = rng.random((9, 5, 5))
    boxes = np.sort(rng.random((9, 3, 2, 2)), axis=2).transpose(0, 1, 3, 2).reshape(9, 3, 4)[..., [0, 2, 1, 3]]
    boxes[2, 2] = np.nan
    np.testing.assert_array_equal(box_means(hm, boxes, chunk=4), box_means(hm, boxes, chunk=64))
    np.testing.assert_array_equal(slavc_confidence(hm, chunk=2), slavc_confidence(hm, chunk=64))

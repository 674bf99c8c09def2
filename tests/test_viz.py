"""sspl_lib.viz: overlays, boxes, plots (Agg backend, real files)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from sspl_lib import viz


def test_overlay_uint8_rgb_of_frame_size():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    hm = rng.random((7, 7)).astype(np.float32)
    out = viz.overlay(frame, hm, alpha=0.5, cmap="jet")
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.abs(out.astype(int) - frame.astype(int)).mean() > 5
    np.testing.assert_array_equal(viz.overlay(frame, hm, alpha=0.0), frame)
    assert not np.array_equal(viz.overlay(frame, hm, cmap="viridis"), out)
    with pytest.raises(ValueError):
        viz.overlay(frame[..., 0], hm)


def test_overlay_colours_the_normalized_map():
    """The colours are those of the cIoU's normalized map: min -> the colormap's 0, max -> its 1, constant -> 0."""
    frame = np.zeros((8, 8, 3), np.uint8)
    out = viz.overlay(frame, np.array([[0.0, 2.0], [1.0, 4.0]]), alpha=1.0)
    assert tuple(out[0, 0]) == tuple(viz.colorize(np.zeros(1))[0]) and tuple(out[7, 7]) == tuple(viz.colorize(np.ones(1))[0])
    flat = viz.overlay(frame, np.full((3, 3), 5.0), alpha=1.0)
    assert (flat == viz.colorize(np.zeros(1))[0]).all()
    with pytest.raises(ValueError, match="heatmap must be 2-D"):
        viz.overlay(frame, np.zeros((2, 3, 3)))


def test_draw_boxes():
    img = np.zeros((20, 20, 3), np.uint8)
    out = viz.draw_boxes(img, [[0.25, 0.25, 0.75, 0.75], [np.nan] * 4], color=(255, 0, 0), width=1)
    assert out.dtype == np.uint8 and img.sum() == 0  # the input is not modified
    assert tuple(out[5, 10]) == (255, 0, 0) and tuple(out[10, 5]) == (255, 0, 0)
    assert out[10, 10].sum() == 0 and out[0, 0].sum() == 0


def test_plots_save(tmp_path):
    rng = np.random.default_rng(1)
    fig = viz.plot_success_curves({"a": rng.random(30), "b": rng.random(30) * 0.5}, title="t")
    p = viz.savefig(fig, "curves", tmp_path)
    assert p.is_file() and p.stat().st_size > 1000
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    fig = viz.case_grid(frames, rng.random((3, 4, 4)), boxes=np.full((3, 1, 4), 0.5), titles=["x", "y", "z"], ncols=2)
    assert viz.savefig(fig, "grid.png", tmp_path).name == "grid.png"
    rows = [{"variant": v, "split": s, "ciou_mean": 0.5, "ciou_std": 0.1} for v in ("a", "b") for s in ("single", "multi")]
    assert viz.savefig(viz.plot_ablation(rows), "bars", tmp_path).is_file()
    assert viz.savefig(viz.plot_curve_vs([0, 1, 2], [0.1, 0.2, 0.3], [0.0, 0.1, 0.0], xlabel="k"), "line", tmp_path).is_file()
    import matplotlib.pyplot as plt

    plt.close("all")

"""Benchmark reuse-or-generate, split statistics and the notebook-01 figures."""

import json

import matplotlib

matplotlib.use("Agg")

from sspl_lib.data.overview import class_spectrograms, ensure_benchmark, sample_grid, split_stats, text_table

SMALL = dict(seed=5, n_train=6, n_val=2, n_test=4, n_labeled=8, frame_size=32, workers=1, progress=False)


def test_ensure_benchmark_reuses_identical_settings_and_regenerates_others(tmp_path):
    root, reused = ensure_benchmark(tmp_path / "b", **SMALL)
    assert not reused and (root / "train.h5").is_file()
    stamp = (root / "train.h5").stat().st_mtime_ns
    _, reused = ensure_benchmark(tmp_path / "b", **SMALL)
    assert reused and (root / "train.h5").stat().st_mtime_ns == stamp
    _, reused = ensure_benchmark(tmp_path / "b", **{**SMALL, "n_train": 7})
    assert not reused and json.loads((root / "meta.json").read_text())["sizes"]["train"] == 7
    _, reused = ensure_benchmark(tmp_path / "b", **{**SMALL, "n_train": 7}, regenerate=True)
    assert not reused


def test_split_stats_describe_the_splits(tiny_benchmark):
    rows = {r["split"]: r for r in split_stats(tiny_benchmark)}
    assert set(rows) == {"train", "val", "test_single", "test_multi"}
    assert rows["test_single"]["objects_max"] == 1 and rows["test_single"]["objects_mean"] == 1.0
    assert rows["test_multi"]["objects_mean"] >= 2.0
    assert 0.02 < rows["test_single"]["box_area_median"] < 0.5
    assert rows["train"]["n"] == 40 and rows["test_multi"]["n"] == 24
    table = text_table(list(rows.values())).splitlines()
    assert len(table) == 5 and table[0].split()[:2] == ["split", "n"]


def test_figures(tiny_benchmark):
    fig = sample_grid(tiny_benchmark, "test_multi", n=6, ncols=3)
    assert len(fig.axes) == 6 and any(ax.patches for ax in fig.axes)
    fig = class_spectrograms(tiny_benchmark)
    assert sum(bool(ax.images) for ax in fig.axes) >= 4  # classes present among 16 labeled clips

"""Issue 18, the data: every split is checked when it is opened (`sspl_lib.data.checks.check_split`), before any
training or scoring. Each bad split is a real HDF5 file made from the tiny benchmark's arrays; the error names
the file, the dataset and, where it helps, the row."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sspl_lib.config import SSPLConfig
from sspl_lib.data.checks import check_split
from sspl_lib.data.h5 import DataFileError, load_split
from sspl_lib.experiments import runs
from sspl_lib.experiments.evaluate import evaluate_baseline
from sspl_lib.experiments.train import fit

TINY = dict(img_size=48, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, pcm_cycles=1, proj_dim=32,
            pred_hidden=16, pretrained=False, batch_size=8, epochs=1, threads=1, workers=0, val_samples=0)


def write(path, d: dict, **changed):
    """A split file with `d`'s datasets, some replaced (None: left out), written with h5py as any tool could."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in {**{k: v for k, v in d.items() if k != "attrs"}, **changed}.items():
            if v is not None:
                f[k] = np.asarray(v, dtype="S") if k == "ids" else v
    return path


@pytest.fixture(scope="module")
def splits(tiny_benchmark):
    return {s: load_split(tiny_benchmark / f"{s}.h5") for s in ("train", "val", "test_single")}


def _cases(splits):
    tr, va = splits["train"], splits["val"]
    nan_boxes = np.full_like(va["boxes"], np.nan)
    return {
        "uint16 frames": ("train", dict(frames=tr["frames"].astype(np.uint16) * 257),
                          r"train\.h5: dataset 'frames' is uint16 \(values 0\.\.6\d+ .*"
                          r"\(frames >> 8\)\.astype\(np\.uint8\)"),
        "float frames in [0, 1]": ("train", dict(frames=tr["frames"].astype(np.float32) / 255),
                                   r"train\.h5: dataset 'frames' is float32 \(values 0\.\.[\d.]+ .*"
                                   r"\(frames \* 255\)\.round\(\)"),
        "no spects": ("train", dict(spects=None),
                      r"train\.h5: no dataset 'spects' \(has \[.*'frames'.*\]\); every split holds frames and spects"),
        "no frames": ("val", dict(frames=None), r"val\.h5: no dataset 'frames'"),
        "different lengths": ("train", dict(spects=tr["spects"][:-3]),
                              r"train\.h5: datasets of different lengths \(\{'frames': 40, 'spects': 37"),
        "all-NaN val boxes": ("val", dict(boxes=nan_boxes),
                              r"val\.h5: dataset 'boxes': 8 of 8 samples with a sounding object have no usable box "
                              r"\(first: row 0 \(id val_000000\): \[nan"),
        "empty val split": ("val", {k: v[:0] for k, v in va.items() if k != "attrs"}, r"val\.h5: no samples"),
        "no val sample with a sounding object": ("val", dict(label=np.full_like(va["label"], -1)),
                                                 r"val\.h5: no validation sample with ground truth \(8 rows, 0 with"),
        "NaN in train spects": ("train", dict(spects=np.where(np.arange(40)[:, None, None, None] == 17, np.nan,
                                                               tr["spects"])),
                                r"train\.h5: dataset 'spects' row 17 \(id train_000017\) holds NaN or Inf"),
    }


@pytest.mark.parametrize("case", ["uint16 frames", "float frames in [0, 1]", "no spects", "no frames",
                                  "different lengths", "all-NaN val boxes", "empty val split",
                                  "no val sample with a sounding object", "NaN in train spects"])
def test_fit_refuses_bad_data_before_any_epoch(splits, tmp_path, case):
    split, changed, message = _cases(splits)[case]
    root = tmp_path / "data"
    for s in ("train", "val"):
        write(root / f"{s}.h5", splits[s], **(changed if s == split else {}))
    run = tmp_path / "run"
    with pytest.raises(DataFileError, match=message):
        fit(SSPLConfig(data_root=str(root), **TINY), run, progress=False)
    assert not runs.holds_run(run) and not (run / "config.json").exists()  # nothing trained, nothing written


def test_evaluation_refuses_bad_test_splits(splits, tmp_path):
    te = splits["test_single"]
    n = len(te["ids"])
    sounding = int(np.flatnonzero(te["label"] >= 0)[2])
    spects = te["spects"].copy()
    spects[5, 1, 3, 7] = np.inf
    boxes = te["boxes"].copy()
    boxes[sounding] = [0.5, 0.5, 0.2, 0.9]  # x1 < x0
    cases = {
        "spects": (dict(spects=spects), r"dataset 'spects' row 5 \(id test_single_000005\) holds NaN or Inf"),
        "box": (dict(boxes=boxes), rf"dataset 'boxes': 1 of \d+ samples .* row {sounding} \(id test_single_0000"
                                   rf"{sounding:02d}\): \[0\.5, 0\.5, 0\.2, 0\.9\]\); boxes are finite"),
        "no gt": (dict(boxes=None), r"no ground truth \(neither a 'gt' nor a 'boxes' dataset\)"),
        "gt range": (dict(boxes=None, gt=np.full((n, 8, 8), 2.0, np.float32)),
                     r"dataset 'gt' row 0 \(id test_single_000000\) has values outside \[0, 1\]"),
        "spect shape": (dict(spects=te["spects"].transpose(0, 1, 3, 2)),
                        r"dataset 'spects' is float32 \(24, 3, 64, 96\)"),
        "grey frames": (dict(frames=te["frames"][..., :1]), r"dataset 'frames' has shape \(24, 64, 64, 1\)"),
    }
    for name, (changed, message) in cases.items():
        path = write(tmp_path / name / "test_single.h5", te, **changed)
        with pytest.raises(DataFileError, match=rf"test_single\.h5: {message}"):
            evaluate_baseline("center_prior", path)
    good = write(tmp_path / "good" / "test_single.h5", te)
    assert evaluate_baseline("center_prior", good)["n"] == check_split(good) == int((te["label"] >= 0).sum())


def test_checks_read_in_chunks_and_cover_the_whole_file(splits, tmp_path, monkeypatch):
    """A NaN in the last row is found when the file is read in many chunks (here 1 row each)."""
    import sspl_lib.data.checks as C

    tr = splits["train"]
    spects = tr["spects"].copy()
    spects[-1, 2, 95, 63] = np.nan
    path = write(tmp_path / "train.h5", tr, spects=spects)
    monkeypatch.setattr(C, "CHUNK_BYTES", 1)
    with pytest.raises(DataFileError, match=r"'spects' row 39 "):
        check_split(path, "train")
    assert check_split(write(tmp_path / "ok.h5", tr), "train") == 40

"""Checks of a packed split when it is opened, before any training or scoring (docs/data.md); each error
is a DataFileError naming the file, the dataset and the row."""

from __future__ import annotations

import numpy as np

from .h5 import DataFileError, open_h5

PER_ROW = ("frames", "spects", "audio", "ids", "label", "boxes", "all_boxes", "all_labels", "gt", "scene", "object",
           "visible", "sound_label")
SPECT_SHAPE = (96, 64)  # one VGGish log-mel example: 96 frames of 10 ms x 64 mel bands
SCAN_BYTES = 1 << 30
CHUNK_BYTES = 32 << 20
ROLES = ("train", "val", "test")


def _chunks(ds, budget: int = SCAN_BYTES):
    """(start, rows) of consecutive row blocks of a dataset, evenly spread when it is larger than `budget`."""
    n = int(ds.shape[0])
    row = max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize)
    step = max(1, CHUNK_BYTES // row)
    starts = np.arange(0, n, step)
    if len(starts) * step * row > budget:
        starts = starts[np.linspace(0, len(starts) - 1, max(1, budget // (step * row))).round().astype(int)]
    for s in np.unique(starts):
        yield int(s), ds[int(s):int(s) + step]


def _row_name(f, i: int) -> str:
    if "ids" in f:
        v = f["ids"][i]
        return f"row {i} (id {v.decode() if isinstance(v, bytes) else v})"
    return f"row {i}"


def _check_frames(f, path) -> None:
    ds = f["frames"]
    if ds.ndim != 4 or ds.shape[-1] != 3:
        raise DataFileError(f"{path}: dataset 'frames' has shape {ds.shape}; expected (N, S, S, 3): RGB frames")
    if ds.dtype == np.uint8:
        return
    first = ds[: min(len(ds), 8)]
    lo, hi = (float(first.min()), float(first.max())) if first.size else (0.0, 0.0)
    if np.issubdtype(ds.dtype, np.integer):
        fix = f"(frames >> {8 * ds.dtype.itemsize - 8}).astype(np.uint8)" if hi > 255 else "frames.astype(np.uint8)"
    else:
        fix = "(frames * 255).round().astype(np.uint8)" if hi <= 1.0 else "frames.clip(0, 255).round().astype(np.uint8)"
    raise DataFileError(f"{path}: dataset 'frames' is {ds.dtype} (values {lo:g}..{hi:g} in the first rows); frames "
                        f"are stored as uint8 0..255, else they train clamped or black: write them again as {fix}")


def _check_spects(f, path) -> None:
    ds = f["spects"]
    if ds.ndim != 4 or tuple(ds.shape[2:]) != SPECT_SHAPE or not np.issubdtype(ds.dtype, np.floating):
        raise DataFileError(f"{path}: dataset 'spects' is {ds.dtype} {ds.shape}; expected float (N, examples, 96, 64): "
                            "the VGGish log-mel examples of each clip (sspl_lib.audio.vggish_examples)")
    for s, block in _chunks(ds):
        bad = ~np.isfinite(block).reshape(len(block), -1).all(1)
        if bad.any():
            raise DataFileError(f"{path}: dataset 'spects' {_row_name(f, s + int(np.argmax(bad)))} holds NaN or Inf "
                                "(a broken clip); compute its log-mel again or leave the clip out")


def _sounding(f) -> np.ndarray:
    n = int(f["frames"].shape[0])
    return np.flatnonzero(f["label"][:] >= 0) if "label" in f else np.arange(n)


def _ground_truth_rows(f, path, rows: np.ndarray) -> np.ndarray:
    """The rows of `rows` with usable ground truth; DataFileError for boxes or maps that are present but broken."""
    if "gt" in f:
        ds = f["gt"]
        if ds.ndim != 3:
            raise DataFileError(f"{path}: dataset 'gt' has shape {ds.shape}; expected (N, H, W) maps")
        pos = np.zeros(int(ds.shape[0]), bool)
        for s, block in _chunks(ds):
            flat = block.reshape(len(block), -1)
            bad = ~(np.isfinite(flat) & (flat >= 0) & (flat <= 1)).all(1)
            if bad.any():
                raise DataFileError(f"{path}: dataset 'gt' {_row_name(f, s + int(np.argmax(bad)))} has values outside "
                                    "[0, 1] or NaN; ground-truth maps are in [0, 1]")
            pos[s:s + len(block)] = flat.max(1) > 0
        return rows[pos[rows]]
    boxes = f["boxes"][:]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataFileError(f"{path}: dataset 'boxes' has shape {boxes.shape}; expected (N, 4) normalized x0 y0 x1 y1")
    b = boxes[rows]
    ok = np.isfinite(b).all(1) & (b >= 0).all(1) & (b <= 1).all(1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if not ok.all():
        i = int(rows[np.argmax(~ok)])
        box = np.round(boxes[i].astype(float), 4).tolist()
        raise DataFileError(f"{path}: dataset 'boxes': {int((~ok).sum())} of {len(rows)} samples with a sounding "
                            f"object have no usable box (first: {_row_name(f, i)}: {box}); boxes are finite, "
                            "normalized to [0, 1], x0 < x1 and y0 < y1")
    return rows


def check_split(path, role: str = "test", *, limit: int = 0, gt_external: bool = False) -> int:
    """Check a split for `role` ("train", "val", "test"); returns its number of usable samples."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    with open_h5(path) as f:
        missing = [k for k in ("frames", "spects") if k not in f]
        if missing:
            raise DataFileError(f"{path}: no dataset '{missing[0]}' (has {sorted(f.keys())}); every split holds frames "
                                "and spects: prepare it again (notebooks/01_data_preparation.ipynb)")
        n = int(f["frames"].shape[0])
        lengths = {k: int(f[k].shape[0]) for k in PER_ROW if k in f}
        if len(set(lengths.values())) > 1:
            raise DataFileError(f"{path}: datasets of different lengths ({lengths}); the file is incomplete or "
                                "assembled from different splits: prepare it again")
        if n == 0:
            raise DataFileError(f"{path}: no samples (dataset 'frames' is empty)")
        _check_frames(f, path)
        _check_spects(f, path)
        if role == "train":
            return n
        rows = _sounding(f)
        rows = rows[:limit] if limit else rows
        if not gt_external and "gt" not in f and "boxes" not in f:
            raise DataFileError(f"{path}: no ground truth (neither a 'gt' nor a 'boxes' dataset); a {role} split needs "
                                "one, or pass gt=<folder of Flickr XML | VGG-SS JSON>")
        usable = len(rows) if gt_external else len(_ground_truth_rows(f, path, rows))
    if usable == 0:
        kept = f" among the first {limit}" if limit else ""
        raise DataFileError(f"{path}: no {'validation' if role == 'val' else role} sample with ground truth ({n} rows, "
                            f"{len(rows)} with a sounding object{kept}); scoring needs at least one")
    return usable

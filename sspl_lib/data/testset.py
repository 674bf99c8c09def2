"""An annotated split in memory (validation and test alike): frames, spects, ids and whatever ground truth
it has (docs/data.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import silent_examples
from ..paths import resolve
from .checks import check_split
from .gt import fill_boxes, gt_maps_for_split, load_vggss_annotations, vggss_box_pixels
from .h5 import load_split, open_h5

GT_SIZE = 224
ROW_FIELDS = ("label", "all_boxes", "all_labels", "scene", "object", "visible", "sound_label")


@dataclass
class TestSet:
    """An annotated split in memory (sounding samples only). Gt maps are built per batch (`gt_maps`)."""

    __test__ = False  # not a pytest class

    path: Path
    frames: np.ndarray  # uint8 (N,S,S,3)
    spects: np.ndarray  # float32 (N,3,96,64)
    ids: list
    index: np.ndarray  # rows of the file
    boxes: np.ndarray | None = None  # (N,M,4) normalized, NaN padded (for drawing)
    _gt_stored: bool = False  # read the file's `gt` rows per batch
    _vggss: dict | None = None
    _flickr_dir: Path | None = None
    attrs: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)  # per-row arrays of the kept samples (ROW_FIELDS the file has)

    @property
    def n(self) -> int:
        return len(self.index)

    @property
    def name(self) -> str:
        return self.path.stem

    def gt_maps(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        sl = slice(start, self.n if stop is None else stop)
        if self._gt_stored:
            with open_h5(self.path) as f:
                rows = self.index[sl]
                g = f["gt"][rows] if len(rows) else np.zeros((0, GT_SIZE, GT_SIZE), np.float32)
        elif self._flickr_dir is not None:
            g = gt_maps_for_split(self.ids[sl], flickr_dir=self._flickr_dir, size=GT_SIZE)
        elif self._vggss is not None:
            g = gt_maps_for_split(self.ids[sl], vggss=self._vggss, size=GT_SIZE)
        else:  # one box each (the sounding object): VGG-SS rules
            b = self.boxes[sl, 0]
            ok = np.isfinite(b).all(1)  # rows without a visible source (sounding_only=False): empty maps
            g = np.zeros((len(b), GT_SIZE, GT_SIZE), np.float32)
            if ok.any():
                g[ok] = fill_boxes(vggss_box_pixels(b[ok], GT_SIZE), GT_SIZE)
        return torch.as_tensor(np.asarray(g, dtype=np.float32))

    def spects_heard(self, idx: np.ndarray, audio: str = "matched", perm: np.ndarray | None = None) -> torch.Tensor:
        """The spects (B,N,96,64) heard with the frames `idx`: their own ("matched"), those of `perm[idx]`
        ("shuffled"), or a silent clip's ("silent")."""
        if audio == "matched":
            return torch.from_numpy(self.spects[idx])
        if audio == "shuffled":
            return torch.from_numpy(self.spects[perm[idx]])
        silent = silent_examples()
        return silent.expand(len(idx), *silent.shape)


def load_test_set(split_path, *, gt="auto", limit: int = 0, sounding_only: bool = True) -> TestSet:
    """Read an annotated split; `limit`: the first sounding samples; `gt`: "auto", XML folder or JSON."""
    path = resolve(split_path)
    check_split(path, "test", limit=limit, gt_external=gt != "auto")
    with open_h5(path) as f:
        keys = set(f.keys())
    want = [k for k in ("frames", "spects", "ids", "boxes", "gt", *ROW_FIELDS) if k in keys]
    d = load_split(path, [k for k in want if k != "gt"])
    keep = np.arange(len(d["frames"]))
    if "label" in d and sounding_only:
        keep = keep[d["label"] >= 0]
    if limit:
        keep = keep[:limit]
    ids = [d["ids"][i] for i in keep] if "ids" in d else [str(i) for i in keep]
    boxes = None
    if "boxes" in d:
        boxes = d["boxes"][keep][:, None, :]
    ts = TestSet(path=path, frames=d["frames"][keep], spects=d["spects"][keep].astype(np.float32), ids=ids,
                 index=keep, boxes=boxes, attrs=d["attrs"], rows={k: d[k][keep] for k in ROW_FIELDS if k in d})
    if gt == "auto":
        if "gt" in keys:
            ts._gt_stored = True
        elif boxes is None:
            raise ValueError(f"{path}: no `gt` or `boxes` dataset; pass gt=<xml folder | VGG-SS json>")
    else:
        src = resolve(gt)
        if src.is_dir():
            ts._flickr_dir = src
        else:
            ts._vggss = load_vggss_annotations(src)
    return ts

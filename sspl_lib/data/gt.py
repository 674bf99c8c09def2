"""Ground-truth maps and annotation readers of the two benchmarks (SoundNet-Flickr XML, VGG-SS JSON).

Rules as the official evaluation defines them (SSPL `utils.testset_gt`):
- Flickr: each annotator's box is in 256-px integer coordinates; it becomes
  `int(size * v / 256)`, is filled as `[ymin:ymax, xmin:xmax]`, the fills are summed, divided by 2
  and clipped at 1 (values in {0, 0.5, 1}).
- VGG-SS: each normalized coordinate becomes `int(size * max(v, 0))`; the slice end clips the upper
  side at `size`; the fills are unioned (values in {0, 1}).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

_COORDS = ("xmin", "ymin", "xmax", "ymax")


class AnnotationError(ValueError):
    """An annotation file that cannot be read or holds no usable box; the message names the file."""


def _slice_bounds(a: np.ndarray, size: int) -> np.ndarray:
    """Python slice semantics of `[a:...]` on an axis of `size` (negative counts from the end), vectorized."""
    a = np.asarray(a, dtype=np.int64)
    return np.where(a < 0, np.maximum(a + size, 0), np.minimum(a, size))


def fill_boxes(boxes_px: np.ndarray, size: int) -> np.ndarray:
    """Integer boxes (M, 4) x0,y0,x1,y1 -> (M, size, size) float32 fills of `[y0:y1, x0:x1]`."""
    b = np.asarray(boxes_px, dtype=np.int64).reshape(-1, 4)
    x0, y0, x1, y1 = (_slice_bounds(b[:, i], size) for i in range(4))
    r = np.arange(size)
    rows = (r[None] >= y0[:, None]) & (r[None] < y1[:, None])  # (M, size)
    cols = (r[None] >= x0[:, None]) & (r[None] < x1[:, None])  # (M, size)
    return (rows[:, :, None] & cols[:, None, :]).astype(np.float32)  # (M, size, size)


def parse_flickr_xml(xml: str | os.PathLike) -> np.ndarray:
    """Boxes (M, 4) int of a Flickr-style XML file (path or XML text): `<annotation><object><bbox>`
    children after the first are xmin, ymin, xmax, ymax in 256-px coordinates."""
    name = "<xml text>"
    try:
        if isinstance(xml, str) and xml.lstrip().startswith("<"):
            root = ET.fromstring(xml)
        else:
            name = str(xml)
            root = ET.parse(name).getroot()
    except FileNotFoundError as e:
        raise AnnotationError(f"{name}: annotation file not found") from e
    except ET.ParseError as e:
        raise AnnotationError(f"{name}: not valid XML ({e})") from e
    boxes = []
    for bbox in root.iter("bbox"):
        kids = list(bbox)
        named = {k.tag: k.text for k in kids}
        texts = [named[c] for c in _COORDS] if all(c in named for c in _COORDS) else [k.text for k in kids[1:5]]
        try:
            boxes.append([int(t) for t in texts])
        except (TypeError, ValueError) as e:
            raise AnnotationError(f"{name}: bbox with non-integer coordinates {texts}") from e
        if len(texts) != 4:
            raise AnnotationError(f"{name}: bbox with {len(texts)} coordinates, expected 4")
    if not boxes:
        raise AnnotationError(f"{name}: no <bbox> in the annotation")
    return np.asarray(boxes, dtype=np.int64)


def flickr_gt_map(xml: str | os.PathLike, size: int = 224) -> np.ndarray:
    """Flickr consensus map (size, size) float64 in {0, 0.5, 1} from an XML path or text."""
    boxes = np.trunc(size * parse_flickr_xml(xml) / 256).astype(np.int64)  # int(size * v / 256)
    gt = fill_boxes(boxes, size).sum(0, dtype=np.float64) / 2
    return np.minimum(gt, 1.0)


def vggss_box_pixels(bboxes, size: int = 224) -> np.ndarray:
    """Normalized boxes (M, 4) -> integer pixel boxes `int(size * max(v, 0))` (M, 4)."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return np.trunc(size * np.maximum(b, 0.0)).astype(np.int64)


def vggss_gt_map(bboxes, size: int = 224) -> np.ndarray:
    """VGG-SS map (size, size) float64 in {0, 1}: union of the normalized boxes `[[x0,y0,x1,y1], ...]`."""
    if len(bboxes) == 0:
        return np.zeros((size, size))
    return (fill_boxes(vggss_box_pixels(bboxes, size), size).sum(0) > 0).astype(np.float64)


def load_vggss_annotations(json_path: str | os.PathLike) -> dict[str, list[list[float]]]:
    """VGG-SS style JSON (a list of {"file", "class", "bbox"}) -> {file id: list of boxes}."""
    path = Path(json_path)
    if not path.is_file():
        raise AnnotationError(f"{path}: VGG-SS annotation file not found (it ships in the official SSPL "
                              "repository, metadata/vggss_test_5158.json)")
    try:
        entries = json.loads(path.read_text())
        return {str(e["file"]): [list(map(float, b)) for b in e["bbox"]] for e in entries}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise AnnotationError(f"{path}: not a VGG-SS annotation list ({e!r})") from e


def load_vggss_classes(json_path: str | os.PathLike) -> dict[str, str]:
    """{file id: class name} of a VGG-SS style JSON."""
    return {str(e["file"]): str(e.get("class", "")) for e in json.loads(Path(json_path).read_text())}


def load_id_list(csv_path: str | os.PathLike) -> list[str]:
    """Ids of the first column of a test list (`vggss_test_4692.csv`: id a line;
    `flickr_test249_in5k.csv`: `id,index` a line)."""
    path = Path(csv_path)
    if not path.is_file():
        raise AnnotationError(f"{path}: test id list not found (it ships in the official SSPL repository, metadata/)")
    return [line.split(",")[0].strip() for line in path.read_text().splitlines() if line.strip()]


def gt_maps_for_split(ids, *, flickr_dir: str | os.PathLike | None = None,
                      vggss: str | os.PathLike | dict | None = None, size: int = 224) -> np.ndarray:
    """Ground-truth maps (N, size, size) float32 for `ids`, from a folder of `<id>.xml` (Flickr style)
    or a VGG-SS JSON path / loaded dict. A missing id raises AnnotationError naming it."""
    ids = [str(i) for i in ids]
    if (flickr_dir is None) == (vggss is None):
        raise ValueError("give exactly one of flickr_dir= or vggss=")
    if flickr_dir is not None:
        return np.stack([flickr_gt_map(Path(flickr_dir) / f"{i}.xml", size) for i in ids]).astype(np.float32) \
            if ids else np.zeros((0, size, size), np.float32)
    table = vggss if isinstance(vggss, dict) else load_vggss_annotations(vggss)
    missing = [i for i in ids if i not in table]
    if missing:
        raise AnnotationError(f"{vggss if not isinstance(vggss, dict) else 'annotations'}: no boxes for "
                              f"{len(missing)} ids, e.g. {missing[:3]}")
    counts = np.array([len(table[i]) for i in ids])
    out = np.zeros((len(ids), size, size), np.float32)
    if counts.sum() == 0:
        return out
    boxes = np.concatenate([np.asarray(table[i], np.float64).reshape(-1, 4) for i in ids])  # (M, 4)
    owner = np.repeat(np.arange(len(ids)), counts)  # (M,) sample of each box
    for s in range(0, len(boxes), 512):  # bounded memory: 512 boxes at a time
        fills = fill_boxes(vggss_box_pixels(boxes[s:s + 512], size), size)
        np.add.at(out, owner[s:s + 512], fills)
    return (out > 0).astype(np.float32)

"""Ground-truth maps and annotation readers of SoundNet-Flickr (XML) and VGG-SS (JSON), by the official
evaluation's rules (docs/data.md); bad boxes raise or are warned about, never silently changed."""

from __future__ import annotations

import json
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

_COORDS = ("xmin", "ymin", "xmax", "ymax")
FLICKR_SIZE = 256  # Flickr annotations are in 256 x 256 px coordinates
PIXEL_LIKE = 1.5  # a normalized coordinate above this is taken for a pixel coordinate


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
    """Boxes (M, 4) int, 256-px coordinates, of a Flickr XML file or text."""
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
    b = np.asarray(boxes, dtype=np.int64)
    reasons = _flickr_problems(b)
    if all(reasons):
        raise AnnotationError(f"{name}: every box is empty: " + "; ".join(f"box {v} {r}" for v, r in
                              zip(b.tolist(), reasons)) + "; expected xmin < xmax and ymin < ymax inside [0, 256]")
    if any(reasons):
        _warn_boxes(name, b, reasons, len(b))
    return b


def _flickr_problems(b: np.ndarray) -> list[str]:
    """A reason per 256-px box (M, 4): "" for a usable box, else why it is empty."""
    x0, y0, x1, y1 = b.T
    out = []
    for k in range(len(b)):
        if x1[k] < x0[k] or y1[k] < y0[k]:
            out.append("inverted (xmax < xmin or ymax < ymin)")
        elif x1[k] == x0[k] or y1[k] == y0[k]:
            out.append("empty (zero width or height)")
        elif x1[k] <= 0 or y1[k] <= 0 or x0[k] >= FLICKR_SIZE or y0[k] >= FLICKR_SIZE:
            out.append("fully outside the 256-px image")
        else:  # inside, or partly outside: the slicing clips it as the benchmark does
            out.append("")
    return out


def _warn_boxes(name: str, boxes: np.ndarray, reasons: list[str], n: int, owners=None) -> None:
    bad = [k for k, r in enumerate(reasons) if r]
    who = (lambda k: f"{owners[k]} ") if owners is not None else (lambda k: "")
    listed = "; ".join(f"{who(k)}box {boxes[k].tolist()} {reasons[k]}" for k in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    warnings.warn(f"{name}: {listed}{more} ({len(bad)} of {n} boxes; clipped or left empty as the benchmark "
                  "does)", stacklevel=3)


def flickr_gt_map(xml: str | os.PathLike, size: int = 224) -> np.ndarray:
    """The Flickr consensus map (size, size) in {0, 0.5, 1} of an XML file or text."""
    boxes = parse_flickr_xml(xml)
    fills = fill_boxes(np.trunc(size * boxes / FLICKR_SIZE).astype(np.int64), size)  # int(size * v / 256)
    empty = ~fills.reshape(len(fills), -1).any(1)  # (M,)
    if empty.any():
        name = str(xml) if not (isinstance(xml, str) and xml.lstrip().startswith("<")) else "<xml text>"
        if empty.all():
            raise AnnotationError(f"{name}: every box is empty at {size} px: {boxes.tolist()}; expected at least "
                                  "one box inside the 256-px image")
        flagged = _flickr_problems(boxes)
        reasons = [f"empty at {size} px" if e and not r else "" for e, r in zip(empty, flagged)]
        if any(reasons):
            _warn_boxes(name, boxes, reasons, len(boxes))
    gt = fills.sum(0, dtype=np.float64) / 2
    return np.minimum(gt, 1.0)


def _checked_vggss(bboxes, name: str) -> np.ndarray:
    """Normalized boxes as (M, 4) float64; raises ValueError for wrong arity, NaN/inf, pixel-scale values."""
    try:
        b = np.asarray(bboxes, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected boxes [[x0, y0, x1, y1], ...] of 4 numbers each, got "
                         f"{str(bboxes)[:80]} ({e})") from None
    if b.ndim == 1 and b.size in (0, 4):
        b = b.reshape(-1, 4)  # no box, or one box given flat
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected 4 numbers (x0, y0, x1, y1) per box, got shape {b.shape}: "
                         f"{str(b.tolist())[:80]}")
    finite = np.isfinite(b).all(1)
    if not finite.all():
        raise ValueError(f"{name}: box {b[~finite][0].tolist()} holds NaN or inf; expected normalized "
                         "coordinates in [0, 1]")
    if (b > PIXEL_LIKE).any():
        raise ValueError(f"{name}: box {b[(b > PIXEL_LIKE).any(1)][0].tolist()} looks like pixel coordinates; "
                         "expected normalized coordinates in [0, 1] (divide x by the image width, y by its height)")
    return b


def _vggss_pixels(b: np.ndarray, size: int, name: str, owners=None) -> np.ndarray:
    """Checked boxes (M, 4) -> `int(size * max(v, 0))`, warning about clipped or empty boxes."""
    px = np.trunc(size * np.maximum(b, 0.0)).astype(np.int64)
    outside = ((b < 0) | (b > 1)).any(1)
    hi = np.minimum(px[:, 2:], size)
    empty = (hi <= px[:, :2]).any(1)  # the slice [y0:y1, x0:x1] holds no pixel
    if outside.any() or empty.any():
        reasons = [("partly outside [0, 1], clipped" if o else "") + ("; " if o and e else "") +
                   (f"empty at {size} px" if e else "") for o, e in zip(outside, empty)]
        _warn_boxes(name, b, reasons, len(b), owners)
    return px


def vggss_box_pixels(bboxes, size: int = 224) -> np.ndarray:
    """Normalized boxes (M, 4) (or one box (4,)) -> integer pixel boxes `int(size * max(v, 0))` (M, 4)."""
    return _vggss_pixels(_checked_vggss(bboxes, "bboxes"), size, "bboxes")


def vggss_gt_map(bboxes, size: int = 224) -> np.ndarray:
    """VGG-SS map (size, size) float64 in {0, 1}: union of the normalized boxes `[[x0,y0,x1,y1], ...]`."""
    b = _checked_vggss(bboxes, "bboxes")
    if len(b) == 0:
        return np.zeros((size, size))
    return (fill_boxes(_vggss_pixels(b, size, "bboxes"), size).sum(0) > 0).astype(np.float64)


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
    return {str(e["file"]): str(e.get("class", "")) for e in json.loads(Path(json_path).read_text())}


def load_id_list(csv_path: str | os.PathLike) -> list[str]:
    """Ids of the first column of a test list (`vggss_test_4692.csv`, `flickr_test249_in5k.csv`)."""
    path = Path(csv_path)
    if not path.is_file():
        raise AnnotationError(f"{path}: test id list not found (it ships in the official SSPL repository, metadata/)")
    return [line.split(",")[0].strip() for line in path.read_text().splitlines() if line.strip()]


def gt_maps_for_split(ids, *, flickr_dir: str | os.PathLike | None = None,
                      vggss: str | os.PathLike | dict | None = None, size: int = 224) -> np.ndarray:
    """Ground-truth maps (N, size, size) of `ids` from a folder of `<id>.xml` or a VGG-SS JSON."""
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
    source = vggss if not isinstance(vggss, dict) else "annotations"
    try:
        per_id = [_checked_vggss(table[i], f"id {i}") for i in ids]
    except ValueError as e:
        raise AnnotationError(f"{source}: {e}") from None
    counts = np.array([len(b) for b in per_id])
    out = np.zeros((len(ids), size, size), np.float32)
    if counts.sum() == 0:
        return out
    boxes = np.concatenate(per_id)  # (M, 4)
    owner = np.repeat(np.arange(len(ids)), counts)  # (M,) sample of each box
    px = _vggss_pixels(boxes, size, str(source), owners=[f"id {ids[k]}" for k in owner])
    for s in range(0, len(boxes), 512):  # bounded memory: 512 boxes at a time
        np.add.at(out, owner[s:s + 512], fill_boxes(px[s:s + 512], size))
    return (out > 0).astype(np.float32)

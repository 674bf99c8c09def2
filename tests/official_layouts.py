"""Miniature datasets in the official SSPL layouts, and pretrained-weight files in their published formats,
written by the tests (seeded random content; the real data and weights cannot be downloaded here).

    <root>/SoundNet_Flickr/{10k,144k}_unlabeled/h5py_train_{frames,audios,spects}_<subset>[_k].h5
    <root>/SoundNet_Flickr/5k_labeled/{Annotations/<id>.xml, Data/frames/<id>.jpg, Data/audio/<id>.wav}
    <root>/SoundNet_Flickr/flickr_test249_in5k.csv                      (id,index a line)
    <root>/VGG-Sound/{10k,144k}_unlabeled/...                             (same names as Flickr)
    <root>/VGG-Sound/5k_labeled/Annotations/vggss_test_5158.json         (all annotated clips)
    <root>/VGG-Sound/5k_labeled/Data/h5py_test_{frames,audios,spects}.h5 (row k = test id k)
    <root>/VGG-Sound/5k_labeled/Data/{frames,audio}/<id>.jpg|wav         (annotated clips outside the test list)
    <root>/VGG-Sound/vggss_test_4692.csv                                 (id a line)
    <weights>/vgg16-397923af.pth   torchvision VGG16 key names (features.* only: the part the model reads)
    <weights>/vggish-10086976.pth  torchvggish key names (features.*, embeddings.*)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf
import torch
from PIL import Image

FRAME = 256  # official frames: 256 x 256, float32 0..255


def _scene(rng, box):
    """A frame with a bright square at `box` (x0, y0, x1, y1 in 256 px) over noise, float32 0..255."""
    img = rng.uniform(0, 90, (FRAME, FRAME, 3)).astype(np.float32)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = rng.uniform(180, 255, 3)
    return img


def _box(rng):
    w = int(rng.integers(60, 120))
    x0, y0 = (int(v) for v in rng.integers(0, FRAME - w, 2))
    return x0, y0, x0 + w, y0 + w


def _tone(rng, seconds=5.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def _spects(rng, n):
    return rng.normal(-2.0, 1.0, (n, 3, 96, 64)).astype(np.float32)


def write_triplet(folder: Path, stem: str, n: int, *, prefix: str = "train", seed: int = 0, boxes=None) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    boxes = boxes if boxes is not None else [_box(rng) for _ in range(n)]
    with h5py.File(folder / f"h5py_{prefix}_frames{stem}.h5", "w") as f:
        f[f"{prefix}_frames"] = np.stack([_scene(rng, b) for b in boxes])
    with h5py.File(folder / f"h5py_{prefix}_audios{stem}.h5", "w") as f:
        f[f"{prefix}_audios"] = np.stack([_tone(rng, 3.0) for _ in range(n)])
    with h5py.File(folder / f"h5py_{prefix}_spects{stem}.h5", "w") as f:
        f[f"{prefix}_spects"] = _spects(rng, n)


def _unlabeled(base: Path, n10k: int, n144k_part: int, seed: int) -> None:
    write_triplet(base / "10k_unlabeled", "_10k", n10k, seed=seed)
    for k in range(1, 11):
        write_triplet(base / "144k_unlabeled", f"_144k_{k}", n144k_part, seed=seed + k)


def _media(data: Path, ids, rng) -> dict:
    """jpg + wav per id; returns {id: box (256 px)}."""
    (data / "frames").mkdir(parents=True, exist_ok=True)
    (data / "audio").mkdir(parents=True, exist_ok=True)
    boxes = {}
    for i in ids:
        boxes[i] = _box(rng)
        Image.fromarray(_scene(rng, boxes[i]).astype(np.uint8)).save(data / "frames" / f"{i}.jpg", quality=95)
        sf.write(data / "audio" / f"{i}.wav", _tone(rng), 16000)
    return boxes


def _dataset(root: Path, folder: str, n10k: int, n144k_part: int, seed: int):
    """The dataset folder with its unlabeled training sets written, and the generator of its labeled part."""
    base = Path(root) / folder
    _unlabeled(base, n10k, n144k_part, seed)
    return base, np.random.default_rng(seed + 100)


def write_flickr(root: Path, *, n10k: int = 8, n144k_part: int = 1, n_test: int = 4, n_val: int = 4,
                 seed: int = 0) -> Path:
    base, rng = _dataset(root, "SoundNet_Flickr", n10k, n144k_part, seed)
    ids = [str(1000 + k) for k in range(n_test + n_val)]
    lab = base / "5k_labeled"
    boxes = _media(lab / "Data", ids, rng)
    (lab / "Annotations").mkdir(parents=True, exist_ok=True)
    for i, (x0, y0, x1, y1) in boxes.items():
        objs = "".join(f"<object><bbox><label>1</label><xmin>{x0 + d}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                       f"<ymax>{y1 - d}</ymax></bbox></object>" for d in (0, 4, 8))  # three annotators
        (lab / "Annotations" / f"{i}.xml").write_text(f"<annotation>{objs}</annotation>")
    (base / "flickr_test249_in5k.csv").write_text("".join(f"{i},{k}\n" for k, i in enumerate(ids[:n_test])))
    return base


def write_vggsound(root: Path, *, n10k: int = 8, n144k_part: int = 1, n_test: int = 4, n_val: int = 4,
                   seed: int = 1) -> Path:
    base, rng = _dataset(root, "VGG-Sound", n10k, n144k_part, seed)
    test_ids = [f"vid{k:03d}_{30 * k:06d}" for k in range(n_test)]
    val_ids = [f"val{k:03d}_{10 * k:06d}" for k in range(n_val)]
    data = base / "5k_labeled" / "Data"
    test_boxes = [_box(rng) for _ in test_ids]
    write_triplet(data, "", n_test, prefix="test", seed=seed + 200, boxes=test_boxes)
    val_boxes = _media(data, val_ids, rng)
    entries = [{"file": i, "class": "tone", "bbox": [[v / FRAME for v in b]]}
               for i, b in [*zip(test_ids, test_boxes), *val_boxes.items()]]
    (base / "5k_labeled" / "Annotations").mkdir(parents=True, exist_ok=True)
    (base / "5k_labeled" / "Annotations" / "vggss_test_5158.json").write_text(json.dumps(entries))
    (base / "vggss_test_4692.csv").write_text("".join(f"{i}\n" for i in test_ids))
    return base


def write_weights(folder: Path, seed: int = 0) -> Path:
    """VGG16 (torchvision key names) and VGGish (torchvggish key names) weight files with seeded values."""
    import torchvision

    from sspl_lib.encoders import VGGish

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vgg = torchvision.models.vgg16(weights=None).features
    torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()}, folder / "vgg16-397923af.pth")
    torch.manual_seed(seed + 1)
    torch.save(VGGish(pretrained=False).state_dict(), folder / "vggish-10086976.pth")
    return folder


def tree_hash(root: Path) -> dict:
    """{relative path: sha1} of every file under `root` (to show that nothing was changed)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}

"""Readers for the real data layouts of the official SSPL README (SoundNet-Flickr, VGG-Sound).

    Datasets/SoundNet_Flickr/10k_unlabeled/h5py_train_{frames,audios,spects}_10k.h5
    Datasets/SoundNet_Flickr/144k_unlabeled/h5py_train_{frames,audios,spects}_144k_{1..10}.h5
    Datasets/SoundNet_Flickr/5k_labeled/Annotations/<id>.xml, Data/frames/<id>.jpg, Data/audio/<id>.wav
    Datasets/SoundNet_Flickr/flickr_test249_in5k.csv
    Datasets/VGG-Sound/{10k,144k}_unlabeled/...   (same names as Flickr)
    Datasets/VGG-Sound/5k_labeled/Annotations/vggss_test_5158.json, Data/h5py_test_{frames,audios,spects}.h5
    Datasets/VGG-Sound/vggss_test_4692.csv

Items are the same dicts as `h5.AVDataset`'s. One h5py handle per file per worker process.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from .gt import flickr_gt_map, load_id_list, load_vggss_annotations, vggss_gt_map
from .h5 import DataFileError, H5Writer, open_h5, read_field
from .transforms import AugmentConfig, eval_frame, random_views

FOLDERS = {"flickr": "SoundNet_Flickr", "vggsound": "VGG-Sound"}
WHERE = ("see 'Data preparation' in the official SSPL README (github.com/zjsong/SSPL); videos: SoundNet-Flickr "
         "http://soundnet.csail.mit.edu/, VGG-Sound https://www.robots.ox.ac.uk/~vgg/data/vggsound/, test boxes "
         "and id lists in the official repository's metadata/ folder")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataFileError(f"{path}: missing ({what}); {WHERE}")
    return path


def dataset_root(root: str | os.PathLike, dataset: str) -> Path:
    """`root/SoundNet_Flickr` (or `root/VGG-Sound`); `root` may also be that folder itself."""
    root = Path(root)
    folder = FOLDERS[dataset]
    return root if root.name == folder else root / folder


def train_triplets(root, *, dataset: str = "flickr", subset: str = "10k") -> list[tuple[Path, Path, Path]]:
    """(frames, audios, spects) h5 paths of the official training sets, in index order."""
    base = dataset_root(root, dataset) / f"{subset}_unlabeled"
    parts = [""] if subset == "10k" else [f"_{i}" for i in range(1, 11)]
    return [tuple(_need(base / f"h5py_train_{kind}_{subset}{p}.h5", f"official {dataset} {subset} training {kind}")
                  for kind in ("frames", "audios", "spects")) for p in parts]


def _frame_uint8(frame: np.ndarray) -> torch.Tensor:
    """Official frames are float32 0..255 (N,256,256,3); ours uint8."""
    return torch.from_numpy(np.clip(np.rint(frame), 0, 255).astype(np.uint8) if frame.dtype != np.uint8 else frame)


class _Handles:
    """Lazily opened read-only h5py files, reopened after a fork (picklable)."""

    def __init__(self):
        self.files: dict[Path, h5py.File] = {}
        self.pid = None

    def get(self, path: Path) -> h5py.File:
        if self.pid != os.getpid():
            self.files, self.pid = {}, os.getpid()
        if path not in self.files:
            self.files[path] = open_h5(path)
        return self.files[path]

    def __getstate__(self):
        return {"files": {}, "pid": None}


class OfficialTrainSet(torch.utils.data.Dataset):
    """Official unlabeled training h5 triplets (10k: one triplet, 144k: ten of 14400) as training items."""

    def __init__(self, root, *, dataset: str = "flickr", subset: str = "10k", img_size: int = 224, views: int = 2,
                 seed: int = 0, augment: AugmentConfig | None = None):
        self.triplets = train_triplets(root, dataset=dataset, subset=subset)
        self.aug = augment or AugmentConfig(img_size=img_size)
        self.views, self.seed, self.epoch = views, seed, 0
        self.h = _Handles()
        lengths = []
        for fr, _, _ in self.triplets:
            with open_h5(fr) as f:
                lengths.append(int(read_field_shape(f, "train_frames")[0]))
        self.offsets = np.cumsum([0] + lengths)  # (n_files + 1,)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        i = index - int(self.offsets[part])
        fr, _, sp = self.triplets[part]
        frame = _frame_uint8(read_field(self.h.get(fr), "train_frames", i))
        spect = torch.from_numpy(read_field(self.h.get(sp), "train_spects", i).astype(np.float32)).reshape(3, 96, 64)
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        item = {"spect": spect, "index": index}
        for k, v in enumerate(random_views(frame, self.aug, self.views, g), 1):
            item[f"frame_view{k}"] = v
        return item


def read_field_shape(f: h5py.File, key: str) -> tuple:
    if key not in f:
        raise DataFileError(f"{f.filename}: no dataset '{key}' (has {sorted(f.keys())})")
    return f[key].shape


class FlickrTest(torch.utils.data.Dataset):
    """SoundNet-Flickr test (249 ids of flickr_test249_in5k.csv): jpg + wav + XML boxes, eval items with `gt`."""

    def __init__(self, root, *, img_size: int = 224, gt_size: int = 224, ids_csv=None):
        base = dataset_root(root, "flickr")
        self.ids = load_id_list(_need(Path(ids_csv) if ids_csv else base / "flickr_test249_in5k.csv", "test id list"))
        self.frames = base / "5k_labeled" / "Data" / "frames"
        self.audio = base / "5k_labeled" / "Data" / "audio"
        self.ann = base / "5k_labeled" / "Annotations"
        for i in self.ids[:1]:
            for p, what in ((self.frames / f"{i}.jpg", "test frame"), (self.audio / f"{i}.wav", "test audio"),
                            (self.ann / f"{i}.xml", "test annotation")):
                _need(p, what)
        self.img_size, self.gt_size = img_size, gt_size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        from ..audio import prepare_clip, vggish_examples
        from .media import read_audio, read_image

        i = self.ids[index]
        frame = torch.from_numpy(read_image(_need(self.frames / f"{i}.jpg", "test frame")))
        wave, sr = read_audio(_need(self.audio / f"{i}.wav", "test audio"))
        clip = prepare_clip(wave, sr)
        return {"frame": eval_frame(frame, self.img_size), "spect": vggish_examples(clip)[:3], "index": index, "id": i,
                "gt": torch.from_numpy(flickr_gt_map(_need(self.ann / f"{i}.xml", "test annotation"),
                                                     self.gt_size).astype(np.float32))}


class VGGSSTest(torch.utils.data.Dataset):
    """VGG-SS test (4692 ids of vggss_test_4692.csv; row k of the h5py_test_* files is id k): eval items with `gt`."""

    def __init__(self, root, *, img_size: int = 224, gt_size: int = 224, ids_csv=None, json_path=None):
        base = dataset_root(root, "vggsound")
        self.ids = load_id_list(_need(Path(ids_csv) if ids_csv else base / "vggss_test_4692.csv", "test id list"))
        self.boxes = load_vggss_annotations(_need(Path(json_path) if json_path else
                                                  base / "5k_labeled" / "Annotations" / "vggss_test_5158.json",
                                                  "VGG-SS boxes"))
        data = base / "5k_labeled" / "Data"
        self.files = {k: _need(data / f"h5py_test_{k}.h5", f"VGG-SS test {k}") for k in ("frames", "spects")}
        self.img_size, self.gt_size = img_size, gt_size
        self.h = _Handles()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        i = self.ids[index]
        frame = _frame_uint8(read_field(self.h.get(self.files["frames"]), "test_frames", index))
        spect = read_field(self.h.get(self.files["spects"]), "test_spects", index).astype(np.float32)
        if i not in self.boxes:
            raise DataFileError(f"VGG-SS annotations: no boxes for id {i}")
        return {"frame": eval_frame(frame, self.img_size), "spect": torch.from_numpy(spect).reshape(3, 96, 64),
                "index": index, "id": i,
                "gt": torch.from_numpy(vggss_gt_map(self.boxes[i], self.gt_size).astype(np.float32))}


def FlickrTrain(root, **kw) -> OfficialTrainSet:
    """Official SoundNet-Flickr training set (`subset="10k"` or `"144k"`)."""
    return OfficialTrainSet(root, dataset="flickr", **kw)


def VGGSoundTrain(root, **kw) -> OfficialTrainSet:
    """Official VGG-Sound training set (`subset="10k"` or `"144k"`)."""
    return OfficialTrainSet(root, dataset="vggsound", **kw)


def pack_h5_triplets(triplets, out, *, prefix: str = "train", source: str = "flickr", ids=None, gt=None,
                     chunk: int = 256) -> Path:
    """Copy official (frames, audios, spects) h5 files into one sspl-h5 file, `chunk` rows at a time.
    `ids`: list of str (default: running numbers); `gt`: callable id -> (224, 224) map, stored as `gt`."""
    frame_size = None
    done = 0
    with H5Writer(out, attrs=dict(sample_rate=16000, source=source)) as w:
        for fr, au, sp in triplets:
            ff, fa, fs = open_h5(fr), open_h5(au), open_h5(sp)
            try:
                n = read_field_shape(ff, f"{prefix}_frames")[0]
                for s in range(0, n, chunk):
                    e = min(n, s + chunk)
                    frames = np.clip(np.rint(read_field(ff, f"{prefix}_frames", slice(s, e))), 0, 255).astype(np.uint8)
                    frame_size = frames.shape[1]
                    batch = {"frames": frames,
                             "audio": read_field(fa, f"{prefix}_audios", slice(s, e)).astype(np.float32),
                             "spects": read_field(fs, f"{prefix}_spects", slice(s, e)).astype(np.float32).reshape(e - s, 3, 96, 64),
                             "ids": [str(ids[k]) if ids is not None else f"{k:07d}" for k in range(done, done + e - s)]}
                    if gt is not None:
                        batch["gt"] = np.stack([gt(x) for x in batch["ids"]]).astype(np.float32)
                    w.append(batch)
                    done += e - s
            finally:
                ff.close(), fa.close(), fs.close()
        w.f.attrs["frame_size"] = frame_size or 0
    return Path(out)


def pack_official_h5(root, out, *, dataset: str = "flickr", subset: str = "10k", chunk: int = 256) -> Path:
    """Official layout -> one sspl-h5 file. `subset`: "10k" | "144k" (training) or "test" (VGG-SS test with gt)."""
    if subset == "test":
        if dataset != "vggsound":
            raise ValueError("the Flickr test set is jpg/wav files: use sspl_lib.data.prepare.prepare_folder")
        t = VGGSSTest(root)
        trip = [(t.files["frames"], _need(t.files["frames"].with_name("h5py_test_audios.h5"), "VGG-SS test audios"),
                 t.files["spects"])]
        return pack_h5_triplets(trip, out, prefix="test", source=dataset, ids=t.ids,
                                gt=lambda i: vggss_gt_map(t.boxes[i]), chunk=chunk)
    return pack_h5_triplets(train_triplets(root, dataset=dataset, subset=subset), out, source=dataset, chunk=chunk)

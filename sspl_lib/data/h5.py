"""The packed HDF5 format, one file per split (docs/data.md): the atomic chunked writer, readers,
`AVDataset`."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from .transforms import AugmentConfig, eval_frame, random_views

FORMAT = "sspl-h5/1"


class DataFileError(OSError):
    """A data file that is missing, unreadable, truncated or lacks a dataset; the message names it."""


def _field_spec(name: str, shape: tuple[int, ...], dtype) -> dict:
    """Creation keywords of one dataset: resizable along N; chunks of <= 64 KiB or one item (fast random reads)."""
    if name == "ids":  # fixed-length bytes: no variable-length heap to corrupt
        return dict(shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
    item = int(np.prod(shape)) * np.dtype(dtype).itemsize
    chunk_n = max(1, min(1024, (64 << 10) // max(item, 1)))  # one item per chunk for audio/spects
    if name == "frames":
        chunk_n = 1  # the contract: (1, S, S, 3)
    kw = dict(shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(chunk_n, *shape))
    if name == "gt":  # binary-ish maps compress ~100x
        kw.update(compression="gzip", compression_opts=1, shuffle=True)
    return kw


def encode_ids(ids) -> np.ndarray:
    """A sequence of str -> fixed-length utf-8 bytes `S<n>` (n = the longest, at least 1)."""
    raw = [str(i).encode("utf-8") for i in ids]
    return np.array(raw, dtype=f"S{max([1, *map(len, raw)])}")


def fsync_path(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class H5Writer:
    """Write items in chunks to `<path>.partial`; `close()` syncs and renames it to `path`."""

    def __init__(self, path: str | os.PathLike, *, attrs: dict | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial.unlink(missing_ok=True)
        self.f = h5py.File(self.partial, "w")
        self.f.attrs["format"] = FORMAT
        for k, v in (attrs or {}).items():
            self.f.attrs[k] = v

    def __len__(self) -> int:
        return int(self.f["ids"].shape[0]) if "ids" in self.f else 0

    def append(self, batch: dict[str, np.ndarray]) -> None:
        """Append a batch: every array shares the leading N; `ids` is a sequence of str."""
        n = {len(v) for v in batch.values()}
        if len(n) != 1:
            raise ValueError(f"{self.partial}: batch fields have different lengths {n}")
        (n,) = n
        for name, value in batch.items():
            arr = encode_ids(value) if name == "ids" else np.asarray(value)
            if name == "ids" and name in self.f and self.f[name].dtype.itemsize < arr.dtype.itemsize:
                self._widen_ids(arr.dtype)
            if name not in self.f:
                self.f.create_dataset(name, **_field_spec(name, arr.shape[1:], arr.dtype))
            ds = self.f[name]
            start = ds.shape[0]
            ds.resize(start + n, axis=0)
            ds[start:start + n] = arr
        self.f.flush()

    def _widen_ids(self, dtype) -> None:
        """A longer id than any before: rewrite the (small) ids dataset with the wider fixed length."""
        old = self.f["ids"][:]
        del self.f["ids"]
        ds = self.f.create_dataset("ids", **_field_spec("ids", (), dtype))
        ds.resize(len(old), axis=0)
        ds[:] = old.astype(dtype)

    def close(self, commit: bool = True) -> Path:
        self.f.close()
        if commit:
            fsync_path(self.partial)
            os.replace(self.partial, self.path)
            fsync_path(self.path.parent)
            return self.path
        return self.partial

    def __enter__(self) -> "H5Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def _open(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise DataFileError(f"{path}: not a readable sspl HDF5 file (truncated or corrupt? {e})") from e


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open a packed file read-only; missing or unreadable files raise DataFileError naming the path."""
    return _open(path, "r")


def read_field(f: h5py.File, key: str, index=slice(None)) -> np.ndarray:
    """`f[key][index]` with errors that name the file and the key."""
    if key not in f:
        raise DataFileError(f"{f.filename}: no dataset '{key}' (has {sorted(f.keys())})")
    try:
        return f[key][index]
    except OSError as e:
        raise DataFileError(f"{f.filename}: cannot read '{key}'[{index}] (truncated or corrupt? {e})") from e


def load_split(path: str | os.PathLike, keys=None) -> dict:
    """Read a whole (small) file into memory: {key: numpy array}, `ids` as list of str, `attrs` as dict."""
    with open_h5(path) as f:
        keys = list(f.keys()) if keys is None else list(keys)
        out = {k: read_field(f, k) for k in keys}
        out["attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    if "ids" in out:
        out["ids"] = [i.decode() if isinstance(i, bytes) else str(i) for i in out["ids"]]
    return out


def read_ids(path: str | os.PathLike) -> list[str]:
    return load_split(path, ["ids"])["ids"]


class AVDataset(torch.utils.data.Dataset):
    """Items of one packed file, opened lazily once per worker. train: two views, spect, index; eval: frame,
    spect, index, id (+ box, label, gt); `raw_frames`: the uint8 frame instead of the views."""

    def __init__(self, path: str | os.PathLike, *, img_size: int = 224, train: bool = True, views: int = 2,
                 seed: int = 0, augment: AugmentConfig | None = None, raw_frames: bool = False):
        self.path = Path(path)
        self.train, self.views, self.seed, self.epoch = train, views, seed, 0
        self.aug = augment or AugmentConfig(img_size=img_size)
        self.img_size = self.aug.img_size
        self.raw_frames = raw_frames
        self._f: h5py.File | None = None
        self._pid: int | None = None
        with open_h5(self.path) as f:
            for key in ("frames", "spects"):
                if key not in f:
                    raise DataFileError(f"{self.path}: no dataset '{key}' (has {sorted(f.keys())})")
            self.n = int(f["frames"].shape[0])
            self.extras = [k for k in ("boxes", "label", "gt") if k in f]
            self.attrs = dict(f.attrs)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _file(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f, self._pid = open_h5(self.path), os.getpid()
        return self._f

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_f"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(f"{self.path}: index {index} out of range [0, {self.n})")
        f = self._file()
        frame = torch.from_numpy(read_field(f, "frames", index))  # (S, S, 3) uint8
        item = {"spect": torch.from_numpy(read_field(f, "spects", index).astype(np.float32)), "index": index}
        if self.raw_frames:
            item["frame_uint8"] = frame
        elif self.train:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            for k, v in enumerate(random_views(frame, self.aug, self.views, g), 1):
                item[f"frame_view{k}"] = v
        else:
            item["frame"] = eval_frame(frame, self.img_size, self.aug.mean, self.aug.std)
        if not self.train:
            item["id"] = str(read_field(f, "ids", index).decode()) if "ids" in f else str(index)
            for k in self.extras:
                v = read_field(f, k, index)
                item["box" if k == "boxes" else k] = torch.as_tensor(v.astype(np.int64) if k == "label" else v.astype(np.float32))
        return item

"""Frozen-encoder features of a split file, cached on disk (docs/experiments.md): the visual stream's maps of its
distinct frames (at the eval transform, or resized by `cache_scale` for training's feature-space crops) and the audio
backbone's embeddings of its clips and of the silent clip. One file per part under `<split folder>/features/`, named
by a key of the encoders' weights, the data file and the sizes; written once (atomic, maps in float16), read with
mmap by every run, seed and job."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import silent_examples
from ..config import SSPLConfig
from ..distributed import choose_device
from ..data.h5 import open_h5
from ..data.stream import CachedStream, split_path
from ..data.transforms import eval_frame, normalize, resize_uint8, to_chw
from ..methods.registry import build_model
from ..model import CACHE_PASS
from ..progress_lines import ProgressLines
from .atomic import atomic_save

VERSION = 1
CHUNK = 32  # frames or clips read per step (the model encodes them in passes of model.CACHE_PASS)
SAY_EVERY = 10.0  # seconds between progress lines


class CacheFileError(RuntimeError):
    """A cache file that cannot be used (unreadable, truncated, another key, a checksum mismatch)."""


def state_fingerprint(module: torch.nn.Module | None) -> str | None:
    """sha1 of a module's state_dict (names, dtypes, shapes and bytes of every weight and buffer): two modules of
    one architecture with the same fingerprint compute the same function in eval mode."""
    if module is None:
        return None
    h = hashlib.sha1()
    for k, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- keys and files
def file_key(path: Path) -> dict:
    """A data file's identity: name, size, modification time, rows, and a hash of its ids and three rows."""
    st, h = path.stat(), hashlib.sha1()
    with open_h5(path) as f:
        n = int(f["frames"].shape[0])
        if "ids" in f:
            h.update(np.ascontiguousarray(f["ids"][:]).tobytes())
        for k in ("frames", "spects"):
            for i in sorted({0, n // 2, n - 1}):
                h.update(np.ascontiguousarray(f[k][i]).tobytes())
    return {"file": path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "rows": n, "sample": h.hexdigest()}


def train_size(cfg: SSPLConfig) -> int:
    """The side (px) the train frames are resized to before encoding: round(cache_scale * img_size)."""
    return round(cfg.cache_scale * cfg.img_size)


def cache_file(path: Path, part: str, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return path.parent / "features" / f"{path.stem}.{part}-{digest}.pt"


def _checksum(content: dict) -> str:
    h = hashlib.sha1()
    for k in sorted(content):
        h.update(k.encode() + content[k].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read(file: Path, key: dict, *, verify: bool = True) -> dict:
    """The tensors of a cache file (memory-mapped); CacheFileError naming what is wrong."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated, empty, not a torch file
        raise CacheFileError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    meta = state.pop("meta", None) if isinstance(state, dict) else None
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise CacheFileError("not the cache of these encoders, data and sizes (another key)")
    if verify and _checksum(state) != meta.get("checksum"):
        raise CacheFileError("its tensors do not match their checksum (corrupt)")
    return state


@contextmanager
def _locked(file: Path):
    """One builder per cache file (other processes wait, then read what it wrote)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file.with_name(f".{file.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_LOADED: dict = {}  # (file, inode, mtime) -> tensors: each process maps a file once


def read_or_build(file: Path, key: dict, build, *, progress: bool = True) -> dict:
    """The tensors of `file` if it holds `key` intact, else `build()` written there (a bad file is named, rebuilt)."""
    st = file.stat() if file.is_file() else None
    memo = (file, st.st_ino, st.st_mtime_ns) if st else None
    if memo in _LOADED:
        return _LOADED[memo]
    with _locked(file):
        if file.is_file():
            try:
                state = _read(file, key)
                _LOADED[(file, file.stat().st_ino, file.stat().st_mtime_ns)] = state
                return state
            except CacheFileError as e:
                print(f"[features] {file}: {e}; building it again", flush=True)
        t0 = time.perf_counter()
        content = build()
        atomic_save({"meta": {"key": key, "checksum": _checksum(content),
                              "seconds": round(time.perf_counter() - t0, 1)}, **content}, file)
        if progress:
            print(f"[features] wrote {file} ({file.stat().st_size / 2**20:.0f} MiB)", flush=True)
        state = _read(file, key, verify=False)
        _LOADED[(file, file.stat().st_ino, file.stat().st_mtime_ns)] = state
        return state


# ----------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class VisualMaps:
    """The stream's maps of a split's distinct frames, float16 (U,C,h,w), and the map of each row (N,)."""

    maps: torch.Tensor
    index: torch.Tensor

    def rows(self, rows) -> torch.Tensor:
        """float32 maps (b,C,h,w) of file rows."""
        return self.maps[self.index[torch.as_tensor(np.asarray(rows), dtype=torch.long)]].float()


@dataclass(frozen=True)
class AudioEmbeddings:
    """The backbone's embeddings of each row's clip (N,n,E) and of the silent clip (1,n,E), float32."""

    emb: torch.Tensor
    silent: torch.Tensor


def _device(model) -> torch.device:
    return next(model.parameters()).device


def distinct_frames(path: Path, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a split's distinct frames (first occurrences, ascending) and each row's position among them."""
    first: dict[bytes, int] = {}
    rows, index = [], []
    with open_h5(path) as f:
        for s in range(0, int(f["frames"].shape[0]), chunk):
            for i, frame in enumerate(f["frames"][s:s + chunk]):
                digest = hashlib.sha1(frame.tobytes()).digest()
                if digest not in first:
                    first[digest] = len(rows)
                    rows.append(s + i)
                index.append(first[digest])
    return np.asarray(rows, dtype=np.int64), np.asarray(index, dtype=np.int64)


@torch.inference_mode()
def _encode_frames(model, path: Path, size: int, train: bool, progress: bool) -> dict:
    rows, index = distinct_frames(path)
    say = ProgressLines("features", f"{path.name}: visual maps at {size} px", len(rows), unit="frames",
                        every=SAY_EVERY, enabled=progress)
    maps = None
    with open_h5(path) as f:
        for s in range(0, len(rows), CHUNK):
            frames = torch.from_numpy(f["frames"][rows[s:s + CHUNK]]).to(_device(model))
            x = normalize(resize_uint8(to_chw(frames), size)) if train else eval_frame(frames, size)
            (v,) = model.encode_frames(x)  # (b, C, h, w)
            if maps is None:
                maps = torch.empty(len(rows), *v.shape[1:], dtype=torch.float16)
            maps[s:s + len(v)] = v.to("cpu", torch.float16)
            say.update(len(v))
    say.done()
    return {"maps": maps, "index": torch.from_numpy(index)}


@torch.inference_mode()
def _embed_clips(model, path: Path, progress: bool) -> dict:
    def embed(spects: torch.Tensor) -> torch.Tensor:
        return model.embed_audio(spects.to(_device(model))).cpu()

    with open_h5(path) as f:
        n = int(f["spects"].shape[0])
        say = ProgressLines("features", f"{path.name}: audio embeddings", n, unit="clips", every=SAY_EVERY,
                            enabled=progress)
        out = []
        for s in range(0, n, CHUNK):
            out.append(embed(torch.from_numpy(f["spects"][s:s + CHUNK])))
            say.update(len(out[-1]))
    say.done()
    return {"emb": torch.cat(out).float(), "silent": embed(silent_examples()[None]).float()}


def visual_maps(model, split, *, train: bool = False, progress: bool = True) -> VisualMaps:
    """The cached maps of a split file's distinct frames: at the eval transform (img_size), or (`train`) resized to
    `train_size` for feature-space crops. `model`: a frozen visual stream (its weights are the key)."""
    path = Path(split).resolve()
    size = train_size(model.cfg) if train else model.cfg.img_size
    key = {"version": VERSION, "pass": CACHE_PASS, "part": "train_maps" if train else "eval_maps", "size": size,
           "data": file_key(path), "visual": state_fingerprint(model.visual), "pca": state_fingerprint(model.visual_pca)}
    file = cache_file(path, f"{key['part']}{size}", key)
    state = read_or_build(file, key, lambda: _encode_frames(model, path, size, train, progress), progress=progress)
    return VisualMaps(state["maps"], state["index"])


def audio_embeddings(model, split, *, progress: bool = True) -> AudioEmbeddings:
    """The cached embeddings of a split file's clips and of the silent clip (the audio backbone's weights: the key)."""
    path = Path(split).resolve()
    key = {"version": VERSION, "pass": CACHE_PASS, "part": "audio", "data": file_key(path),
           "audio": state_fingerprint(model.audio.backbone)}
    state = read_or_build(cache_file(path, "audio", key), key, lambda: _embed_clips(model, path, progress),
                          progress=progress)
    return AudioEmbeddings(state["emb"], state["silent"])


# ----------------------------------------------------------------------------- a run's cache
def stream_model(cfg: SSPLConfig):
    """The model `fit` builds for `cfg` (same seed, so the same random encoders) on its device, in eval mode; the
    global RNGs untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg).to(choose_device(cfg.device)).eval()


def grid_size(model, split, *, progress: bool = True) -> int:
    """The side of the maps at the eval transform (the crops' size): that of a split's cached eval maps."""
    return int(visual_maps(model, split, progress=progress).maps.shape[-1])


def prepare_training(cfg: SSPLConfig, model=None, *, progress: bool = True) -> None:
    """The cache files a run of `cfg` reads (built where missing): train maps and embeddings of the train split;
    eval maps, train maps and embeddings of the validation split."""
    model = model if model is not None else stream_model(cfg)
    train, val = split_path(cfg, cfg.train_split), split_path(cfg, cfg.val_split)
    for split, parts in ((train, (True,)), (val, (False, True))):
        for t in parts:
            visual_maps(model, split, train=t, progress=progress)
        audio_embeddings(model, split, progress=progress)


def cached_stream(model, cfg: SSPLConfig, info) -> CachedStream:
    """The train split's cached features (`prepare_training` built them) as fit's batches."""
    train = split_path(cfg, cfg.train_split)
    maps = visual_maps(model, train, train=True, progress=False)
    return CachedStream(maps.maps, maps.index, audio_embeddings(model, train, progress=False).emb,
                        grid=grid_size(model, split_path(cfg, cfg.val_split), progress=False),
                        batch_size=cfg.batch_size, seed=cfg.seed, info=info)

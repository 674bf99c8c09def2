"""Training data of `fit`: the deterministic train stream of a packed split, or of its cached features (the
augmented views are drawn from each batch by `transforms.train_views` / `transforms.map_views`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .. import distributed as D
from ..config import SSPLConfig
from ..paths import resolve
from .checks import check_split
from .h5 import AVDataset, DataFileError, load_split, open_h5
from .transforms import map_views, seeded_generator

# splits smaller than this are read into memory once; larger ones stream from disk through a DataLoader
# (SSPL_IN_MEMORY_BYTES=-1 forces the disk path, e.g. to test it in a torchrun process)
IN_MEMORY_BYTES = int(os.environ.get("SSPL_IN_MEMORY_BYTES", 6 * 2**30))


# ----------------------------------------------------------------------------- data
def split_path(cfg: SSPLConfig, split: str) -> Path:
    return resolve(cfg.data_root) / f"{split}.h5"


def check_training_data(cfg: SSPLConfig) -> None:
    for split, role in ((cfg.train_split, "train"), (cfg.val_split, "val")):
        path = split_path(cfg, split)
        if not path.is_file():
            raise DataFileError(f"{path}: file not found; a profile's {role} split is written into its data_root by "
                                "notebooks/01_data_preparation.ipynb (generated, or packed from the official layout: "
                                "docs/data.md); `sspl_lib.data.preflight.missing_files(cfg)` lists every missing file")
        check_split(path, role, limit=cfg.val_samples if role == "val" else 0)


def batch_rows(n: int, batch: int, seed: int, epoch: int, info: D.DistInfo) -> torch.Tensor:
    """(steps, batch / world size): this rank's rows of each global batch, order = permutation(seed, epoch)."""
    steps, local = n // batch, batch // info.world_size
    perm = torch.randperm(n, generator=seeded_generator(seed, epoch, 7))[: steps * batch]
    return perm.view(steps, batch)[:, info.rank * local:(info.rank + 1) * local]


class TrainStream:
    """Global batches of (uint8 frames, spects), this rank's slice of each. Order = permutation(seed, epoch)."""

    def __init__(self, path: Path, *, batch_size: int, seed: int, info: D.DistInfo, workers: int = 0):
        if batch_size % info.world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the world size {info.world_size}")
        self.path, self.batch, self.seed, self.info, self.workers = path, batch_size, seed, info, workers
        self.local = batch_size // info.world_size
        with open_h5(path) as f:
            self.n = int(f["frames"].shape[0])
            nbytes = f["frames"].size + 4 * f["spects"].size
        self.steps = self.n // batch_size
        if self.steps == 0:
            raise ValueError(f"{path}: {self.n} samples, fewer than one batch of {batch_size}")
        self.mem, self._loader = None, None
        if nbytes <= IN_MEMORY_BYTES:
            d = load_split(path, ["frames", "spects"])
            self.mem = torch.from_numpy(d["frames"]), torch.from_numpy(d["spects"])

    def indices(self, epoch: int) -> torch.Tensor:
        return batch_rows(self.n, self.batch, self.seed, epoch, self.info)

    def __call__(self, epoch: int, start_step: int = 0):
        """(uint8 frames, spects) of each step: train views are drawn by `train_views` (fit's `frame_inputs`)."""
        idx = self.indices(epoch)[start_step:]
        if self.mem is not None:
            for row in idx:
                yield self.mem[0][row], self.mem[1][row]
            return
        loader = self.loader()
        loader.sampler.indices = idx.flatten().tolist()
        for item in loader:
            yield item["frame_uint8"], item["spect"]

    def loader(self) -> torch.utils.data.DataLoader:
        """The DataLoader of a split too big for memory, made once (its workers persist)."""
        if self._loader is None:
            ds = AVDataset(self.path, train=True, raw_frames=True)
            self._loader = torch.utils.data.DataLoader(
                ds, batch_size=self.local, sampler=EpochSampler(), num_workers=self.workers, drop_last=True,
                persistent_workers=self.workers > 0, pin_memory=torch.cuda.is_available())  # CPU: no pinning
        return self._loader


class EpochSampler(torch.utils.data.Sampler):
    """The current epoch's indices, set from outside (a persistent DataLoader re-reads its sampler)."""

    def __init__(self):
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class CachedStream:
    """fit's batches from cached features: (train maps (b,C,R,R), embeddings (b,N,E)) of this rank in
    TrainStream's order (maps: float16 (U,C,R,R) of the distinct frames, index: each row's map)."""

    def __init__(self, maps: torch.Tensor, index: torch.Tensor, emb: torch.Tensor, *, grid: int, batch_size: int,
                 seed: int, info: D.DistInfo):
        if batch_size % info.world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the world size {info.world_size}")
        self.maps, self.index, self.emb, self.grid = maps, index, emb, grid
        self.n, self.batch, self.seed, self.info = len(index), batch_size, seed, info
        self.local, self.steps = batch_size // info.world_size, self.n // batch_size
        if self.steps == 0:
            raise ValueError(f"{self.n} cached samples, fewer than one batch of {batch_size}")

    def __call__(self, epoch: int, start_step: int = 0):
        for row in batch_rows(self.n, self.batch, self.seed, epoch, self.info)[start_step:]:
            yield self.maps[self.index[row]], self.emb[row]

    def inputs(self, batch, cfg: SSPLConfig, g: torch.Generator, *, offset: int, device):
        """A batch -> the model's inputs: two feature-space views (two streams: one view twice), the embeddings."""
        maps, emb = batch
        views = map_views(maps.to(device).float(), self.grid, g, views=cfg.streams - 1, batch=cfg.batch_size,
                          offset=offset)
        v1, v2 = (views * 2)[:2]
        return v1, v2, emb.to(device), True

"""Training data of `fit`: the deterministic train stream of a packed split and its augmented views."""

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
from .transforms import AugmentConfig, crop_flip, crop_flip_params, normalize, resize_uint8, to_chw

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


def seeded_generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash(tuple(int(k) for k in key)) & 0x7FFF_FFFF_FFFF_FFFF)


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
        perm = torch.randperm(self.n, generator=seeded_generator(self.seed, epoch, 7))[: self.steps * self.batch]
        r0 = self.info.rank * self.local
        return perm.view(self.steps, self.batch)[:, r0:r0 + self.local]

    def __call__(self, epoch: int, start_step: int = 0):
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


def train_views(frames: torch.Tensor, aug: AugmentConfig, g: torch.Generator, *, views: int, batch: int,
                offset: int, device) -> list[torch.Tensor]:
    """The official train views of a rank's slice of a global batch (crops drawn for the whole batch)."""
    big = resize_uint8(to_chw(frames.to(device, non_blocking=True)), aug.resize_to)  # (b, 3, R, R)
    b = big.shape[0]
    out = []
    for _ in range(views):
        oy, ox, flip = (p[offset:offset + b] for p in crop_flip_params(batch, aug.resize_to, aug, g))
        out.append(normalize(crop_flip(big, oy, ox, flip, aug.img_size), aug.mean, aug.std))
    return out

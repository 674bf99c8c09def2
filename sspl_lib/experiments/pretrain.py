"""What the encoders need before training (docs/experiments.md), saved to <out_dir>/encoders.pt: the label
pretraining of the small encoders, the visual PCA (`visual_pca_dim`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..config import SSPLConfig
from ..data.h5 import load_split, open_h5
from ..data.transforms import AugmentConfig, crop_flip, crop_flip_params, eval_frame, normalize, resize_uint8, to_chw
from ..encoders import SmallAudioEncoder, SmallVisualEncoder, build_visual
from ..paths import RUNS_DIR, resolve, shown
from ..pca import fit_pca
from ..progress_lines import ProgressLines, count
from . import runs
from .atomic import atomic_save

VERSION = 1
PCA_FRAMES, PCA_LOCATIONS = 512, 32  # the PCA's sample: evenly spaced train frames, random locations of each map


def needs_labels(cfg: SSPLConfig) -> bool:
    """The small CPU encoders, pretrained (not from scratch): label pretraining on the labeled synthetic set."""
    return cfg.pretrained and not cfg.from_scratch and "small" in (cfg.visual_encoder, cfg.audio_encoder)


def _data_key(path: Path) -> dict:
    with open_h5(path) as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()
                 if k in ("seed", "n_classes", "frame_size", "split", "source")}
        n = int(f["label"].shape[0])
    return {"file": path.name, "bytes": path.stat().st_size, "n": n, **attrs}


def cache_meta(cfg: SSPLConfig) -> dict:
    """What the cached encoders depend on: the labeled files and the pretraining settings; the PCA's train file,
    encoder and sizes."""
    root = resolve(cfg.data_root)
    keys = ("img_size", "visual_dim", "encoder_width", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size",
            "pretrain_loc_weight", "seed")
    meta = {"version": VERSION}
    if needs_labels(cfg):
        meta |= {"images": _data_key(root / "labeled_images.h5"), "sounds": _data_key(root / "labeled_sounds.h5"),
                 "config": {k: getattr(cfg, k) for k in keys}}
    if cfg.visual_pca_dim:
        keys = ("visual_encoder", "visual_features", "img_size", "visual_dim", "encoder_width", "pretrained",
                "visual_pca_dim", "seed")
        meta["pca"] = {"train": _data_key(root / f"{cfg.train_split}.h5"), "frames": PCA_FRAMES,
                       "locations": PCA_LOCATIONS, "config": {k: getattr(cfg, k) for k in keys}}
    return meta


def _crop_flip_boxes(frames: torch.Tensor, boxes: torch.Tensor, aug: AugmentConfig, g: torch.Generator):
    """Random crop + flip of uint8 frames (B,S,S,3) and their normalized boxes (B,4) -> normalized views, boxes."""
    big = resize_uint8(to_chw(frames), aug.resize_to)
    n, r = aug.img_size, aug.resize_to
    oy, ox, flip = crop_flip_params(big.shape[0], r, aug, g)
    crop = crop_flip(big, oy, ox, flip, n)
    bx = boxes * r  # pixel box in the resized frame
    x0, x1 = (bx[:, 0] - ox) / n, (bx[:, 2] - ox) / n
    y0, y1 = (bx[:, 1] - oy) / n, (bx[:, 3] - oy) / n
    x0, x1 = torch.where(flip, 1 - x1, x0), torch.where(flip, 1 - x0, x1)
    return normalize(crop, aug.mean, aug.std), torch.stack([x0, y0, x1, y1], 1).clamp(0, 1)


def location_targets(boxes: torch.Tensor, labels: torch.Tensor, h: int, w: int, background: int) -> torch.Tensor:
    """(B,h,w) class of each cell: the label where the cell centre is inside the box, else `background`."""
    cy, cx = (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w
    inside = ((cx[None, None, :] >= boxes[:, 0, None, None]) & (cx[None, None, :] < boxes[:, 2, None, None])
              & (cy[None, :, None] >= boxes[:, 1, None, None]) & (cy[None, :, None] < boxes[:, 3, None, None]))
    return torch.where(inside, labels[:, None, None], torch.full_like(inside, background, dtype=torch.long))


def _split(n: int, seed: int, frac: float = 0.1):
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(n * frac))
    return perm[k:], perm[:k]


def pretrain_visual(cfg: SSPLConfig, progress: bool = True) -> tuple[dict, dict]:
    d = load_split(resolve(cfg.data_root) / "labeled_images.h5", ["frames", "label", "boxes"])
    frames, labels, boxes = torch.from_numpy(d["frames"]), torch.from_numpy(d["label"].astype(np.int64)), \
        torch.from_numpy(d["boxes"])
    k = int(d["attrs"].get("n_classes", int(labels.max()) + 1))
    tr, te = _split(len(labels), cfg.seed)
    torch.manual_seed(cfg.seed)
    enc = SmallVisualEncoder(dim=cfg.visual_dim, width=cfg.encoder_width)
    cls = nn.Conv2d(cfg.visual_dim, k + 1, 1)  # K classes + background (index K)
    params = list(enc.parameters()) + list(cls.parameters())
    opt = torch.optim.Adam(params, lr=cfg.pretrain_lr)
    steps = cfg.pretrain_epochs * (len(tr) // cfg.pretrain_batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.pretrain_lr, total_steps=max(steps, 1), pct_start=0.15)
    aug = AugmentConfig(img_size=cfg.img_size)
    lines = ProgressLines("pretrain", "visual encoder", cfg.pretrain_epochs, unit="epochs", every=0, enabled=progress)
    loss = torch.tensor(float("nan"))
    for epoch in range(cfg.pretrain_epochs):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)]
        for s in range(0, len(perm) - cfg.pretrain_batch_size + 1, cfg.pretrain_batch_size):
            idx = perm[s:s + cfg.pretrain_batch_size]
            x, bx = _crop_flip_boxes(frames[idx], boxes[idx], aug, g)
            logits = cls(enc(x))  # (B, K+1, h, w)
            y = labels[idx]
            loss = F.cross_entropy(logits.mean((2, 3))[:, :k], y)
            if cfg.pretrain_loc_weight:
                t = location_targets(bx, y, logits.shape[2], logits.shape[3], k)
                loss = loss + cfg.pretrain_loc_weight * F.cross_entropy(logits, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        lines.update(note=f"loss {loss.item():.3f}")
    lines.done()
    enc.eval()
    with torch.no_grad():
        x = eval_frame(frames[te], cfg.img_size)
        logits = cls(enc(x))
        acc = float((logits.mean((2, 3))[:, :k].argmax(1) == labels[te]).float().mean())
        t = location_targets(boxes[te], labels[te], logits.shape[2], logits.shape[3], k)
        loc_acc = float((logits.argmax(1) == t).float().mean())
    return enc.state_dict(), {"held_out_accuracy": round(acc, 4), "held_out_location_accuracy": round(loc_acc, 4),
                              "n_classes": k, "n_train": len(tr), "n_held_out": len(te)}


def pretrain_audio(cfg: SSPLConfig, progress: bool = True) -> tuple[dict, dict]:
    d = load_split(resolve(cfg.data_root) / "labeled_sounds.h5", ["spects", "label"])
    spects, labels = torch.from_numpy(d["spects"]), torch.from_numpy(d["label"].astype(np.int64))
    k = int(d["attrs"].get("n_classes", int(labels.max()) + 1))
    tr, te = _split(len(labels), cfg.seed + 1)
    torch.manual_seed(cfg.seed + 1)
    enc = SmallAudioEncoder(width=cfg.encoder_width)
    head = nn.Linear(enc.dim, k)
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=cfg.pretrain_lr)
    epochs = max(1, cfg.pretrain_epochs // 2)  # audio is easier and its batches are cheaper
    steps = epochs * (len(tr) // cfg.pretrain_batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.pretrain_lr, total_steps=max(steps, 1), pct_start=0.15)

    def embed(x):  # (B, N, 96, 64) -> (B, 128), averaged like AudioEncoder
        return rearrange(enc(rearrange(x, "b n t m -> (b n) 1 t m")), "(b n) d -> b n d", b=x.shape[0]).mean(1)

    lines = ProgressLines("pretrain", "audio encoder", epochs, unit="epochs", every=0, enabled=progress)
    loss = torch.tensor(float("nan"))
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + epoch)
        perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)]
        for s in range(0, len(perm) - cfg.pretrain_batch_size + 1, cfg.pretrain_batch_size):
            idx = perm[s:s + cfg.pretrain_batch_size]
            loss = F.cross_entropy(head(embed(spects[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        lines.update(note=f"loss {loss.item():.3f}")
    lines.done()
    enc.eval()
    with torch.no_grad():
        acc = float((head(embed(spects[te])).argmax(1) == labels[te]).float().mean())
    return enc.state_dict(), {"held_out_accuracy": round(acc, 4), "n_classes": k, "n_train": len(tr)}


@torch.inference_mode()
def fit_visual_pca(cfg: SSPLConfig, visual_state: dict | None = None) -> tuple[dict, dict]:
    """The visual PCA (`pca.FixedPCA` state) of `visual_pca_dim`, fit on PCA_LOCATIONS random locations of the
    encoder's maps of PCA_FRAMES evenly spaced train frames at the eval transform: deterministic."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # a random encoder as the run builds it (SSPL builds the visual encoder first)
        enc = build_visual(cfg.visual_encoder, dim=cfg.visual_dim, width=cfg.encoder_width, weights=cfg.vgg16_weights,
                           pretrained=cfg.pretrained, features=cfg.visual_features)
    if visual_state is not None:
        enc.load_state_dict(visual_state)
    enc.eval()
    g, samples = torch.Generator().manual_seed(0), []
    with open_h5(resolve(cfg.data_root) / f"{cfg.train_split}.h5") as f:
        n = int(f["frames"].shape[0])
        rows = np.unique(np.linspace(0, n - 1, min(n, PCA_FRAMES)).round().astype(np.int64))
        for s in range(0, len(rows), 32):
            v = rearrange(enc(eval_frame(torch.from_numpy(f["frames"][rows[s:s + 32]]), cfg.img_size)),
                          "b c h w -> b (h w) c")
            pick = torch.randint(0, v.shape[1], (len(v), PCA_LOCATIONS), generator=g)
            samples.append(rearrange(v.gather(1, pick[..., None].expand(-1, -1, v.shape[2])), "b k c -> (b k) c"))
    x = torch.cat(samples)
    mean, basis = fit_pca(x, cfg.visual_pca_dim)
    explained = float(((x - mean) @ basis).var(0).sum() / (x - mean).var(0).sum())
    return {"mean": mean, "basis": basis}, {"samples": len(x), "explained_variance": round(explained, 4)}


def pretrain(cfg: SSPLConfig, out_dir, *, force: bool = False, progress: bool = True) -> Path:
    """Fit (or reuse) what the encoders need: the small encoders' label pretraining, the visual PCA; returns
    <out_dir>/encoders.pt."""
    path = resolve(out_dir) / "encoders.pt"
    meta = cache_meta(cfg)
    if path.is_file() and not force:
        old = runs.load_state(path, advice="delete it to pretrain again")["meta"]
        if {k: old.get(k) for k in meta} == meta:
            if progress:
                print(f"[pretrain] {shown(path)}: reused (prepared from the same data and settings)", flush=True)
            return path
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    state, result = {}, {}
    if needs_labels(cfg):
        if progress:
            print(f"[pretrain] label pretraining of the small encoders into {shown(path)}: visual "
                  f"{count(cfg.pretrain_epochs, 'epoch')}, audio {count(max(1, cfg.pretrain_epochs // 2), 'epoch')}",
                  flush=True)
        t0 = time.perf_counter()
        state["visual"], result["visual"] = pretrain_visual(cfg, progress)
        t1 = time.perf_counter()
        state["audio"], result["audio"] = pretrain_audio(cfg, progress)
        meta |= {"visual_result": result["visual"], "audio_result": result["audio"],
                 "seconds": {"visual": round(t1 - t0, 1), "audio": round(time.perf_counter() - t1, 1)}}
        if progress:
            print(f"[pretrain] held-out accuracy: visual {result['visual']['held_out_accuracy']:.3f}, audio "
                  f"{result['audio']['held_out_accuracy']:.3f}", flush=True)
    if cfg.visual_pca_dim:
        t0 = time.perf_counter()
        small = state.get("visual") if cfg.visual_encoder == "small" else None
        state["visual_pca"], pca = fit_visual_pca(cfg, small)
        meta["pca_result"] = {**pca, "seconds": round(time.perf_counter() - t0, 1)}
        if progress:
            print(f"[pretrain] visual PCA to {cfg.visual_pca_dim} channels: {json.dumps(meta['pca_result'])}",
                  flush=True)
    atomic_save({**state, "meta": meta}, path)
    return path


def find_encoders(cfg: SSPLConfig, folders) -> Path | None:
    """An encoders.pt pretrained on the same labeled data with the same settings: in each folder, then below it."""
    want = cache_meta(cfg)
    for folder in map(resolve, folders):
        for cand in [folder / "encoders.pt", *(sorted(folder.rglob("encoders.pt")) if folder.is_dir() else [])]:
            try:
                meta = load_meta(cand)
            except Exception:  # noqa: BLE001 - a missing or unreadable candidate: skip it
                continue
            if {k: meta.get(k) for k in want} == want:
                return cand
    return None


def reuse_encoders(cfg: SSPLConfig, run_dir: Path, folders=()) -> SSPLConfig:
    """The encoders of a run that needs them: an existing run's own, else matching ones in `run_dir`, `folders`
    or runs/ (no pretraining again); else `cfg` as it is (the run pretrains)."""
    stored = SSPLConfig.load(run_dir / "config.json").encoders_checkpoint if (run_dir / "config.json").is_file() \
        else None
    if stored:
        return cfg.replace(encoders_checkpoint=stored)
    found = find_encoders(cfg, [run_dir, *folders, RUNS_DIR])
    if found is None:
        return cfg
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[train] label-pretrained small encoders: {shown(found)} (same labeled data and settings)", flush=True)
    return cfg.replace(encoders_checkpoint=str(found))


def load_meta(path) -> dict:
    return runs.load_state(resolve(path))["meta"]


def encoder_facts(path) -> list[str]:
    """What encoders.pt holds, as facts that hold on any CPU: the label pretraining reached its accuracy, the visual
    PCA's size."""
    meta, lines = load_meta(path), []
    if "visual_result" in meta:
        acc = {k: meta[f"{k}_result"]["held_out_accuracy"] for k in ("visual", "audio")}
        lines.append(f"label pretraining: both held-out accuracies >= 0.8: {min(acc.values()) >= 0.8}")
    if "pca_result" in meta:
        lines.append(f"visual PCA: {meta['pca']['config']['visual_pca_dim']} channels of the "
                     f"{meta['pca']['config']['visual_encoder']} map, fit on {meta['pca_result']['samples']} locations")
    return lines

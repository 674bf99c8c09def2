"""Training SSPL: `fit(cfg, run_dir)` with resume, model selection on the validation split and DDP.

Run folder: config.json, history.json/.csv, checkpoints/{last,best}.pt (atomic), figures/.
Each epoch's data order and augmentation derive from (seed, epoch, step) only, so a resumed run
repeats the uninterrupted one, and N processes with a global batch B see the same samples and views
as one process with batch B (each rank takes its slice of every global batch).

CLI (works under torchrun): python -m sspl_lib.train --profile quick --run-dir runs/x [--epochs N] [--resume]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as D
from . import perf
from .config import SSPLConfig, load_profile
from .data.transforms import AugmentConfig, eval_frame
from .contrastive import objective_loss
from .model import SSPL, build_model
from .paths import resolve
from .results import load_run as load_trained  # noqa: F401 (the one loader of run folders, kept under this name)
from .train_data import (IN_MEMORY_BYTES, EvalSet, TrainStream, _gen, _keys,  # noqa: F401 (re-exported)
                         gt_maps, split_path, train_views)


# ----------------------------------------------------------------------------- validation
def autocast(cfg: SSPLConfig, device: torch.device):
    """bf16 autocast as `cfg.amp` asks (auto: on CUDA only); see sspl_lib.perf."""
    return perf.autocast(device, cfg.amp)


@torch.no_grad()
def evaluate(model: SSPL, data: EvalSet, cfg: SSPLConfig, device, *, shuffle_audio: bool = False,
             batch_size: int = 100) -> dict:
    """Val loss (fixed views), per-sample cIoU (fixed protocol, 224 px gt) and summary on `data`.
    `shuffle_audio`: heatmaps with the audio of the next sample of the batch (the audio control)."""
    from .metrics import ciou_batch, summarize

    was = model.training
    model.eval()
    aug = AugmentConfig(img_size=cfg.img_size)
    g = _gen(cfg.seed, -1, 11)
    losses, cious = [], []
    for s in range(0, data.n, batch_size):
        fr, sp = data.frames[s:s + batch_size], data.spects[s:s + batch_size].to(device)
        with autocast(cfg, device):
            v1, v2 = train_views(fr, aug, g, views=2, batch=len(fr), offset=0, device=device)
            if len(fr) > 1:
                losses.append(float(model(v1, v2, sp)["loss"]) * len(fr))
            if shuffle_audio:
                sp = sp.roll(1, dims=0)
            hm = model.heatmap(eval_frame(fr.to(device), cfg.img_size), sp).float()
        if data.boxes is not None:
            cious.append(ciou_batch(hm, gt_maps(data.boxes[s:s + batch_size]).to(device)).cpu())
    model.train(was)
    out = {"loss": sum(losses) / max(data.n, 1)}
    if cious:
        c = torch.cat(cious)
        out.update(summarize(c), cious=c.numpy())
    return out


# ----------------------------------------------------------------------------- optimisation
def make_optimizer(model: SSPL, cfg: SSPLConfig) -> torch.optim.AdamW:
    """The official AdamW groups: audio MLP (lr_sound), PCM convs+BNs (lr_pcm), PCM rates (lr_pcm, no decay),
    SimSiam head (lr_head); a trainable visual encoder (fine-tune / scratch) joins at lr_pcm."""
    groups = [{"params": list(model.audio.mlp.parameters()), "lr": cfg.lr_sound}]
    if model.pcm is not None:
        rates = {id(p) for p in model.pcm.rate_parameters()}
        groups.append({"params": [p for p in model.pcm.parameters() if id(p) not in rates], "lr": cfg.lr_pcm})
        groups.append({"params": model.pcm.rate_parameters(), "lr": cfg.lr_pcm, "weight_decay": 0.0})
    groups.append({"params": list(model.head.parameters()), "lr": cfg.lr_head})
    if model.visual_trainable:
        groups.append({"params": list(model.visual.parameters()), "lr": cfg.lr_pcm})
    return torch.optim.AdamW(groups, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: SSPLConfig, steps_per_epoch: int):
    """Linear warmup over `warmup_epochs`, then constant (official) or cosine to 0."""
    warm, total = int(cfg.warmup_epochs * steps_per_epoch), max(1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1 + np.cos(np.pi * min(1.0, (step - warm) / max(1, total - warm))))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _better(rec: dict, best: dict | None) -> bool:
    return best is None or (rec["val_ciou"], rec["val_auc"]) > (best["val_ciou"], best["val_auc"])


# ----------------------------------------------------------------------------- fit
def _state(model, opt, sched, epoch: int, best: dict | None, history: list, cfg: SSPLConfig) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": ckpt.rng_state(), "epoch": epoch, "best": best, "history": history, "config": cfg.to_dict()}


def _ensure_encoders(cfg: SSPLConfig, run_dir: Path, info: D.DistInfo, progress: bool) -> SSPLConfig:
    """Small encoders without a checkpoint: pretrain them on the labeled splits first (rank 0, cached)."""
    if cfg.encoders_checkpoint or not cfg.pretrained or cfg.from_scratch or "small" not in (
            cfg.visual_encoder, cfg.audio_encoder):
        return cfg
    path = None
    if info.is_main:
        from .pretrain import pretrain

        path = str(pretrain(cfg, run_dir, progress=progress))
    D.barrier(info)
    return cfg.replace(encoders_checkpoint=D.broadcast_object(path, info))


def fit(cfg: SSPLConfig, run_dir, *, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train SSPL; returns the history (one dict per epoch). See the module docstring for the run folder."""
    info = D.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = resolve(run_dir)
    if info.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    cfg = _ensure_encoders(cfg, run_dir, info, progress)
    ckpt.seed_everything(cfg.seed)
    dev = info.device
    model = build_model(cfg).to(dev)
    opt_model = model
    if info.distributed:  # global batch statistics in the trained batch norms (the official code converts them)
        model.pcm = D.convert_sync_batchnorm(model.pcm, dev) if model.pcm is not None else None
        model.head = D.convert_sync_batchnorm(model.head, dev)
        model.to(dev)
        opt_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
    if cfg.objective != "simsiam" and info.distributed:
        raise ValueError(f"objective {cfg.objective!r} is implemented for one process only")
    stream = TrainStream(split_path(cfg, cfg.train_split), batch_size=cfg.batch_size, seed=cfg.seed, info=info,
                         workers=cfg.workers)
    val = EvalSet(split_path(cfg, cfg.val_split), cfg.val_samples) if info.is_main else None
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, stream.steps)
    history, best, start = [], None, 0
    last = run_dir / "checkpoints" / "last.pt"
    if resume and last.is_file():
        state = ckpt.load(last, map_location=dev)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        history, best, start = list(state["history"]), state["best"], state["epoch"] + 1
    elif resume and info.is_main:
        print(f"resume: no {last}, starting from scratch")
    if info.is_main:
        cfg.save(run_dir / "config.json")
    aug = AugmentConfig(img_size=cfg.img_size)
    for epoch in range(start, cfg.epochs):
        if cfg.patience and best is not None and epoch - best["epoch"] >= cfg.patience:  # resumed after a stop
            break
        t0 = time.perf_counter()
        model.train()
        total, steps = 0.0, 0
        bar = tqdm(stream(epoch), total=stream.steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (progress and info.is_main))
        for step, (frames, spects) in enumerate(bar):
            g = _gen(cfg.seed, epoch, step)
            with autocast(cfg, dev):
                views = train_views(frames, aug, g, views=cfg.views, batch=cfg.batch_size,
                                    offset=info.rank * stream.local, device=dev)
                v1, v2 = (views * 2)[:2]  # cfg.views == 1 (two streams): the same view twice
                sp = spects.to(dev, non_blocking=True)
                if cfg.objective == "simsiam":
                    loss = opt_model(v1, v2, sp)["loss"]
                else:  # the contrastive baseline (sspl_lib.contrastive), single process
                    loss = objective_loss(model, cfg, v1, v2, sp)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, steps = total + loss.item(), steps + 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        rec = {"epoch": epoch + 1, "train_loss": D.all_reduce_mean(total / max(steps, 1), info)}
        stop = False
        if info.is_main:
            ev = evaluate(model, val, cfg, dev)
            rec.update(val_loss=ev["loss"], val_ciou=ev.get("ciou", float("nan")), val_auc=ev.get("auc", float("nan")),
                       lr=opt.param_groups[0]["lr"], time=round(time.perf_counter() - t0, 2))
            history.append(rec)
            if _better(rec, best):
                best = dict(rec)
            state = _state(model, opt, sched, epoch, best, history, cfg)
            ckpt.atomic_save(state, last)
            if best["epoch"] == epoch + 1:
                ckpt.atomic_save(state, run_dir / "checkpoints" / "best.pt")
            ckpt.write_history(history, run_dir)
            if progress:
                print(f"epoch {epoch + 1}: train {rec['train_loss']:.4f} val {rec['val_loss']:.4f} "
                      f"cIoU {rec['val_ciou']:.3f} AUC {rec['val_auc']:.3f} ({rec['time']:.0f} s)", flush=True)
            stop = bool(cfg.patience) and epoch + 1 - best["epoch"] >= cfg.patience
        history, best = D.broadcast_object((history, best), info)
        if D.broadcast_object(stop, info):
            break
    if info.is_main and history:
        plot_history(history, run_dir / "figures")
    D.barrier(info)
    return history


def plot_history(history: list[dict], out_dir) -> list[Path]:
    """figures/loss.png (train & val loss) and figures/val_ciou.png (val cIoU@0.5 and AUC) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ep = [h["epoch"] for h in history]
    paths = []
    for name, keys, ylabel in (("loss", ("train_loss", "val_loss"), "SimSiam loss"),
                               ("val_ciou", ("val_ciou", "val_auc"), "validation score")):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for k in keys:
            ax.plot(ep, [h[k] for h in history], marker="o", label=k)
        ax.set_xlabel("epoch"), ax.set_ylabel(ylabel), ax.legend(), ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description="Train SSPL (single process or under torchrun).")
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml")
    p.add_argument("--config", help="a config.json instead of a profile (e.g. a run folder's)")
    p.add_argument("--run-dir", required=True, help="run folder (relative: from the repository root)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    a = p.parse_args(argv)
    import yaml

    over = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    over.update({k: v for k, v in (("epochs", a.epochs), ("seed", a.seed)) if v is not None})
    cfg = SSPLConfig.load(resolve(a.config)).replace(**over) if a.config else load_profile(a.profile, **over)
    try:
        return fit(cfg, a.run_dir, resume=a.resume, progress=not a.no_progress)
    finally:
        D.cleanup()


if __name__ == "__main__":
    main()

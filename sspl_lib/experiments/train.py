"""Training SSPL: `fit(cfg, run_dir)` with resume, model selection on the validation split and DDP.

Run folder (sspl_lib.experiments.runs): config.json, history.json/.csv, checkpoints/{last,best}.pt (atomic),
figures/, tb/ (TensorBoard event files). Validation reads the split's ground truth the same way the test
evaluation does (`data.testset`): stored `gt` maps of a packed real split, or the boxes of a generated one.
Each epoch's data order and augmentation derive from (seed, epoch, step) only, so a resumed run
repeats the uninterrupted one, and N processes with a global batch B see the same samples and views
as one process with batch B (each rank takes its slice of every global batch).

CLI (works under torchrun): python -m sspl_lib.experiments.train --profile quick --run-dir runs/x [--set epochs=N] [--resume]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed as D
from .. import perf
from ..config import SSPLConfig, load_profile, parse_overrides
from ..data.stream import TrainStream, check_training_data, seeded_generator, split_path, train_views
from ..data.testset import TestSet, load_test_set
from ..data.transforms import AugmentConfig
from ..metrics import summarize
from ..methods.registry import build_model
from ..model import SSPL
from ..paths import resolve, shown
from . import provenance, runs
from .atomic import atomic_save
from .lock import RunLock
from .progress import plot_history
from .evaluate import compute_heatmaps, score_heatmaps


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: SSPL, data: TestSet, cfg: SSPLConfig, device, *, batch_size: int = 100) -> dict:
    """Val loss (fixed views) and the cIoU@0.5 / AUC of the heatmaps (fixed protocol) against the split's gt."""
    was = model.training
    model.eval()
    aug = AugmentConfig(img_size=cfg.img_size)
    g = seeded_generator(cfg.seed, -1, 11)
    loss = 0.0
    for s in range(0, data.n, batch_size):
        fr = torch.from_numpy(data.frames[s:s + batch_size])
        if len(fr) > 1:
            with perf.autocast(device, cfg.amp):
                v1, v2 = train_views(fr, aug, g, views=2, batch=len(fr), offset=0, device=device)
                sp = torch.from_numpy(data.spects[s:s + batch_size]).to(device)
                loss += float(model(v1, v2, sp)["loss"]) * len(fr)
    hm, _ = compute_heatmaps(model, data, batch_size=batch_size, device=device, amp=cfg.amp)
    cious = score_heatmaps(hm, data, ("fixed",))["cious"]["fixed"]
    model.train(was)
    return {"loss": loss / max(data.n, 1), **summarize(cious), "cious": cious}


# ----------------------------------------------------------------------------- optimisation
def make_optimizer(model: SSPL, cfg: SSPLConfig) -> torch.optim.AdamW:
    """The official AdamW groups: audio MLP (lr_sound), PCM convs+BNs (lr_visual), PCM rates (lr_visual, no
    decay), SimSiam head (lr_head); then the method's own (EZ-VSL's visual projection: lr_visual) and a trainable
    visual encoder (fine-tune / scratch: lr_visual)."""
    groups = [{"params": list(model.audio.mlp.parameters()), "lr": cfg.lr_sound}]
    if model.pcm is not None:
        rates = {id(p) for p in model.pcm.rate_parameters()}
        groups.append({"params": [p for p in model.pcm.parameters() if id(p) not in rates], "lr": cfg.lr_visual})
        groups.append({"params": model.pcm.rate_parameters(), "lr": cfg.lr_visual, "weight_decay": 0.0})
    groups.append({"params": list(model.head.parameters()), "lr": cfg.lr_head})
    groups += model.method.param_groups(model, cfg)
    if model.visual_trainable:
        groups.append({"params": list(model.visual.parameters()), "lr": cfg.lr_visual})
    return torch.optim.AdamW(groups, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: SSPLConfig, steps_per_epoch: int):
    """Linear warmup over `warmup_epochs`, then constant (official) or cosine to 0."""
    warm, total = int(cfg.warmup_epochs * steps_per_epoch), max(1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "cosine":
            # a Python float: a numpy scalar would reach the optimizer state and make checkpoints unreadable
            # with torch.load(weights_only=True)
            return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warm) / max(1, total - warm)))))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ----------------------------------------------------------------------------- fit
def _state(model, opt, sched, epoch: int, best: dict | None, history: list, cfg: SSPLConfig) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": runs.rng_state(), "epoch": epoch, "best": best, "history": history, "config": cfg.to_dict()}


def needs_pretraining(cfg: SSPLConfig) -> bool:
    """The small CPU encoders, pretrained and not given a checkpoint: label pretraining comes first."""
    return (not cfg.encoders_checkpoint and cfg.pretrained and not cfg.from_scratch
            and "small" in (cfg.visual_encoder, cfg.audio_encoder))


def _ensure_encoders(cfg: SSPLConfig, run_dir: Path, info: D.DistInfo, progress: bool) -> SSPLConfig:
    """Small encoders without a checkpoint: pretrain them on the labeled splits first (rank 0, cached)."""
    if not needs_pretraining(cfg):
        return cfg
    path = None
    if info.is_main:
        from .pretrain import pretrain

        path = str(pretrain(cfg, run_dir, progress=progress))
    D.barrier(info)
    return cfg.replace(encoders_checkpoint=D.broadcast_object(path, info))


def _resume_state(run_dir: Path, cfg: SSPLConfig, dev, *, allow_longer: bool) -> dict | None:
    """The last.pt state to resume from (None: start afresh); refuses a stored config that differs in a way
    that changes the run. Sets best.pt and the history right after a run killed between its writes."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    state = runs.load_checkpoint(last, map_location=dev)
    provenance.refuse_changes(run_dir, SSPLConfig.from_dict(state["config"]), cfg, allow_longer=allow_longer)
    said = runs.restore_best(run_dir, state)  # and the history of a run killed before writing it
    if said:
        print(f"resume: {said}", flush=True)
    return state


def fit(cfg: SSPLConfig, run_dir, *, resume: bool = False, allow_longer: bool = False, progress: bool = True,
        on_event=None) -> list[dict]:
    """Train SSPL; returns the history (one dict per epoch). See the module docstring for the run folder.

    resume: continue from `checkpoints/last.pt` (same configuration; `allow_longer` lets `epochs` / `patience`
    grow); another run in the folder is refused (`provenance.RunConflict`), one writer at a time (`lock`).
    on_event: a callable receiving {"kind": "step", "epoch", "step", "steps", "loss"} after each optimizer step
    and {"kind": "epoch", "record", "history"} after each validation (rank 0; e.g. `progress.LivePlot`)."""
    main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(resolve(run_dir)) if main else contextlib.nullcontext():
        return _fit(cfg, run_dir, resume=resume, allow_longer=allow_longer, progress=progress, on_event=on_event)


def _fit(cfg: SSPLConfig, run_dir, *, resume: bool, allow_longer: bool, progress: bool, on_event) -> list[dict]:
    info = D.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = resolve(run_dir)
    if info.is_main:
        known = cfg.replace(encoders_checkpoint=str(run_dir / "encoders.pt")) if needs_pretraining(cfg) else cfg
        provenance.check_run(run_dir, known, resume=resume, allow_longer=allow_longer)  # another run: refused
        runs.remove_temporaries(run_dir)  # left by a killed writer (this process holds the folder's lock)
    check_training_data(cfg)  # the train and val splits, before anything is trained
    cfg = _ensure_encoders(cfg, run_dir, info, progress).portable()
    state = _resume_state(run_dir, cfg, info.device, allow_longer=allow_longer) if resume else None
    runs.seed_everything(cfg.seed)
    dev = info.device
    model = build_model(cfg).to(dev)
    opt_model = model
    if info.distributed:  # global batch statistics in the trained batch norms (the official code converts them)
        model.pcm = D.convert_sync_batchnorm(model.pcm, dev) if model.pcm is not None else None
        model.head = D.convert_sync_batchnorm(model.head, dev)
        model.to(dev)
        opt_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
    if info.distributed and not model.method.distributed:
        raise ValueError(f"method {cfg.method!r} is implemented for one process only")
    stream = TrainStream(split_path(cfg, cfg.train_split), batch_size=cfg.batch_size, seed=cfg.seed, info=info,
                         workers=cfg.workers)
    val = load_test_set(split_path(cfg, cfg.val_split), limit=cfg.val_samples) if info.is_main else None
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, stream.steps)
    history, best, start = [], None, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        runs.set_rng_state(state["rng"])
        history, best, start = list(state["history"]), state["best"], state["epoch"] + 1
        for h in history:
            h.pop("stopped", None)  # a resumed early stop with more patience goes on
    elif resume and info.is_main and (run_dir / "config.json").is_file():  # a run that finished no epoch
        print(f"resume: no {shown(run_dir / 'checkpoints' / 'last.pt')}, starting from scratch")
    if info.is_main:
        provenance.record_run(run_dir, cfg)
    board = _board(run_dir) if info.is_main else None
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
            g = seeded_generator(cfg.seed, epoch, step)
            with perf.autocast(dev, cfg.amp):
                views = train_views(frames, aug, g, views=cfg.streams - 1, batch=cfg.batch_size,
                                    offset=info.rank * stream.local, device=dev)
                v1, v2 = (views * 2)[:2]  # two streams (one view): the same view twice
                loss = opt_model(v1, v2, spects.to(dev, non_blocking=True))["loss"]  # the method's (SSPL.forward)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, steps = total + loss.item(), steps + 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if info.is_main:
                global_step = epoch * stream.steps + step + 1
                if board is not None:
                    board.add_scalar("train/loss_step", loss.item(), global_step)
                if on_event is not None:
                    on_event({"kind": "step", "epoch": epoch + 1, "step": step + 1, "steps": stream.steps,
                              "loss": loss.item()})
        rec = {"epoch": epoch + 1, "train_loss": D.all_reduce_mean(total / max(steps, 1), info)}
        stop = False
        if info.is_main:
            ev = validate(model, val, cfg, dev)
            rec.update(val_loss=ev["loss"], val_ciou=ev["ciou"], val_auc=ev["auc"], lr=opt.param_groups[0]["lr"],
                       time=round(time.perf_counter() - t0, 2))
            if runs.better(rec, best):
                best = dict(rec)
            stop = bool(cfg.patience) and epoch + 1 - best["epoch"] >= cfg.patience
            if stop:
                rec["stopped"] = True  # early stop by patience: the run is complete
            history.append(rec)
            state = _state(model, opt, sched, epoch, best, history, cfg)
            # last.pt, then best.pt, then the history: killed between any two, a resume restores the same files
            atomic_save(state, run_dir / "checkpoints" / "last.pt")
            if best["epoch"] == epoch + 1:
                atomic_save(state, run_dir / "checkpoints" / "best.pt")
            runs.write_history(history, run_dir)
            _log_epoch(board, rec)
            if on_event is not None:
                on_event({"kind": "epoch", "record": rec, "history": list(history)})
            if progress:
                print(f"epoch {epoch + 1}: train {rec['train_loss']:.4f} val {rec['val_loss']:.4f} "
                      f"cIoU {rec['val_ciou']:.3f} AUC {rec['val_auc']:.3f} ({rec['time']:.0f} s)", flush=True)
        history, best = D.broadcast_object((history, best), info)
        if D.broadcast_object(stop, info):
            break
    if board is not None:
        board.close()
    if info.is_main and history:
        plot_history(history, run_dir / "figures")
    D.barrier(info)
    return history


def _board(run_dir: Path):
    """A TensorBoard writer on `<run>/tb` (None when the tensorboard package is missing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def _log_epoch(board, rec: dict) -> None:
    if board is None:
        return
    for key in ("train_loss", "val_loss", "val_ciou", "val_auc", "lr"):
        board.add_scalar(f"epoch/{key}", rec[key], rec["epoch"])
    board.flush()


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description="Train SSPL (single process or under torchrun).")
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml")
    p.add_argument("--config", help="a config.json instead of a profile (e.g. a run folder's)")
    p.add_argument("--run-dir", required=True, help="run folder (relative: from the repository root)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--allow-longer", action="store_true", help="resume with more epochs / patience than stored")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    a = p.parse_args(argv)
    over = parse_overrides(a.set)
    over.update({k: v for k, v in (("epochs", a.epochs), ("seed", a.seed)) if v is not None})
    cfg = SSPLConfig.load(resolve(a.config)).replace(**over) if a.config else load_profile(a.profile, **over)
    try:
        return fit(cfg, a.run_dir, resume=a.resume, allow_longer=a.allow_longer, progress=not a.no_progress)
    finally:
        D.cleanup()


if __name__ == "__main__":
    main()

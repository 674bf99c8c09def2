"""Training one run: `fit` = epochs of `train_one_epoch`, `validate` and `save_checkpoint`, with resume and
DDP (docs/experiments.md). CLI (also under torchrun): python -m sspl_lib.experiments.train --run-dir runs/x"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import distributed as D
from .. import perf
from ..cli import HelpFormat
from ..config import SSPLConfig
from ..data.preflight import MissingFiles, check_profile_files
from ..data.stream import TrainStream, check_training_data, split_path
from ..data.transforms import AugmentConfig, seeded_generator, train_views
from ..data.testset import TestSet, load_test_set
from ..metrics import summarize
from ..methods.registry import build_model
from ..model import SSPL
from ..paths import RUNS_DIR, resolve, shown
from ..profiles import load_profile, override_keys_help, parse_overrides
from . import provenance, runs
from .atomic import atomic_save
from .evaluate import compute_heatmaps, score_heatmaps
from .feature_cache import cached_stream, prepare_training
from .features import SharedFeatures
from .jobs import METHODS, methods_help
from .lock import RunLock
from .pretrain import needs_labels, pretrain, reuse_encoders
from .optim import make_optimizer, make_scheduler
from .progress import TrainingLog


# ----------------------------------------------------------------------------- one epoch, one validation, one checkpoint
def frame_inputs(batch, cfg: SSPLConfig, g: torch.Generator, *, offset: int, device):
    """(uint8 frames, spects) -> the model's inputs: the official train views (two streams: one view twice), the
    spects, and encoded=False."""
    frames, spects = batch
    views = train_views(frames, AugmentConfig(img_size=cfg.img_size), g, views=cfg.streams - 1, batch=cfg.batch_size,
                        offset=offset, device=device)
    v1, v2 = (views * 2)[:2]
    return v1, v2, spects.to(device, non_blocking=True), False


def train_one_epoch(model, batches, opt, sched, cfg: SSPLConfig, *, epoch: int, device, offset: int = 0,
                    on_step=None, inputs=frame_inputs) -> float:
    """One pass over `batches` of this rank: `inputs` makes views from (seed, epoch, step) (frames, or cached
    features: `CachedStream.inputs`), the method's loss, an AdamW step; returns the mean loss."""
    model.train()
    total, steps = 0.0, 0
    for step, batch in enumerate(batches):
        g = seeded_generator(cfg.seed, epoch, step)
        with perf.autocast(device, cfg.amp):
            x1, x2, audio, encoded = inputs(batch, cfg, g, offset=offset, device=device)
            loss = model(x1, x2, audio, encoded=encoded)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total, steps = total + loss.item(), steps + 1
        if on_step is not None:
            on_step(step, loss.item())
    return total / max(steps, 1)


@torch.no_grad()
def validate(model: SSPL, data: TestSet, cfg: SSPLConfig, device, *, batch_size: int = 100,
             shared: SharedFeatures | None = None) -> dict:
    """Val loss (fixed views) and the cIoU@0.5 / AUC of the heatmaps (fixed protocol) against the split's gt;
    `shared`: the split's encoder outputs (a `feature_cache` model: its cached features, views in feature space)."""
    was = model.training
    model.eval()
    aug = AugmentConfig(img_size=cfg.img_size)
    g = seeded_generator(cfg.seed, -1, 11)
    loss = 0.0
    for s in range(0, data.n, batch_size):
        fr = torch.from_numpy(data.frames[s:s + batch_size])
        if len(fr) > 1:
            with perf.autocast(device, cfg.amp):
                if shared is not None and cfg.feature_cache:
                    v1, v2, emb = shared.cached_views(model, np.arange(s, s + len(fr)), g)
                    loss += float(model(v1, v2, emb, encoded=True)["loss"]) * len(fr)
                    continue
                v1, v2 = train_views(fr, aug, g, views=2, batch=len(fr), offset=0, device=device)
                sp = torch.from_numpy(data.spects[s:s + batch_size]).to(device)
                loss += float(model(v1, v2, sp)["loss"]) * len(fr)
    hm, _ = compute_heatmaps(model, data, batch_size=batch_size, device=device, amp=cfg.amp, shared=shared)
    cious = score_heatmaps(hm, data, ("fixed",))["cious"]["fixed"]
    model.train(was)
    return {"loss": loss / max(data.n, 1), **summarize(cious), "cious": cious}


def save_checkpoint(run_dir: Path, state: dict, *, is_best: bool) -> None:
    """last.pt, then best.pt, then the history: killed between any two, a resume restores the same files."""
    atomic_save(state, run_dir / "checkpoints" / "last.pt")
    if is_best:
        atomic_save(state, run_dir / "checkpoints" / "best.pt")
    runs.write_history(state["history"], run_dir)


def _state(model, opt, sched, epoch: int, best: dict | None, history: list, cfg: SSPLConfig) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": runs.rng_state(), "epoch": epoch, "best": best, "history": history, "config": cfg.to_dict()}


# ----------------------------------------------------------------------------- the run
def needs_pretraining(cfg: SSPLConfig) -> bool:
    """No encoders checkpoint, while the small CPU encoders need label pretraining or the visual map a PCA: both
    are fit first (`pretrain`, encoders.pt)."""
    return not cfg.encoders_checkpoint and (needs_labels(cfg) or cfg.visual_pca_dim > 0)


def _open_run(cfg: SSPLConfig, run_dir: Path, info: D.DistInfo, *, resume: bool, allow_longer: bool,
              progress: bool) -> SSPLConfig:
    """Another run refused, a killed writer's leftovers removed, the data checked, encoders pretrained, the
    features cached (`feature_cache`: built here if no study built them first)."""
    if info.is_main:
        known = cfg.replace(encoders_checkpoint=str(run_dir / "encoders.pt")) if needs_pretraining(cfg) else cfg
        provenance.check_run(run_dir, known, resume=resume, allow_longer=allow_longer)
        runs.remove_temporaries(run_dir)  # this process holds the folder's lock: no live writer owns one
    check_training_data(cfg)
    if needs_pretraining(cfg):
        path = None
        if info.is_main:
            path = str(pretrain(cfg, run_dir, progress=progress))
        D.barrier(info)
        cfg = cfg.replace(encoders_checkpoint=D.broadcast_object(path, info))
    if cfg.feature_cache:
        if info.is_main:
            prepare_training(cfg, progress=progress)
        D.barrier(info)
    return cfg.portable()


def _resume_state(run_dir: Path, cfg: SSPLConfig, info: D.DistInfo, *, allow_longer: bool) -> dict | None:
    """The last.pt state to resume from (None: afresh), refusing a config that changes the run."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        if info.is_main and (run_dir / "config.json").is_file():  # a run that finished no epoch
            print(f"resume: no {shown(last)}, starting from scratch")
        return None
    state = runs.load_checkpoint(last, map_location=info.device)
    provenance.refuse_changes(run_dir, SSPLConfig.from_dict(state["config"]), cfg, allow_longer=allow_longer)
    said = runs.restore_best(run_dir, state)
    if said:
        print(f"resume: {said}", flush=True)
    return state


def _restore(state: dict, model, opt, sched) -> tuple[list[dict], dict | None, int]:
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    runs.set_rng_state(state["rng"])
    history = list(state["history"])
    for h in history:
        h.pop("stopped", None)  # a resumed early stop with more patience goes on
    return history, state["best"], state["epoch"] + 1


def _distribute(model: SSPL, cfg: SSPLConfig, info: D.DistInfo, dev):
    if not info.distributed:
        return model
    if not model.method.distributed:
        raise ValueError(f"method {cfg.method!r} is implemented for one process only")
    model.pcm = D.convert_sync_batchnorm(model.pcm, dev) if model.pcm is not None else None
    model.head = D.convert_sync_batchnorm(model.head, dev)
    model.to(dev)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)


def fit(cfg: SSPLConfig, run_dir, *, resume: bool = False, allow_longer: bool = False, progress: bool = True,
        on_event=None) -> list[dict]:
    """Train into `run_dir`; returns the history. resume: from last.pt (`allow_longer`: more epochs / patience);
    on_event: the step and epoch events (docs/experiments.md)."""
    main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(resolve(run_dir)) if main else contextlib.nullcontext():
        return _fit(cfg, resolve(run_dir), resume=resume, allow_longer=allow_longer, progress=progress,
                    on_event=on_event)


def _fit(cfg: SSPLConfig, run_dir: Path, *, resume: bool, allow_longer: bool, progress: bool, on_event) -> list[dict]:
    info = D.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = info.device
    cfg = _open_run(cfg, run_dir, info, resume=resume, allow_longer=allow_longer, progress=progress)
    state = _resume_state(run_dir, cfg, info, allow_longer=allow_longer) if resume else None
    runs.seed_everything(cfg.seed)
    model = build_model(cfg).to(dev)
    trained = _distribute(model, cfg, info, dev)
    stream = cached_stream(model, cfg, info) if cfg.feature_cache else TrainStream(
        split_path(cfg, cfg.train_split), batch_size=cfg.batch_size, seed=cfg.seed, info=info, workers=cfg.workers)
    val = load_test_set(split_path(cfg, cfg.val_split), limit=cfg.val_samples) if info.is_main else None
    shared = SharedFeatures(val, batch_size=100, device=dev, amp=cfg.amp) if info.is_main and cfg.feature_cache \
        else None
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, stream.steps)
    history, best, start = _restore(state, model, opt, sched) if state is not None else ([], None, 0)
    if info.is_main:
        provenance.record_run(run_dir, cfg)
    log = TrainingLog(run_dir, cfg.epochs, stream.steps, on_event=on_event, progress=progress, main=info.is_main)
    for epoch in range(start, cfg.epochs):
        if cfg.patience and best is not None and epoch - best["epoch"] >= cfg.patience:  # resumed after a stop
            break
        t0 = time.perf_counter()
        loss = train_one_epoch(trained, log.batches(stream(epoch), epoch), opt, sched, cfg, epoch=epoch, device=dev,
                               offset=info.rank * stream.local, on_step=lambda step, x: log.step(epoch, step, x),
                               inputs=stream.inputs if cfg.feature_cache else frame_inputs)
        rec = {"epoch": epoch + 1, "train_loss": D.all_reduce_mean(loss, info)}
        stop = False
        if info.is_main:
            ev = validate(model, val, cfg, dev, shared=shared)
            rec.update(val_loss=ev["loss"], val_ciou=ev["ciou"], val_auc=ev["auc"], lr=opt.param_groups[0]["lr"],
                       time=round(time.perf_counter() - t0, 2))
            best = dict(rec) if runs.better(rec, best) else best
            stop = bool(cfg.patience) and epoch + 1 - best["epoch"] >= cfg.patience
            if stop:
                rec["stopped"] = True  # early stop by patience: the run is complete
            history.append(rec)
            save_checkpoint(run_dir, _state(model, opt, sched, epoch, best, history, cfg),
                            is_best=best["epoch"] == epoch + 1)
            log.epoch(rec, history)
        history, best = D.broadcast_object((history, best), info)
        if D.broadcast_object(stop, info):
            break
    log.close(history)
    D.barrier(info)
    return history


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sspl_lib.experiments.train", formatter_class=HelpFormat,
        description="Train one run into --run-dir (one process, or one per GPU under torchrun): epochs of training, "
                    "validation on the val split and checkpoints (last.pt, best.pt), a line per epoch with its ETA.",
        epilog=f"{methods_help()}\n\n{override_keys_help()}")
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml (not read with --config)")
    p.add_argument("--config", help="a config.json instead of a profile (e.g. a run folder's)")
    p.add_argument("--run-dir", required=True,
                   help="run folder (relative: from the repository root); a new run reuses label-pretrained small "
                        "encoders of the same data and settings found under runs/ (e.g. runs/<profile>/encoders.pt)")
    p.add_argument("--method", choices=[m for m, v in METHODS.items() if not v.train_as],
                   help="a method of the comparison (its fields listed below)")
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--seed", type=int, help="override the profile's seed")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last.pt (same configuration)")
    p.add_argument("--allow-longer", action="store_true", help="resume with more epochs / patience than stored")
    p.add_argument("--no-progress", action="store_true", help="no step progress and no epoch lines")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, the value read as YAML (the keys are listed below)")
    return p


def main(argv=None) -> list[dict]:
    p = parser()
    a = p.parse_args(argv)
    over = {**(METHODS[a.method].overrides if a.method else {}), **parse_overrides(a.set)}
    over.update({k: v for k, v in (("epochs", a.epochs), ("seed", a.seed)) if v is not None})
    cfg = SSPLConfig.load(resolve(a.config)).replace(**over) if a.config else load_profile(a.profile, **over)
    try:
        check_profile_files(cfg, "train", f"profile {a.profile!r}" if not a.config else shown(a.config))
    except MissingFiles as e:
        p.exit(2, f"{e}\nNothing was trained.\n")
    if needs_pretraining(cfg):  # a new run reuses matching encoders, an existing one its own
        cfg = reuse_encoders(cfg, resolve(a.run_dir), [RUNS_DIR / a.profile] if not a.config else [])
    try:
        return fit(cfg, a.run_dir, resume=a.resume, allow_longer=a.allow_longer, progress=not a.no_progress)
    finally:
        D.cleanup()


if __name__ == "__main__":
    main()

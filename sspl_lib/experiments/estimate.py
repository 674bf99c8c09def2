"""How long training jobs will take, said before they start: seconds per epoch from the histories of earlier
runs with the same speed-relevant settings, else from a timed training step on the first training batch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..config import SSPLConfig
from ..data.h5 import open_h5
from ..data.stream import CachedStream, split_path
from ..data.transforms import eval_frame
from ..distributed import DistInfo, choose_device
from ..methods.registry import build_model
from ..paths import resolve
from ..progress_lines import count, duration
from .runs import read_history
from .optim import make_optimizer, make_scheduler
from .train import train_one_epoch

# what sets a run's seconds per epoch (threads and device too; seeds and learning rates do not)
SPEED_KEYS = ("method", "use_pcm", "pcm_cycles", "streams", "visual_encoder", "audio_encoder", "visual_features",
              "img_size", "visual_dim", "out_dim", "batch_size", "val_samples", "fine_tune", "from_scratch",
              "threads", "device", "amp")


def speed_key(cfg: SSPLConfig) -> tuple:
    return (*(getattr(cfg, k) for k in SPEED_KEYS), str(resolve(cfg.data_root)))


def known_epoch_seconds(folders) -> dict[tuple, float]:
    """{speed key: mean seconds per epoch} of the runs found under `folders` (their config.json and history)."""
    times: dict[tuple, list[float]] = {}
    seen = set()
    for folder in folders:
        for hist in sorted(resolve(folder).rglob("history.json")) if resolve(folder).is_dir() else []:
            if hist.parent in seen or not (hist.parent / "config.json").is_file():
                continue
            seen.add(hist.parent)
            try:
                key = speed_key(SSPLConfig.load(hist.parent / "config.json"))
                times.setdefault(key, []).extend(float(h["time"]) for h in read_history(hist.parent))
            except Exception:  # noqa: BLE001 - a run of another version or a broken file tells nothing here
                continue
    return {k: sum(v) / len(v) for k, v in times.items() if v}


def timed_epoch_seconds(cfg: SSPLConfig) -> float:
    """One timed training step (after a warm-up one) on the first training batch, times the steps per epoch,
    plus validation (about half a step's cost per batch of validation clips); NaN when it cannot be timed."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cfg.threads or threads)
        dev = choose_device(cfg.device)
        with open_h5(split_path(cfg, cfg.train_split)) as f:
            n = int(f["frames"].shape[0])
            batch = (torch.from_numpy(f["frames"][:cfg.batch_size]), torch.from_numpy(f["spects"][:cfg.batch_size]))
        with open_h5(split_path(cfg, cfg.val_split)) as f:
            n_val = min(int(f["frames"].shape[0]), cfg.val_samples or int(f["frames"].shape[0]))
        model = build_model(cfg.replace(pretrained=False, vgg16_weights=None, vggish_weights=None)).to(dev)
        opt = make_optimizer(model, cfg)
        stamps: list[float] = []
        inputs = {}
        if cfg.feature_cache:  # the steps run on cached features: time them on this batch's encoded maps
            px = round(cfg.cache_scale * cfg.img_size)
            maps = model.encode_frames(eval_frame(batch[0], px).to(dev))[0]
            with torch.no_grad():
                batch = (maps, model.embed_audio(batch[1].to(dev)))
            stream = CachedStream(*batch[:1], torch.arange(len(maps)), batch[1], grid=round(maps.shape[-1] / cfg.cache_scale),
                                  batch_size=len(maps), seed=cfg.seed, info=DistInfo(device=dev))
            inputs = {"inputs": stream.inputs}
        train_one_epoch(model, [batch, batch], opt, make_scheduler(opt, cfg, 2), cfg, epoch=0, device=dev,
                        on_step=lambda step, loss: stamps.append(time.perf_counter()), **inputs)
        step = stamps[1] - stamps[0]
        return step * (n // cfg.batch_size) + 0.5 * step * n_val / cfg.batch_size
    except Exception:  # noqa: BLE001 - no estimate is no reason to stop a study
        return float("nan")
    finally:
        torch.set_num_threads(threads)


def plan_line(jobs, workers: int) -> str:
    """The jobs to train (methods x seeds, epochs, processes) and how long they should take."""
    root = Path(os.path.commonpath([str(j.run_dir) for j in jobs]))
    known = known_epoch_seconds([root])
    per_epoch, how = {}, set()
    for job in jobs:
        key = speed_key(job.cfg)
        if key not in per_epoch:
            per_epoch[key] = known.get(key, float("nan"))
            how.add("earlier runs' histories" if key in known else "a timed training step")
            if key not in known:
                per_epoch[key] = timed_epoch_seconds(job.cfg)
    seconds = [per_epoch[speed_key(j.cfg)] * j.cfg.epochs for j in jobs]
    parallel = max(1, min(workers, len(jobs)))
    total = max(sum(seconds) / parallel, max(seconds)) if all(x == x for x in seconds) else float("nan")
    names = list(dict.fromkeys(j.name for j in jobs))
    seeds = list(dict.fromkeys(j.seed for j in jobs))
    epochs = sorted({j.cfg.epochs for j in jobs})
    threads = count(jobs[0].cfg.threads, "thread") if jobs[0].cfg.threads else "torch's default threads"
    return (f"plan: {count(len(jobs), 'run')} to train ({count(len(names), 'method')} x {count(len(seeds), 'seed')}: "
            f"{', '.join(names)}; seed {', '.join(map(str, seeds))}), {'/'.join(map(str, epochs))} epochs each, "
            f"{parallel} at a time with {threads} each: about {duration(total)} (seconds per epoch from "
            f"{' and '.join(sorted(how))})")

"""Throughput of sspl, optionally side by side with the official SSPL code (interleaved A,B,A,B; medians).

    python -m benchmarks.throughput --config paper --batch 8 --steps 3 [--amp bf16] [--official-src /tmp/official_src]

One line each: train samples/s (both views, audio, PCM, head, loss, backward, AdamW step with the official
param groups), eval samples/s (heatmaps + cIoU), metric samples/s (cIoU + AUC from heatmaps), data-loading
items/s from a packed HDF5 file (a temporary one of random content unless --data is given), peak memory.
`paper` = VGG16 + VGGish + PCM (4 cycles) at 224 px, random weights; `quick` = params/quick.yaml.
With --official-src (the official repository, or its sspl_w_pcm folder) the same measurements run on the
official code with the same weights and inputs, and the losses / heatmaps of the two are compared.
The official code is only imported from that path at run time (its `.cuda()` calls become no-ops on CPU,
torchvision's `pretrained=` is shimmed to random weights, cv2/pandas are stubbed when not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.official_side import Official, write_official_files
from sspl_lib import perf
from sspl_lib.config import SSPLConfig
from sspl_lib.profiles import load_profile
from sspl_lib.metrics import ciou_batch, summarize
from sspl_lib.methods.registry import build_model
from sspl_lib.paths import PARAMS_DIR


def make_config(name: str) -> SSPLConfig:
    if name == "paper":
        return SSPLConfig(visual_encoder="vgg16", audio_encoder="vggish", img_size=224, visual_dim=512, out_dim=512,
                          audio_hidden=512, pcm_cycles=4, proj_dim=2048, pred_hidden=512, pretrained=False)
    cfg = load_profile("quick") if (PARAMS_DIR / "quick.yaml").is_file() else SSPLConfig()
    return cfg.replace(pretrained=False, encoders_checkpoint=None)


def timed(fn, dev) -> tuple[float, object]:
    perf.synchronize(dev)
    t = time.perf_counter()
    out = fn()
    perf.synchronize(dev)
    return time.perf_counter() - t, out


def interleave(fns: dict, reps: int, dev, warmup: int = 1) -> dict:
    """{name: fn} -> {name: (median seconds, [outputs])}, run A,B,A,B,... after `warmup` rounds; the outputs
    start with those of the warm-up rounds."""
    times, outs = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(warmup):
        for k, fn in fns.items():
            outs[k].append(fn())
    for _ in range(reps):
        for k, fn in fns.items():
            dt, o = timed(fn, dev)
            times[k].append(dt)
            outs[k].append(o)
    return {k: (statistics.median(times[k]), outs[k]) for k in fns}


# ----------------------------------------------------------------------------- data files
def write_packed(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """A packed file in the contract's format with random uint8 frames, audio and spects."""
    from sspl_lib.data.h5 import H5Writer

    rng = np.random.default_rng(seed)
    with H5Writer(path, attrs={"frame_size": size, "sample_rate": 16000, "source": "synthetic"}) as w:
        for s in range(0, n, 32):
            k = min(32, n - s)
            w.append({"frames": rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8),
                      "audio": rng.uniform(-1, 1, (k, 48000)).astype(np.float32),
                      "spects": rng.normal(size=(k, 3, 96, 64)).astype(np.float32),
                      "ids": [f"s{s + i:06d}" for i in range(k)]})
    return path


def data_rates(path: Path, off: Official | None, tmp: Path, cfg: SSPLConfig, args, dev) -> dict:
    from sspl_lib.data.h5 import AVDataset
    from sspl_lib.data.transforms import AugmentConfig, seeded_generator, train_views

    ds = AVDataset(path, img_size=cfg.img_size, train=True)
    raw = AVDataset(path, img_size=cfg.img_size, train=True, raw_frames=True)
    n, k = len(ds), args.data_items
    idx = np.random.default_rng(1).integers(0, n, (args.steps + 1) * k)
    it = itertools.count()
    aug = AugmentConfig(img_size=cfg.img_size)

    def ours_items():
        for _ in range(k):
            ds[int(idx[next(it) % len(idx)])]

    def ours_batched():  # what fit() does: uint8 items, views made for the whole batch at once
        items = [raw[int(i)] for i in idx[:k]]
        frames = torch.stack([x["frame_uint8"] for x in items])
        train_views(frames, aug, seeded_generator(0, 0, 0), views=2, batch=k, offset=0, device=dev)
        torch.stack([x["spect"] for x in items]).to(dev)

    fns = {"ours": ours_items, "ours_batched": ours_batched}
    if off is not None:
        oargs = types.SimpleNamespace(seed=0, imgSize=cfg.img_size, audRate=16000, audSec=3, trainset="flickr",
                                      testset="flickr", num_train=10000, data_path=str(write_official_files(
                                          tmp / "official", path)) + "/")
        with contextlib.redirect_stdout(None):
            ods = off.VideoDataset(oargs, mode="train")

        def official_items():
            for _ in range(k):
                ods[int(idx[next(it) % len(idx)])]

        fns["official"] = official_items
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (torch sets 1 thread there), for both sides
    try:
        res = {name: k / t for name, (t, _) in interleave(fns, args.steps, dev).items()}
    finally:
        torch.set_num_threads(threads)
    if args.workers > 0:  # DataLoader with N workers (persistent, pinned on CUDA), items/s
        def loader_rate(dataset):
            dl = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                             pin_memory=dev.type == "cuda", persistent_workers=True, drop_last=True)
            for _ in dl:  # warm-up epoch (starts the workers)
                pass
            t = time.perf_counter()
            m = sum(len(b["spect"]) for b in dl)
            return m / (time.perf_counter() - t)

        res[f"ours_{args.workers}w"] = loader_rate(ds)
        if off is not None:
            res[f"official_{args.workers}w"] = loader_rate(torch.utils.data.Subset(ods, range(n)))  # its len is 10k
    return res


# ----------------------------------------------------------------------------- main
def random_gt(n: int, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    gt = np.zeros((n, size, size), np.float32)
    for i in range(n):
        x0, y0 = rng.integers(0, size // 2, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        gt[i, y0:y0 + h, x0:x0 + w] = 1
    return gt


def fmt(ours: float, off: float | None, unit: str) -> str:
    s = f"ours {ours:10.2f} {unit}"
    if off is not None:
        s += f" | official {off:10.2f} {unit} | speedup {ours / off:6.2f}x"
    return s


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=("paper", "quick"), default="quick")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed repetitions per side (after one warm-up)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (falls back to eager)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the data row (0: one process only)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: leave as is)")
    p.add_argument("--data", help="a packed HDF5 file to read (default: a temporary one of random content)")
    p.add_argument("--data-items", type=int, default=32, help="items per timed data repetition")
    p.add_argument("--metric-maps", type=int, default=4096, help="heatmaps per timed metric repetition")
    p.add_argument("--official-src", help="the official SSPL source (repository root or sspl_w_pcm)")
    p.add_argument("--official-pkgs", help="extra packages the official code imports (cv2, pandas), appended to "
                   "sys.path, e.g. a `pip install --target` folder outside the repository")
    p.add_argument("--only", nargs="*", default=["train", "eval", "metric", "data"],
                   choices=("train", "eval", "metric", "data"))
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.official_pkgs:
        sys.path.append(str(Path(args.official_pkgs).resolve()))  # after our own packages (e.g. its numpy)
    dev = perf.device(args.device)
    cfg = make_config(args.config)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    res: dict = {"config": args.config, "batch": args.batch, "device": str(dev), "amp": args.amp,
                 "channels_last": args.channels_last, "compile": args.compile, "threads": torch.get_num_threads()}
    print(f"# {args.config} config (img {cfg.img_size}, {cfg.visual_encoder}/{cfg.audio_encoder}), batch {args.batch}, "
          f"{dev}, amp {args.amp}, channels_last {args.channels_last}, compile {args.compile}, "
          f"{torch.get_num_threads()} threads; medians of {args.steps} interleaved repetitions", flush=True)

    model = build_model(cfg).to(dev)
    if args.channels_last:
        perf.to_channels_last(model)
    run = perf.maybe_compile(model, args.compile)
    from sspl_lib.experiments.optim import make_optimizer

    opt = make_optimizer(model, cfg)
    B, S = args.batch, cfg.img_size
    f1, f2 = torch.randn(B, 3, S, S, device=dev), torch.randn(B, 3, S, S, device=dev)
    spects = torch.randn(B, 3, 96, 64, device=dev)
    if args.channels_last:
        f1, f2 = perf.channels_last_input(f1), perf.channels_last_input(f2)

    def ours_train():
        model.train()
        with perf.autocast(dev, args.amp):
            loss = run(f1, f2, spects)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    off = None
    if args.official_src and args.config == "paper":
        off = Official(args.official_src, dev)
        off.load_from(model)  # identical weights before any step
        if off.stubbed:
            print(f"# official: stubbed {off.stubbed} (not installed)")
    elif args.official_src:
        print("# official model columns need --config paper (the official model is fixed); metric/data only")
    if "train" in args.only:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        if off is None:
            r = interleave({"ours": ours_train}, args.steps, dev)
        else:
            obatch = off.batch(f1.contiguous(), f2.contiguous(), spects)
            r = interleave({"ours": ours_train, "official": lambda: off.train_step(obatch)}, args.steps, dev)
            d = [abs(a - b) for a, b in zip(r["ours"][1], r["official"][1])]
            res["loss_abs_diff_first_step"], res["loss_abs_diff_later_steps_max"] = d[0], max(d[1:])
            print(f"check    loss |ours - official| at the first step (same weights and inputs): {d[0]:.2e}; "
                  f"max over the next {len(d) - 1} steps (after AdamW updates): {max(d[1:]):.2e}"
                  f"{' (ours bf16 vs official float32)' if args.amp == 'bf16' else ''}")
        res["train"] = {k: B / t for k, (t, _) in r.items()}
        print("train    " + fmt(res["train"]["ours"], res["train"].get("official"), "samples/s"), flush=True)
        res["peak_mem_mib"] = perf.peak_memory_mib(dev)

    gt = torch.from_numpy(random_gt(B, rng)).to(dev)
    if "eval" in args.only:
        fe = f1

        @torch.no_grad()
        def ours_eval():
            model.eval()
            with perf.autocast(dev, args.amp):
                hm = run.heatmap(fe, spects).float() if hasattr(run, "heatmap") else model.heatmap(fe, spects).float()
            summarize(ciou_batch(hm, gt).cpu())
            return hm

        fns = {"ours": ours_eval}
        if off is not None:
            off.load_from(model)  # same weights again (both trained a few steps)
            eb = off.batch(fe.contiguous(), fe.contiguous(), spects)
            gt_np = gt.cpu().numpy()

            def official_eval():
                h = off.heatmaps(eb)
                off.metric(h.cpu().numpy(), gt_np)
                return h

            fns["official"] = official_eval
        r = interleave(fns, args.steps, dev)
        res["eval"] = {k: B / t for k, (t, _) in r.items()}
        print("eval     " + fmt(res["eval"]["ours"], res["eval"].get("official"), "samples/s"), flush=True)
        if off is not None:
            d = float((r["ours"][1][-1] - r["official"][1][-1].float()).abs().max())
            res["heatmap_max_abs_diff_vs_official"] = d
            print(f"check    heatmap |ours - official| max: {d:.2e}"
                  f"{' (ours bf16 vs official float32)' if args.amp == 'bf16' else ''}")
        if args.amp == "bf16":
            with torch.no_grad():
                model.eval()
                h32 = model.heatmap(fe, spects)
                with perf.autocast(dev, "bf16"):
                    h16 = model.heatmap(fe, spects).float()
            res["bf16_heatmap_max_abs_diff"] = float((h16 - h32).abs().max())
            print(f"check    heatmap |bf16 - float32| max: {res['bf16_heatmap_max_abs_diff']:.2e} "
                  f"(cosine similarities in [-1, 1])")

    if "metric" in args.only:
        n = args.metric_maps
        hm = rng.normal(size=(n, 14, 14)).astype(np.float32)
        gts = random_gt(n, rng)
        hm_t, gts_t = torch.from_numpy(hm).to(dev), torch.from_numpy(gts).to(dev)

        def ours_metric():
            c = torch.cat([ciou_batch(hm_t[i:i + 256], gts_t[i:i + 256]) for i in range(0, n, 256)]).cpu()
            summarize(c)
            return c.numpy()

        fns = {"ours": ours_metric}
        if args.official_src:
            moff = off or Official(args.official_src, dev, model=False)
            fns["official"] = lambda: moff.metric(hm, gts)
        r = interleave(fns, args.steps, dev)
        res["metric"] = {k: n / t for k, (t, _) in r.items()}
        print("metric   " + fmt(res["metric"]["ours"], res["metric"].get("official"), "maps/s"), flush=True)
        if "official" in r:
            d = float(np.abs(r["ours"][1][-1] - np.asarray(r["official"][1][-1])).max())
            res["ciou_max_abs_diff_vs_official"] = d
            print(f"check    cIoU |ours - official| max over {n} maps: {d:.2e}")

    if "data" in args.only:
        with tempfile.TemporaryDirectory(prefix="sspl_bench_") as tmp:
            tmp = Path(tmp)
            size = 256 if cfg.img_size == 224 else int(round(cfg.img_size * 256 / 224))
            path = Path(args.data) if args.data else write_packed(tmp / "train.h5", max(64, 2 * args.data_items), size)
            doff = off or (Official(args.official_src, dev, model=False) if args.official_src else None)
            r = data_rates(path, doff, tmp, cfg, args, dev)
        res["data"] = r
        print("data     " + fmt(r["ours"], r.get("official"), "items/s") + "  (1 process, 1 thread, per-item views)")
        print("data     " + fmt(r["ours_batched"], r.get("official"), "items/s") + "  (1 process, 1 thread, batched views as fit)")
        if args.workers:
            w = args.workers
            print("data     " + fmt(r[f"ours_{w}w"], r.get(f"official_{w}w"), "items/s") + f"  ({w} workers)")
    if "peak_mem_mib" in res:
        print(f"memory   peak {'max allocated' if dev.type == 'cuda' else 'RSS of the process'}: "
              f"{res['peak_mem_mib']:.0f} MiB (after the train steps{', both models loaded' if off else ''})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main()

"""Where a training step's time goes: each stream of sspl's step timed on its own (no official code).

    python -m benchmarks.breakdown --config paper --batch 8 [--amp bf16] [--steps 3]

Rows (milliseconds per step, medians): visual encoder on both views (frozen, no autograd), audio encoder
(frozen VGGish + MLP, forward and backward), PCM on both views (forward and backward), attention + SimSiam
head + loss (forward and backward), AdamW step, and the full step as `benchmarks.throughput` times it.
The first rows are floors of the full step: e.g. at the paper config the frozen VGG16 on the two views of
8 samples cannot be skipped or batched further, so it bounds the samples/s any implementation reaches on
this CPU. Also prints which oneDNN kernel class (ISA) the convolutions use.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from benchmarks.throughput import make_config
from sspl_lib import perf
from sspl_lib.methods.registry import build_model
from sspl_lib.model import attention
from sspl_lib.head import simsiam_loss
from sspl_lib.experiments.optim import make_optimizer


def median_ms(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def cpu_isa() -> str:
    """The ISA oneDNN dispatches to on this CPU (e.g. avx512_core_amx, avx512_core_bf16, avx2)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if {"amx_bf16", "amx_tile"} <= flags:
        return "AMX (amx_bf16)"
    if "avx512_bf16" in flags:
        return "AVX512-BF16 without AMX"
    return "no bf16 instructions" if flags else "unknown (no /proc/cpuinfo)"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=("paper", "quick"), default="paper")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = make_config(args.config)
    torch.manual_seed(0)
    model = perf.to_channels_last(build_model(cfg)).train()
    opt = make_optimizer(model, cfg)
    B, S = args.batch, cfg.img_size
    f1, f2 = (perf.channels_last_input(torch.randn(B, 3, S, S)) for _ in range(2))
    spects = torch.randn(B, 3, 96, 64)
    amp = lambda: perf.autocast("cpu", args.amp)  # noqa: E731
    with torch.no_grad(), amp():
        v1, v2 = model.encode_frames(f1, f2)
        e, a = model.encode_audio(spects)
    v, ee, aa = torch.cat([v1, v2]).detach(), torch.cat([e, e]).detach(), torch.cat([a, a]).detach()
    with amp():
        m = model.refine(v, ee, groups=2).detach()

    def visual():
        with torch.no_grad(), amp():
            model.encode_frames(f1, f2)

    def audio():
        with amp():
            e_, a_ = model.encode_audio(spects)
        (e_.float().sum() + a_.float().sum()).backward()

    def pcm():
        with amp():
            out = model.refine(v, ee, groups=2)
        out.float().mean().backward()

    def head():
        mm = m.clone().requires_grad_()
        with amp():
            f, _, _ = attention(mm, aa)
            f1_, f2_ = f.chunk(2)
            p1, p2, z1, z2 = model.head(f1_, f2_)
            loss = simsiam_loss(p1, p2, z1.detach(), z2.detach())
        loss.backward()

    def step():
        with amp():
            loss = model(f1, f2, spects)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = {"visual encoder, both views (frozen, no autograd)": visual,
            "audio encoder (forward + backward)": audio,
            "PCM, both views (forward + backward)": pcm,
            "attention + SimSiam head + loss (forward + backward)": head,
            "AdamW step": lambda: opt.step(),
            "full training step": step}
    print(f"# {args.config} config, batch {B}, amp {args.amp}, {torch.get_num_threads()} threads, "
          f"CPU: {cpu_isa()}; ms per step (median of {args.steps})")
    res = {}
    for name, fn in rows.items():
        opt.zero_grad(set_to_none=True)
        step()  # gradients exist for the AdamW row
        res[name] = median_ms(fn, args.steps)
        print(f"{res[name]:9.1f} ms  {name}", flush=True)
    parts = sum(v for k, v in res.items() if k != "full training step")
    print(f"{parts:9.1f} ms  sum of the parts; full step = {B * 1e3 / res['full training step']:.2f} samples/s")
    return res


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main()

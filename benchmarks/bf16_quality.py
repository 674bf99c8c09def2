"""bf16 autocast vs float32 on the synthetic benchmark: the same trained runs evaluated both ways.

    python -m benchmarks.bf16_quality [--run-dir runs/quick] [--data-root data/synthetic/quick]

For each trained model of the profile folder (sspl, sspl_wo_pcm) and each test split: cIoU@0.5 and AUC
(fixed protocol) in float32 and under bf16 autocast, their differences, the max |heatmap difference| and
the evaluation time. Needs a trained profile (`make reproduce`).
"""

from __future__ import annotations

import argparse
import warnings

import torch

from sspl_lib.data.testset import load_test_set
from sspl_lib.experiments.evaluate import evaluate_model, find_test_splits
from sspl_lib.experiments.runs import load_run
from sspl_lib.paths import resolve


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/quick")
    p.add_argument("--data-root", default="data/synthetic/quick")
    p.add_argument("--models", nargs="*", default=["sspl", "sspl_wo_pcm"])
    p.add_argument("--splits", nargs="*", default=["single", "multi"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = find_test_splits(args.data_root)
    data = {s: load_test_set(files[s]) for s in args.splits}
    out = {}
    print("model        split   n    cIoU f32  cIoU bf16  |d|     AUC f32  AUC bf16  |d|     max|d heatmap|  s f32  s bf16")
    for name in args.models:
        run = resolve(args.run_dir) / name
        if not (run / "checkpoints" / "best.pt").is_file():
            print(f"# {run}: no checkpoint, skipped")
            continue
        model = load_run(run)
        for split, d in data.items():
            r = {amp: evaluate_model(model, None, data=d, protocol=("fixed",), amp=amp) for amp in ("none", "bf16")}
            a, b = r["none"]["summary"]["fixed"], r["bf16"]["summary"]["fixed"]
            hd = (r["none"]["heatmaps"] - r["bf16"]["heatmaps"]).abs().max().item()
            out[f"{name}/{split}"] = {"ciou_f32": a["ciou"], "ciou_bf16": b["ciou"], "auc_f32": a["auc"],
                                      "auc_bf16": b["auc"], "heatmap_max_abs_diff": hd}
            print(f"{name:12s} {split:6s} {d.n:4d}  {a['ciou']:.4f}    {b['ciou']:.4f}     {abs(a['ciou'] - b['ciou']):.4f}  "
                  f"{a['auc']:.4f}   {b['auc']:.4f}    {abs(a['auc'] - b['auc']):.4f}  {hd:.2e}        "
                  f"{r['none']['seconds']:5.1f}  {r['bf16']['seconds']:5.1f}", flush=True)
    return out


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main()

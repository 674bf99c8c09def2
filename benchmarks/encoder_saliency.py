"""The frozen pretrained encoders' saliency alone, and their speed on this machine.

    python -m benchmarks.encoder_saliency --data data/synthetic/real [--split val] [--limit 200] [--json out.json]

For each EfficientNet-Lite0 feature choice (`sspl_lib.efficientnet_lite.FEATURES`, each at the input size
that gives a 14x14 grid; and the head map at 224 px, 7x7) and, for reference, the centre prior: cIoU@0.5 and
AUC (fixed protocol, the project's metrics) of the map's mean |feature| over channels (`baselines.object_prior`,
EZ-VSL's object prior; no audio, no training), the encoder's load time and its images/s at batch 32
(channels_last, as training runs it). Then YAMNet's load time and clips/s on the split's log-mel examples
(batch 32 clips). The split is a packed annotated HDF5 file (`<data>/<split>.h5`, e.g. from
`python -m sspl_lib.data.synthetic --assets DIR --out DIR2`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sspl_lib import perf
from sspl_lib.baselines import center_prior
from sspl_lib.model import object_prior
from sspl_lib.data.testset import load_test_set
from sspl_lib.data.transforms import eval_frame
from sspl_lib.encoders import build_audio_backbone, build_visual
from sspl_lib.experiments.evaluate import score_heatmaps
from sspl_lib.paths import resolve, shown

# (feature choice, input size): the three 14x14 grids, then the head map at its training size (7x7) for reference
OPTIONS = [("head", 448), ("head_dilated", 224), ("stride16", 224), ("head", 224)]


def timed_batches(fn, batches: list) -> tuple[list, float]:
    """Outputs of fn over the batches and the median seconds per batch (after one warm-up call)."""
    fn(batches[0])
    outs, seconds = [], []
    for b in batches:
        t = time.perf_counter()
        outs.append(fn(b))
        seconds.append(time.perf_counter() - t)
    return outs, statistics.median(seconds)


@torch.inference_mode()
def visual_rows(data, batch: int) -> list[dict]:
    rows = []
    for features, size in OPTIONS:
        t = time.perf_counter()
        enc = perf.to_channels_last(build_visual("efficientnet_lite0", features=features))  # as training runs it
        load = time.perf_counter() - t
        frames = [perf.channels_last_input(eval_frame(torch.from_numpy(data.frames[s:s + batch]), size))
                  for s in range(0, data.n, batch)]
        maps, sec = timed_batches(lambda x: object_prior(enc(x)), frames)  # (B, 14, 14) each
        summary = score_heatmaps(torch.cat(maps), data, protocol="fixed")["summary"]["fixed"]
        rows.append({"option": f"{features}@{size}", "input": size, "dim": enc.dim, "grid": tuple(maps[0].shape[1:]),
                     "ciou": summary["ciou"], "auc": summary["auc"], "load_s": load,
                     "images_per_s": frames[0].shape[0] / sec})
    summary = score_heatmaps(center_prior(data.n, 14), data, protocol="fixed")["summary"]["fixed"]
    rows.append({"option": "center_prior", "input": None, "dim": None, "grid": (14, 14), "ciou": summary["ciou"],
                 "auc": summary["auc"], "load_s": None, "images_per_s": None})
    return rows


@torch.inference_mode()
def audio_row(data, batch: int) -> dict:
    t = time.perf_counter()
    net = perf.to_channels_last(build_audio_backbone("yamnet"))
    load = time.perf_counter() - t
    clips = [torch.from_numpy(data.spects[s:s + batch]) for s in range(0, data.n, batch)]  # (B, N, 96, 64)
    examples = [perf.channels_last_input(c.reshape(-1, 1, *c.shape[2:])) for c in clips]  # ((B N), 1, 96, 64)
    _, sec = timed_batches(net, examples)
    return {"encoder": "yamnet", "examples_per_clip": clips[0].shape[1], "load_s": load,
            "clips_per_s": clips[0].shape[0] / sec}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of packed splits (relative: from the repo root)")
    ap.add_argument("--split", default="val", help="split file <data>/<split>.h5 (default: val)")
    ap.add_argument("--limit", type=int, default=0, help="first N sounding samples only (0: all)")
    ap.add_argument("--batch", type=int, default=32, help="images (clips) per forward pass")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    data = load_test_set(resolve(args.data) / f"{args.split}.h5", limit=args.limit)
    print(f"{shown(data.path)}: {data.n} samples, {torch.get_num_threads()} threads")
    rows = visual_rows(data, args.batch)
    print(f"{'option':<18}{'grid':>6}{'dim':>6}{'cIoU@0.5':>10}{'AUC':>7}{'load s':>8}{'images/s':>10}")
    for r in rows:
        speed = f"{r['images_per_s']:10.1f}" if r["images_per_s"] else f"{'-':>10}"
        load = f"{r['load_s']:8.2f}" if r["load_s"] is not None else f"{'-':>8}"
        grid = "x".join(map(str, r["grid"]))
        print(f"{r['option']:<18}{grid:>6}{r['dim'] or '-':>6}{r['ciou']:10.3f}{r['auc']:7.3f}{load}{speed}")
    audio = audio_row(data, args.batch)
    print(f"yamnet: load {audio['load_s']:.2f} s, {audio['clips_per_s']:.1f} clips/s "
          f"({audio['examples_per_clip']} examples of 0.96 s per clip)")
    out = {"split": shown(data.path), "n": data.n, "threads": torch.get_num_threads(), "visual": rows,
           "audio": audio}
    if args.json:
        resolve(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()

"""Which files of sspl_lib a reader walks through to follow one SSPL training step, and one heatmap -> cIoU
computation: every function of sspl_lib that runs, recorded with `sys.setprofile`, grouped by file.

    python -m benchmarks.walk [--profile quick]

The step is one batch through `train_one_epoch` (views, the method's loss, backward, AdamW, the schedule), the
batch already read; the evaluation is `compute_heatmaps` + `score_heatmaps` on a test split already loaded.
Building the model, reading files and logging are not part of either walk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from sspl_lib.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "sspl_lib"


def traced(fn) -> dict[str, list[str]]:
    """Run fn(); returns {file relative to the repository: [functions of it that ran, in first-call order]}."""
    seen: dict[str, list[str]] = defaultdict(list)

    def profile(frame, event, arg):
        if event != "call":
            return
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PACKAGE):
            names = seen[path.relative_to(REPO_ROOT).as_posix()]
            if frame.f_code.co_qualname not in names:
                names.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return dict(seen)


def tiny_data(root: Path, cfg) -> Path:
    """A generated benchmark of the profile's kind, a few samples per split."""
    from sspl_lib.data.synthetic import generate_benchmark

    return generate_benchmark(root / "walk", seed=0, n_train=8, n_val=4, n_test=8, n_labeled=8,
                              frame_size=cfg.frame_size, workers=1, chunk=8, progress=False)


def walks(profile: str = "quick", method: str = "sspl") -> dict[str, dict[str, list[str]]]:
    """{"training step": files, "heatmap -> cIoU": files} for `method` on `profile`'s model (random weights)."""
    from sspl_lib.data.stream import TrainStream
    from sspl_lib.data.testset import load_test_set
    from sspl_lib.distributed import DistInfo
    from sspl_lib.experiments.evaluate import compute_heatmaps, score_heatmaps
    from sspl_lib.experiments.optim import make_optimizer, make_scheduler
    from sspl_lib.experiments.train import train_one_epoch
    from sspl_lib.methods.registry import build_model
    from sspl_lib.profiles import load_profile

    torch.manual_seed(0)
    cfg = load_profile(profile, method=method, pretrained=False, encoders_checkpoint=None, batch_size=4,
                       feature_cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = tiny_data(Path(tmp), cfg)
        stream = TrainStream(root / "train.h5", batch_size=cfg.batch_size, seed=cfg.seed, info=DistInfo())
        batch = next(iter(stream(0)))
        data = load_test_set(root / "test_single.h5")
    model = build_model(cfg)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, stream.steps)
    step = traced(lambda: train_one_epoch(model, [batch], opt, sched, cfg, epoch=0, device="cpu"))
    ciou = traced(lambda: score_heatmaps(compute_heatmaps(model, data, batch_size=8)[0], data, ("fixed",)))
    return {"training step": step, "heatmap -> cIoU": ciou}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.walk", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml (default quick)")
    p.add_argument("--method", default="sspl", help="the trained method (default sspl)")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    for name, files in walks(args.profile, args.method).items():
        print(f"{name}: {len(files)} files")
        for path, funcs in files.items():
            print(f"  {path:40s} {', '.join(funcs)}")


if __name__ == "__main__":
    main()

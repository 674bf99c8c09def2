"""Scoring trained models, their audio controls and the baselines on test splits, each result tagged with
its variant, seed and overrides; encoder outputs shared by the models that share encoders."""

from __future__ import annotations

import time
from dataclasses import replace

from ..progress_lines import ProgressLines, count, duration
from .evaluate import BASELINES, evaluate_baseline, evaluate_model
from .features import SharedFeatures


def score(models: dict, data: dict, *, audio: dict, test_maps: dict | None = None, overrides: dict | None = None,
          baselines=BASELINES, batch_size: int = 100, device="cpu", seed: int = 0, protocol=("fixed", "median"),
          amp: str = "none", share_features: bool = True, progress: bool = True) -> dict:
    """{entry: {split: result}} of each model {name: {seed: model}} under its `audio` modes (`<name>_<mode>_audio`),
    then the `baselines`; a result is its first seed's, with "per_seed"."""
    first_model = next((m for per in models.values() for m in per.values()), None)
    results: dict = {}
    if progress:
        runs = sum(len(per) * len(audio[name]) for name, per in models.items())
        print(f"[evaluate] {count(runs, 'model run')} (runs x audio modes) and {count(len(baselines), 'baseline')} on "
              f"{count(len(data), 'split')}: {', '.join(f'{s} ({d.n})' for s, d in data.items())}", flush=True)
    lines = ProgressLines("evaluate", "splits", len(data), unit="splits", every=0, enabled=progress)
    for s, d in data.items():
        t0 = time.perf_counter()
        shared = SharedFeatures(d, batch_size=batch_size, device=device, amp=amp) if share_features else None
        for name, per_seed in models.items():
            for a in audio[name]:
                key = name if a == "matched" else f"{name}_{a}_audio"
                runs = {}
                for k, m in per_seed.items():
                    method = replace(m.method, **(test_maps or {}).get(name, {}))
                    r = evaluate_model(m, None, data=d, batch_size=batch_size, device=device, protocol=protocol,
                                       audio=a, seed=seed, amp=amp, shared=shared, method=method)
                    runs[k] = {**r, "variant": name, "seed": k, "overrides": dict((overrides or {}).get(name, {}))}
                results.setdefault(key, {})[s] = {**next(iter(runs.values())), "per_seed": runs}
        size = next(iter(results.values()))[s]["heatmaps"].shape[-1] if models else 14  # the models' grid
        for b in baselines:
            if b == "feature_l2norm" and first_model is None:
                continue
            r = evaluate_baseline(b, data=d, size=size, protocol=protocol, seed=seed, model=first_model,
                                  batch_size=batch_size, device=device)
            results.setdefault(b, {})[s] = {**r, "variant": b, "seed": None, "overrides": {}}
        lines.update(note=f"{s}: {d.n} samples, {len(results)} entries scored in {duration(time.perf_counter() - t0)}")
    lines.done()
    first = [m for m in models if m in results] + [b for b in baselines if b in results]
    return {k: results[k] for k in first + [k for k in results if k not in first]}

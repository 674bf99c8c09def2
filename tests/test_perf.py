"""sspl_lib.perf: bf16 autocast tolerance, channels_last equivalence, torch.compile fallback; the benchmark script."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch

from sspl_lib import perf
from sspl_lib.config import SSPLConfig
from sspl_lib.methods.registry import build_model
from sspl_lib.model import SSPL
from sspl_lib.paths import REPO_ROOT

# |bf16 autocast - float32| on heatmaps (cosine similarities in [-1, 1]) in eval mode of random-weight models;
# measured ~1.4e-3 on the small and the paper model, up to 2.1e-2 on the trained quick runs (benchmarks/README.md)
BF16_HEATMAP_TOL = 1e-2


def _small(seed: int = 0) -> tuple[SSPL, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    cfg = SSPLConfig(pretrained=False)
    model = build_model(cfg)
    frames = torch.randn(4, 3, cfg.img_size, cfg.img_size)
    spects = torch.randn(4, 3, 96, 64)
    return model, frames, spects


def test_amp_modes():
    assert perf.amp_dtype("cpu", "auto") is None  # float32 on CPU unless asked
    assert perf.amp_dtype("cuda", "auto") is torch.bfloat16
    assert perf.amp_dtype("cpu", "bf16") is torch.bfloat16
    assert perf.amp_dtype("cpu", "none") is None
    with pytest.raises(ValueError):
        perf.amp_dtype("cpu", "fp8")
    with perf.autocast("cpu", "none"):
        assert not torch.is_autocast_enabled("cpu")
    with perf.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_heatmaps_within_tolerance(seed):
    model, frames, spects = _small(seed)
    model.eval()
    with torch.no_grad():
        h32 = model.heatmap(frames, spects)
        with perf.autocast("cpu", "bf16"):
            h16 = model.heatmap(frames, spects)
    assert h32.dtype == torch.float32 and h16.dtype == torch.bfloat16  # the cosine map is computed in bf16
    diff = (h16.float() - h32).abs().max().item()
    assert 0 < diff <= BF16_HEATMAP_TOL  # > 0: bf16 really ran


def test_channels_last_same_outputs():
    model, frames, spects = _small(2)
    cl = perf.to_channels_last(copy.deepcopy(model))
    assert cl.visual.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)
    f2 = torch.randn_like(frames)
    model.train(), cl.train()
    a = model(frames, f2, spects)
    b = cl(perf.channels_last_input(frames), perf.channels_last_input(f2), spects)
    assert abs(a["loss"].item() - b["loss"].item()) <= 1e-5
    assert (a["heatmap"] - b["heatmap"]).abs().max().item() <= 1e-5
    a["loss"].backward(), b["loss"].backward()
    # gradients pass the PCM's train-mode batch norms over tiny batches (4 x 3x3 at level 0), which amplify
    # float rounding: compare them by relative norm
    for name in ("pcm.pred.1.weight", "pcm.error.2.weight", "audio.mlp.0.weight", "head.predictor.layer2.weight"):
        ga, gb = model.get_parameter(name).grad, cl.get_parameter(name).grad
        assert ((ga - gb).norm() / ga.norm()).item() <= 1e-3, name
    model.eval(), cl.eval()
    with torch.no_grad():
        assert (model.heatmap(frames, spects) - cl.heatmap(frames, spects)).abs().max().item() <= 1e-5


def test_maybe_compile_disabled_returns_model():
    model, _, _ = _small()
    assert perf.maybe_compile(model, False) is model


def test_maybe_compile_unknown_backend_falls_back():
    model, frames, spects = _small()
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        run = perf.maybe_compile(model, True, backend="no_such_backend")
    assert run is model  # eager, usable as before
    model.eval()
    with torch.no_grad():
        assert run.heatmap(frames, spects).shape == (4, 14, 14)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("this backend always fails")


def test_maybe_compile_failure_at_first_call_falls_back():
    model, frames, spects = _small()
    model.eval()
    run = perf.maybe_compile(model, True, backend=_failing_backend)
    assert isinstance(run, perf.CompiledWithFallback) and run.compiled_active
    with torch.no_grad():
        expected = model(frames, frames, spects)["heatmap"]
        with pytest.warns(RuntimeWarning, match="torch.compile failed"):
            out = run(frames, frames, spects)
    assert not run.compiled_active and "always fails" in run.failure
    assert torch.equal(out["heatmap"], expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: eager from now on
        with torch.no_grad():
            run(frames, frames, spects)
    assert run.cfg is model.cfg and run.heatmap.__self__ is model  # attributes of the eager model
    assert run.state_dict().keys() == model.state_dict().keys()


# The two benchmark scripts as smoke runs (tiny sizes): their output's structure, never their speed.
def test_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--config", "quick", "--steps", "1", "--batch", "2",
           "--data-items", "4", "--metric-maps", "16", "--threads", "1", "--json", str(out)]
    p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for row in ("train", "eval", "metric", "data", "memory"):
        assert any(line.startswith(row) for line in p.stdout.splitlines()), (row, p.stdout)
    import json

    r = json.loads(out.read_text())
    assert {"train", "eval", "metric", "data", "peak_mem_mib"} <= set(r)
    for row in ("train", "eval", "metric", "data"):  # a number was measured (finite, positive), whatever its size
        assert "official" not in r[row] and 0 < r[row]["ours"] < float("inf"), (row, r[row])
    assert 0 < r["peak_mem_mib"] < float("inf")


def test_breakdown_runs_end_to_end():
    cmd = [sys.executable, "-m", "benchmarks.breakdown", "--config", "quick", "--steps", "1", "--batch", "2",
           "--threads", "1"]
    p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("# quick config, batch 2, amp none") and "CPU: " in lines[0]
    rows = {line.split(" ms  ", 1)[1]: float(line.split(" ms  ", 1)[0]) for line in lines[1:] if " ms  " in line}
    assert list(rows)[:6] == ["visual encoder, both views (frozen, no autograd)",
                              "audio encoder (forward + backward)", "PCM, both views (forward + backward)",
                              "attention + SimSiam head + loss (forward + backward)", "AdamW step", "full training step"]
    assert all(0 < v < float("inf") for v in rows.values()), rows
    assert len(rows) == 7 and list(rows)[6].startswith("sum of the parts; full step = ")


def test_pcm_groups_equal_separate_calls():
    """Both views through the PCM at once (groups=2) = one call per view, running statistics included."""
    from sspl_lib.pcm import PCM

    torch.manual_seed(3)
    a = PCM(dim=32, audio_dim=16, out_dim=24, cycles=2).train()
    b = copy.deepcopy(a)
    v1, v2 = torch.randn(3, 32, 14, 14), torch.randn(3, 32, 14, 14)
    e = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    sep = torch.cat([a(v1, e), a(v2, e)])
    grp = b(torch.cat([v1, v2]), torch.cat([e, e]), groups=2)
    assert (sep - grp).abs().max().item() <= 1e-5
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6), k
    a.eval(), b.eval()
    with torch.no_grad():
        assert (torch.cat([a(v1, e), a(v2, e)]) - b(torch.cat([v1, v2]), torch.cat([e, e]), groups=2)).abs().max() <= 1e-5
    with pytest.raises(ValueError):
        b(torch.randn(3, 32, 14, 14), torch.randn(3, 16), groups=2)

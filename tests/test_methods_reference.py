"""The methods as modules compute what the code before them computed (commit deb05ea: `cfg.objective`,
`objectives.objective_loss`, the visual projection built by `SSPL`), and old runs still load.

tests/data/methods_reference.npz was written by that code, one thread: for each method a tiny model built with
torch.manual_seed(seeds.get(name, 6)), inputs from torch.Generator().manual_seed(1) (x1, x2 (6,3,32,32), spects
(6,2,96,64)); per method its config (old keys), state-dict shapes, the training loss (train mode), the loss after
one step of `make_optimizer`'s AdamW, the eval-mode loss and heatmap (and `heatmap_cycles` with a PCM), and the
ezvsl run's map with EZ-VSL's OGL (then `model.cfg.ogl_alpha = 0.4`). On the CPU that wrote the file everything
was bit-identical except the two object-prior maps (OGL, gate), whose min-max normalization is now the attention's
`(x - lo) / (hi - lo + 1e-10)` (one `model.minmax`), a float32 ulp apart. Other CPUs order float32 reductions
differently (oneDNN picks kernels by instruction set): on an AMD EPYC without AMX the losses differ by up to 6e-5
(SimSiam's loss is a near-cancelling sum) and the maps by up to 2.1e-5; the tolerances below are ~10x that, far
below what a change of computation moves (a missing stop-gradient or a changed normalization moves them by > 1e-2).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.experiments import runs
from sspl_lib.experiments.optim import make_optimizer, make_scheduler
from sspl_lib.methods.ezvsl import EZVSL, EZVSLGated
from sspl_lib.methods.registry import build_model

REF = np.load(Path(__file__).parent / "data" / "methods_reference.npz")
NAMES = ("sspl", "sspl_wo_pcm", "sspl_two_streams", "contrastive", "ezvsl", "ezvsl_gated", "sacl")
LOSS_ATOL = 5e-4  # losses of ~0.1-3 across CPUs (see the module docstring)
MAP_ATOL = 2e-4  # cosine and [0, 1] maps across CPUs


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(6, 3, 32, 32, generator=g), torch.randn(6, 3, 32, 32, generator=g)
    spects = torch.randn(6, 2, 96, 64, generator=g)
    np.testing.assert_allclose([x1.double().sum(), x2.double().sum(), spects.double().sum()], REF["input_sums"])
    return x1, x2, spects


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _old_config(name: str) -> dict:
    return json.loads(str(REF[f"{name}__config"]))


def _model(name: str):
    torch.manual_seed(json.loads(str(REF["seeds"])).get(name, 6))
    return build_model(SSPLConfig.from_dict(_old_config(name))).train()


@pytest.mark.parametrize("name", NAMES)
def test_losses_and_heatmaps_equal_the_old_code(name, inputs, one_thread):
    model, (x1, x2, spects) = _model(name), inputs
    cfg = model.cfg
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == json.loads(str(REF[f"{name}__state"]))
    x2 = x1 if cfg.streams == 2 else x2  # two streams: one view fed twice, as fit does
    got = {"loss": model(x1, x2, spects)["loss"]}
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, 3)
    opt.zero_grad(set_to_none=True)
    got["loss"].backward()
    opt.step()
    sched.step()
    got["loss_after_step"] = model(x1, x2, spects)["loss"]
    model.eval()
    with torch.no_grad():
        got["loss_eval"] = model(x1, x2, spects)["loss"]
        got["heatmap"] = model.heatmap(x1, spects)
        if model.pcm is not None:
            got["heatmap_cycles"] = model.heatmap_cycles(x1, spects)
        if name == "ezvsl":
            ogl = model.heatmap(x1, spects, replace(model.method, ogl_alpha=0.4))
            np.testing.assert_allclose(ogl.numpy(), REF["ezvsl_ogl__heatmap"], rtol=0, atol=MAP_ATOL)
            assert not np.allclose(ogl.numpy(), REF["ezvsl__heatmap"], atol=1e-2)
    for key, value in got.items():
        want = REF[f"{name}__{key}"]
        assert value.shape == want.shape, (name, key)
        atol = MAP_ATOL if key.startswith("heatmap") else LOSS_ATOL
        np.testing.assert_allclose(value.detach().numpy(), want, rtol=0, atol=atol, err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_of_the_old_layout_loads(name, inputs, tmp_path):
    """fit's checkpoint with the old config keys (objective, views, lr_pcm, ogl_*, ezvsl_prior_region) and the old
    state-dict keys (`visual_proj.*` for EZ-VSL / SACL): load_run gives the method and the same map."""
    model = _model(name).eval()
    state = {"model": model.state_dict(), "config": _old_config(name), "epoch": 0}
    runs.atomic_save(state, tmp_path / "checkpoints" / "best.pt")
    loaded = runs.load_run(tmp_path)
    old = _old_config(name)
    assert type(loaded.method) is type(model.method) and loaded.method == model.method
    assert loaded.cfg.streams == old["views"] + 1 and loaded.cfg.lr_visual == old["lr_pcm"]
    if old["objective"] == "ezvsl":
        assert isinstance(loaded.method, EZVSL) and "visual_proj.weight" in loaded.state_dict()
        assert isinstance(loaded.method, EZVSLGated) == (old["ezvsl_prior_region"] > 0)
    x1, _, spects = inputs
    with torch.no_grad():
        assert torch.equal(loaded.heatmap(x1, spects), model.heatmap(x1, spects))

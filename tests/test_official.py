"""Equivalence with the official SSPL code (zjsong/SSPL), through the official checkpoint layout.

tests/data/official_reference.npz holds numbers produced by the *official* code (never part of this
repository) on CPU with synthetic seeded weights and inputs:

* manifests: (key, shape) of the four official state dicts, for SSPL w/ PCM (cycs_pcm=4, out_dim=512)
  and w/o PCM; tests/official_weights.py regenerates the exact weights from them
  (every tensor seeded with weight_seed + crc32(key));
* for each model (prefix ``pcm4__`` / ``nopcm__``), on the inputs of ``official_weights.make_inputs(input_seed)``
  (B=4, two views 224x224, spects (4,3,1,96,64)): ``heatmap_eval`` = ``orig_sim_map`` of
  ``NetWrapper.forward`` in eval mode; ``loss_eval``; then in train mode (BatchNorm batch statistics)
  ``loss_train``, ``p1 p2 z1 z2`` (SimSiam head outputs) and ``heatmap_train``;
* ``audio__*`` / ``prepare__*``: the official VGGish front end (tests/test_audio_reference.py).

The reference is computed by the official code in float64 (stored as float32): SimSiam's BatchNorm1d
over a batch of 4 amplifies float32 rounding, and the official code run in float32 itself differs
from its float64 run by up to 5.8e-5 (p) / 1.8e-4 (z) while loss and heatmaps agree to < 1e-6.
Hence the float32 test checks loss and heatmaps to 1e-4 and p/z to 1e-3, and the float64 test (always
run; 2.6 min on 2 cores under load average 5.6, ~1 min of CPU) checks loss and heatmaps to 1e-6
(measured: <= 2.8e-8, the float32 storage) and p/z to 1e-4 (measured: <= 2.1e-7 with 2 threads; with
1 thread the float32 inputs of ``make_inputs`` round differently, by ulps, and p/z move by up to 7.9e-6).

Regenerating the npz (needs the official code, outside the repository; ~70 s):
    git clone https://github.com/zjsong/SSPL /tmp/official_src  # made from commit d1af4c7a (2024-07-08)
    python -m pip install --no-deps --target /tmp/offpkgs opencv-python-headless pandas pytz tzdata
    python -m benchmarks.make_official_reference --official-src /tmp/official_src --official-pkgs /tmp/offpkgs --check
benchmarks/make_official_reference.py (committed) builds the official modules, loads the seeded state
dicts, runs the official ``NetWrapper.forward`` and audio functions and writes only numbers; with
``--check`` it compares every entry with this file (np.array_equal: all 32 bit-identical with 2 threads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from official_weights import OFFICIAL_FILES, make_inputs, make_state_dict, manifests_from_json, \
    write_official_checkpoints
from sspl_lib.official import (OfficialCheckpointError, check_state_dict, convert_official_state_dicts,
                               load_official, pcm_cycles)

REF_PATH = Path(__file__).parent / "data" / "official_reference.npz"
TOL = 1e-4
TOL_PZ_F32 = 1e-3
TOL_F64 = 1e-6  # loss and heatmaps in float64 (the reference is float64 rounded to float32)


@pytest.fixture(scope="module")
def ref():
    with np.load(REF_PATH) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def official_dir(ref, tmp_path_factory):
    """The four official checkpoint files (seeded weights), shared by both variants."""
    pcm4 = manifests_from_json(ref["pcm4__manifests"])
    nopcm = manifests_from_json(ref["nopcm__manifests"])
    assert set(nopcm) == {"frame", "sound", "ssl_head"}
    for part in nopcm:  # the w/o-PCM model shares frame / sound / ssl_head layouts
        assert nopcm[part] == pcm4[part], part
    folder = tmp_path_factory.mktemp("official")
    write_official_checkpoints(folder, pcm4, int(ref["weight_seed"]))
    return folder


@pytest.fixture(scope="module")
def inputs(ref):
    f1, f2, spects = make_inputs(int(ref["input_seed"]))
    fp = ref["input_fingerprint"]
    np.testing.assert_allclose([f1.double().sum(), f2.double().sum(), spects.double().sum()], fp[:3], rtol=1e-6)  # float32 ulps vary with the thread count
    return f1, f2, spects[:, :, 0]  # official (B,3,1,96,64) -> ours (B,3,96,64)


def _paths(folder: Path, variant: str) -> dict:
    p = {part: folder / OFFICIAL_FILES[part][0] for part in ("frame", "sound", "ssl_head")}
    p["pcm"] = folder / OFFICIAL_FILES["pcm"][0] if variant == "pcm4" else None
    return p


def _maxabs(a, b) -> float:
    a = a.detach().double().numpy() if torch.is_tensor(a) else np.asarray(a, dtype=np.float64)
    assert a.shape == np.shape(b), (a.shape, np.shape(b))
    return float(np.abs(a - np.asarray(b, dtype=np.float64)).max())


def _diffs(model, variant, ref, f1, f2, spects, label) -> dict:
    """Max abs differences to the official numbers: eval mode first (the train-mode pass updates the
    BatchNorm running statistics): heatmap, and loss + heatmap of the full forward; then the train-mode
    loss, heatmap, p and z."""
    diffs = {}
    with torch.no_grad():
        diffs["heatmap_eval"] = _maxabs(model.heatmap(f1, spects), ref[f"{variant}__heatmap_eval"])
        ev = model.eval()(f1, f2, spects)
        diffs["loss_eval"] = _maxabs(ev["loss"], ref[f"{variant}__loss_eval"])
        diffs["heatmap_eval_forward"] = _maxabs(ev["heatmap"], ref[f"{variant}__heatmap_eval"])
        out = model.train()(f1, f2, spects)
    diffs["loss_train"] = _maxabs(out["loss"], ref[f"{variant}__loss_train"])
    diffs["heatmap_train"] = _maxabs(out["heatmap"], ref[f"{variant}__heatmap_train"])
    for k in ("p1", "p2", "z1", "z2"):
        diffs[k] = _maxabs(out[k], ref[f"{variant}__{k}"])
    print(f"\n[official {label} {variant}] max abs diffs: " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
    return diffs


@pytest.mark.parametrize("variant", ["pcm4", "nopcm"])
def test_official_equivalence_float32(variant, ref, official_dir, inputs):
    torch.manual_seed(0)
    model = load_official(**_paths(official_dir, variant))
    assert not model.training
    assert (model.pcm is not None) == (variant == "pcm4")
    if variant == "pcm4":
        assert model.pcm.cycles == int(ref["cycles"])
    for k, v in _diffs(model, variant, ref, *inputs, "float32").items():
        assert v <= (TOL_PZ_F32 if k[0] in "pz" else TOL), (k, v)


@pytest.mark.parametrize("variant", ["pcm4"])  # nopcm's graph is pcm4's without the PCM (float32 checks both)
def test_official_equivalence_float64(variant, ref, official_dir, inputs):
    model = load_official(**_paths(official_dir, variant)).double()
    for k, v in _diffs(model, variant, ref, *(x.double() for x in inputs), "float64").items():
        assert v <= (TOL if k[0] in "pz" else TOL_F64), (k, v)


# --- conversion / loading errors (cheap: small state dicts and the manifests only) ---------------------
def test_pcm_cycles_inferred_from_manifest(ref):
    pcm = dict(manifests_from_json(ref["pcm4__manifests"])["pcm"])
    state = {"module." + k: torch.zeros(s) for k, s in pcm.items()}
    assert pcm_cycles(state) == int(ref["cycles"]) == 4
    two = {k: v for k, v in state.items()
           if not any(k.startswith(f"module.{n}.{i}.") for n, r in (("BNPred_step", range(4, 8)),
                                                                     ("BNError_step", range(6, 12))) for i in r)}
    assert pcm_cycles(two) == 2
    broken = {k: v for k, v in state.items() if not k.startswith("module.BNError_step.11.")}
    with pytest.raises(OfficialCheckpointError, match="cannot infer"):
        pcm_cycles(broken)


def test_unknown_key_names_the_file():
    with pytest.raises(OfficialCheckpointError, match=r"my/sound_best\.pth.*fc\.9\.weight"):
        convert_official_state_dicts({}, {"module.fc.9.weight": torch.zeros(1)},
                                     sources={"sound": "my/sound_best.pth"})


def test_key_mapping_is_complete(ref):
    """Every official key maps onto our model, with the right shape, and nothing is left over."""
    from sspl_lib.methods.registry import build_model
    from sspl_lib.official import official_config

    man = manifests_from_json(ref["pcm4__manifests"])
    fake = {part: {k: torch.zeros(s) for k, s in m} for part, m in man.items()}
    state = convert_official_state_dicts(**fake)
    with torch.device("meta"):
        model = build_model(official_config(use_pcm=True, cycles=4))
    check_state_dict(model, state)
    del state["pcm.a0.1"]
    state["pcm.extra"] = torch.zeros(1)
    with pytest.raises(OfficialCheckpointError) as e:
        check_state_dict(model, state, sources={"pcm": "x/pcm_best.pth"})
    assert "missing in x/pcm_best.pth: ['pcm.a0.1']" in str(e.value)
    assert "unexpected in x/pcm_best.pth: ['pcm.extra']" in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame_best.pth"):
        load_official(tmp_path / "frame_best.pth", tmp_path / "sound_best.pth")


def test_seeded_weights_are_deterministic(ref):
    pcm = manifests_from_json(ref["pcm4__manifests"])["pcm"]
    a, b = make_state_dict(pcm, 7), make_state_dict(pcm, 7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["BNError.0.weight"], make_state_dict(pcm, 8)["BNError.0.weight"])


def test_load_without_ssl_head(official_dir):
    p = _paths(official_dir, "pcm4")
    model = load_official(p["frame"], p["sound"], p["pcm"])
    assert not model.training and model.pcm.cycles == 4
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in model.head.state_dict().values())
    with pytest.raises(OfficialCheckpointError, match="2 was asked"):
        load_official(p["frame"], p["sound"], p["pcm"], cycles=2)

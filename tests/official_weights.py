"""Deterministic seeded weights and inputs for the official-equivalence tests.

The official SSPL checkpoints are not redistributable test fixtures, so the
equivalence test (tests/test_official.py) instead uses *synthetic* checkpoints:
every tensor of the four official state dicts is drawn from a generator seeded
with ``seed + crc32(key)``.  Given only a manifest (the list of ``(key, shape)``
of each official state dict, stored in tests/data/official_reference.npz) the
exact same weights can be regenerated without the official code.

Scales are chosen so that activations stay finite and non-degenerate through
VGG16 conv5_3 + PCM + SimSiam:

* conv / linear weights ~ N(0, 2 / fan_in) (He); for transposed convolutions
  (the PCM ``ErrorProcess`` layers, weight layout ``(in, out, kh, kw)``) the
  fan-in is ``in * kh * kw``;
* plain biases ~ 0.01 N(0, 1);
* BatchNorm (a ``weight``/``bias`` whose module also has ``running_mean``):
  weight ~ 1 + 0.1 N, bias ~ 0.1 N, running_mean ~ 0.1 N,
  running_var ~ 1 + 0.1 |N|, num_batches_tracked = 0;
* PCM rates: ``a0.i`` ~ 1 + 0.1 N, ``b0.i`` ~ 0.5 + 0.1 N.

The seeded *inputs* (frames, spectrogram examples and waveforms) used by the
reference generator (benchmarks/make_official_reference.py) live here so that it and the tests share them.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import torch

Manifest = List[Tuple[str, Tuple[int, ...]]]

# names of the four official checkpoint files and whether they were saved from
# DistributedDataParallel (keys prefixed with "module.")
OFFICIAL_FILES = {
    "frame": ("frame_best.pth", False),
    "sound": ("sound_best.pth", True),
    "pcm": ("pcm_best.pth", True),
    "ssl_head": ("ssl_head_best.pth", True),
}


def _generator(seed: int, key: str) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) + zlib.crc32(key.encode("utf-8"))) % (2**63))
    return g


def _is_transposed(key: str) -> bool:
    return "ErrorProcess" in key


def _tensor_for(key: str, shape: Sequence[int], seed: int, bn_modules: set) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    module = key.rsplit(".", 1)[0] if "." in key else ""
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    g = _generator(seed, key)
    n = torch.randn(shape, generator=g, dtype=torch.float32)
    if leaf == "running_mean":
        return 0.1 * n
    if leaf == "running_var":
        return 1.0 + 0.1 * n.abs()
    # PCM rate parameters live in ParameterLists: keys "a0.<i>" / "b0.<i>"
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] == "a0":
        return 1.0 + 0.1 * n
    if len(parts) >= 2 and parts[-2] == "b0":
        return 0.5 + 0.1 * n
    if module in bn_modules and leaf == "weight":
        return 1.0 + 0.1 * n
    if module in bn_modules and leaf == "bias":
        return 0.1 * n
    if leaf == "bias":
        return 0.01 * n
    if leaf == "weight" and len(shape) >= 2:
        rf = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        fan_in = (shape[0] if _is_transposed(key) else shape[1]) * rf
        return n * math.sqrt(2.0 / fan_in)
    raise ValueError(f"official_weights: no rule for key {key!r} with shape {shape}")


def make_state_dict(manifest: Iterable[Tuple[str, Sequence[int]]], seed: int) -> Dict[str, torch.Tensor]:
    """Seeded state dict for ``manifest`` (keys without any ``module.`` prefix)."""
    manifest = [(k, tuple(s)) for k, s in manifest]
    bn_modules = {k.rsplit(".", 1)[0] for k, _ in manifest if k.endswith(".running_mean")}
    return {k: _tensor_for(k, s, seed, bn_modules) for k, s in manifest}


def manifest_of(state_dict: Mapping[str, torch.Tensor]) -> Manifest:
    return [(k, tuple(int(s) for s in v.shape)) for k, v in state_dict.items()]


def manifests_to_json(manifests: Mapping[str, Manifest]) -> str:
    return json.dumps({part: [[k, list(s)] for k, s in m] for part, m in manifests.items()})


def manifests_from_json(text: str) -> Dict[str, Manifest]:
    return {part: [(k, tuple(s)) for k, s in m] for part, m in json.loads(str(text)).items()}


def write_official_checkpoints(folder, manifests: Mapping[str, Manifest], seed: int) -> Dict[str, Path]:
    """Write ``frame_best.pth`` / ``sound_best.pth`` / ``pcm_best.pth`` / ``ssl_head_best.pth``.

    ``manifests`` maps part name ("frame", "sound", "pcm", "ssl_head"; "pcm" may be
    absent for the w/o-PCM model) to its manifest.  The sound, pcm and ssl_head
    files get the ``module.`` prefix that DistributedDataParallel put in the
    official checkpoints.  Returns {part: path}.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, manifest in manifests.items():
        fname, ddp = OFFICIAL_FILES[part]
        sd = make_state_dict(manifest, seed)
        if ddp:
            sd = {"module." + k: v for k, v in sd.items()}
        path = folder / fname
        torch.save(sd, path)
        out[part] = path
    return out


# ----------------------------------------------------------------------------
# seeded inputs shared by the reference generator and the tests
# ----------------------------------------------------------------------------
def make_inputs(seed: int, batch: int = 4, size: int = 224):
    """Seeded float32 inputs: frames view 1, view 2 (B,3,S,S) and spects (B,3,1,96,64).

    Frames are N(0,1)-scale images with per-sample scale, per-channel offset and a
    smooth low-frequency component, so that samples differ clearly (SimSiam's
    BatchNorm over a batch of 4 is otherwise badly conditioned).  Spects are
    log-mel-like values in [-4.6, 2]: a per-sample level, a smooth pattern and noise.
    """
    import torch.nn.functional as F

    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    f32 = torch.float32

    def frames():
        scale = torch.rand(batch, 1, 1, 1, generator=g, dtype=f32) * 1.5 + 0.5
        offset = torch.randn(batch, 3, 1, 1, generator=g, dtype=f32)
        low = F.interpolate(torch.randn(batch, 3, 7, 7, generator=g, dtype=f32), size=(size, size),
                            mode="bilinear", align_corners=False)
        noise = torch.randn(batch, 3, size, size, generator=g, dtype=f32)
        return 0.5 * scale * noise + 1.5 * low + offset

    f1 = frames()
    f2 = frames()
    level = torch.rand(batch, 1, 1, 1, 1, generator=g, dtype=f32) * 4 - 4
    low = F.interpolate(torch.randn(batch * 3, 1, 6, 4, generator=g, dtype=f32), size=(96, 64),
                        mode="bilinear", align_corners=False).view(batch, 3, 1, 96, 64)
    noise = torch.randn(batch, 3, 1, 96, 64, generator=g, dtype=f32)
    spects = (level + 1.5 * low + 0.5 * noise).clamp(-4.6, 2.0)
    return f1, f2, spects


def make_waveform(seed: int, seconds: float, sample_rate: int) -> np.ndarray:
    """A float64 test signal: a few partials with a decaying envelope plus noise, peak ~0.5."""
    rng = np.random.default_rng(int(seed))
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    x = np.zeros(n)
    for _ in range(5):
        f = rng.uniform(80.0, min(7000.0, sample_rate / 2 - 500.0))
        x += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    x *= 0.6 + 0.4 * np.cos(2 * np.pi * rng.uniform(0.5, 3.0) * t)
    x += 0.02 * rng.standard_normal(n)
    return x


def waveform_cases() -> Dict[str, Tuple[np.ndarray, int]]:
    """name -> (waveform, sample_rate) fed to vggish_input.waveform_to_examples."""
    x_norm = make_waveform(14, 3.0, 16000)
    # min-max normalisation as the official data loader does (eps 1e-3 on the max)
    x_norm = x_norm - x_norm.min()
    x_norm = (x_norm / (x_norm.max() + 1e-3) - 0.5) * 2
    return {
        "wave16k_3s": (make_waveform(11, 3.0, 16000), 16000),
        "wave16k_1p5s": (make_waveform(12, 1.5, 16000), 16000),
        "wave44k_3s": (make_waveform(13, 3.0, 44100), 44100),
        "wave16k_norm": (x_norm, 16000),
    }


def prepare_cases() -> Dict[str, np.ndarray]:
    """Raw 16 kHz clips fed to the official audio loader (tile / centre 3 s / min-max)."""
    return {
        "clip_short": make_waveform(21, 1.7, 16000).astype(np.float32),
        "clip_long": make_waveform(22, 5.3, 16000).astype(np.float32),
    }

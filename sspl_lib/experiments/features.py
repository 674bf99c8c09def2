"""Encoder outputs shared by the models of an evaluation: a test split's visual maps and audio embeddings,
computed once for every model whose encoder has the same weights (all the quick profile's methods and seeds load
one frozen encoders.pt), in the batches `evaluate.compute_heatmaps` uses, so that its heatmaps stay bit-identical.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .. import perf
from ..data.testset import TestSet
from ..data.transforms import eval_frame


def audio_batch(data: TestSet, idx: np.ndarray, audio: str, perm: np.ndarray | None, silent: torch.Tensor):
    """The spects (B,N,96,64) heard with the frames `idx` under an audio mode."""
    if audio == "matched":
        return torch.from_numpy(data.spects[idx])
    if audio == "shuffled":
        return torch.from_numpy(data.spects[perm[idx]])
    return silent.expand(len(idx), *silent.shape)


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha1 of a module's state_dict (names, dtypes, shapes and bytes of every weight and buffer): two modules of
    one architecture with the same fingerprint compute the same function in eval mode."""
    h = hashlib.sha1()
    for k, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class SharedFeatures:
    """The encoder outputs of one test split, computed once and shared by every model whose encoder has the same
    weights (`state_fingerprint`): the visual maps of the frames, and the audio backbone's embeddings of the clips
    of each audio mode. They are computed in the batches `compute_heatmaps` uses, with the same inputs, so that
    `compute_heatmaps(..., shared=...)` gives bit-identical heatmaps (`Method.heatmap`). All the quick
    profile's methods load one frozen encoders.pt: their visual and audio encoders run once per split, not once
    per model and audio mode."""

    def __init__(self, data: TestSet, *, batch_size: int = 64, device="cpu", amp: str = "none"):
        self.data, self.batch_size, self.device, self.amp = data, int(batch_size), torch.device(device), amp
        self._visual: dict = {}  # (fingerprint, img_size) -> [maps (B,C,h,w) per batch]
        self._audio: dict = {}  # (fingerprint, audio mode, seed) -> [embeddings (B,N,128) per batch]
        self.computed = {"visual": 0, "audio": 0}  # how many encoder passes over the split were run
        self._fingerprints: dict = {}  # id(module) -> (module, state_fingerprint); weights are fixed while evaluating

    def fingerprint(self, module: torch.nn.Module) -> str:
        """`state_fingerprint` of a module, hashed once per module object (a VGG16 is ~0.5 GB of weights)."""
        if id(module) not in self._fingerprints:
            self._fingerprints[id(module)] = (module, state_fingerprint(module))  # the module kept: ids stay unique
        return self._fingerprints[id(module)][1]

    def batches(self):
        n = self.data.n
        return [np.arange(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]

    def check(self, data: TestSet, batch_size: int, device, amp: str) -> None:
        same = (int(batch_size), torch.device(device), amp) == (self.batch_size, self.device, self.amp)
        if data is not self.data or not same:  # the very TestSet object: its arrays are what was encoded
            raise ValueError(f"shared features of {self.data.path} (batch_size={self.batch_size}, device={self.device},"
                             f" amp={self.amp!r}) used for {data.path} (batch_size={batch_size}, device={device}, "
                             f"amp={amp!r}); expected the same split and settings")

    @torch.inference_mode()
    def visual(self, model) -> list[torch.Tensor]:
        key = (self.fingerprint(model.visual), model.cfg.img_size)
        if key not in self._visual:
            with perf.autocast(self.device, self.amp):
                self._visual[key] = [model.encode_frames(eval_frame(torch.from_numpy(self.data.frames[idx])
                                                                    .to(self.device), model.cfg.img_size))[0]
                                     for idx in self.batches()]
            self.computed["visual"] += 1
        return self._visual[key]

    @torch.inference_mode()
    def audio(self, model, audio: str, perm: np.ndarray | None, seed: int, silent: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's embeddings of the clips heard under `audio` (perm: the shuffled mode's derangement of
        seed `seed`; silent: the silent clip's log-mel)."""
        key = (self.fingerprint(model.audio.backbone), audio, seed if audio == "shuffled" else None)
        if key not in self._audio:
            with perf.autocast(self.device, self.amp):
                self._audio[key] = [model.audio.embed(audio_batch(self.data, idx, audio, perm, silent).to(self.device))
                                    for idx in self.batches()]
            self.computed["audio"] += 1
        return self._audio[key]

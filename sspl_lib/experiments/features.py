"""Encoder outputs shared by the models of an evaluation: a test split's visual maps and audio embeddings,
computed once for every model whose encoder has the same weights (all the quick profile's methods and seeds load
one frozen encoders.pt), in the batches `evaluate.compute_heatmaps` uses, so that its heatmaps stay bit-identical;
a model trained on cached features (`feature_cache`) reads them from the split's cache files (`feature_cache`).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import perf
from ..data.testset import TestSet
from ..data.transforms import eval_frame, map_views
from .feature_cache import audio_embeddings, grid_size, state_fingerprint, visual_maps


class SharedFeatures:
    """The encoder outputs of one test split, computed once and shared by every model whose encoder has the same
    weights (`state_fingerprint`): the visual maps of the frames, and the audio backbone's embeddings of the clips
    of each audio mode. They are computed in the batches `compute_heatmaps` uses, with the same inputs, so that
    `compute_heatmaps(..., shared=...)` gives bit-identical heatmaps (`Method.heatmap`). All the quick
    profile's methods load one frozen encoders.pt: their visual and audio encoders run once per split, not once
    per model and audio mode. A `feature_cache` model's outputs are read from the split's cache files (built
    there once), gathered in the same batches: the same values as its stream computes."""

    def __init__(self, data: TestSet, *, batch_size: int = 64, device="cpu", amp: str = "none",
                 progress: bool = True):
        self.data, self.batch_size, self.device, self.amp = data, int(batch_size), torch.device(device), amp
        self.progress = progress
        self._visual: dict = {}  # stream_key -> [maps (B,C,h,w) per batch]
        self._audio: dict = {}  # (fingerprint, cached, audio mode, seed) -> [embeddings (B,N,E) per batch]
        self.computed = {"visual": 0, "audio": 0}  # how many encoder passes over the split were run here
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

    def stream_key(self, model) -> tuple:
        """What the visual stream's maps depend on: encoder and PCA weights, float16 values, input size."""
        pca = self.fingerprint(model.visual_pca) if model.visual_pca is not None else None
        return self.fingerprint(model.visual), pca, model.cfg.feature_cache, model.cfg.img_size

    @torch.inference_mode()
    def visual(self, model) -> list[torch.Tensor]:
        key = self.stream_key(model)
        if key not in self._visual and model.cfg.feature_cache:
            cached = visual_maps(model, self.data.path, progress=self.progress)
            self._visual[key] = [cached.rows(self.data.index[idx]).to(self.device) for idx in self.batches()]
        if key not in self._visual:
            with perf.autocast(self.device, self.amp):
                self._visual[key] = [model.encode_frames(eval_frame(torch.from_numpy(self.data.frames[idx])
                                                                    .to(self.device), model.cfg.img_size))[0]
                                     for idx in self.batches()]
            self.computed["visual"] += 1
        return self._visual[key]

    @torch.inference_mode()
    def audio(self, model, audio: str, perm: np.ndarray | None, seed: int) -> list[torch.Tensor]:
        """The backbone's embeddings of the clips heard under `audio` (perm: the shuffled mode's derangement of
        seed `seed`)."""
        key = (self.fingerprint(model.audio.backbone), model.cfg.feature_cache, audio,
               seed if audio == "shuffled" else None)
        if key not in self._audio and model.cfg.feature_cache:
            cached = audio_embeddings(model, self.data.path, progress=self.progress)
            rows = {"matched": self.data.index, "shuffled": self.data.index[perm] if perm is not None else None}
            silent = cached.silent[0]  # (n, E); a contiguous batch of copies, as the backbone would give it
            self._audio[key] = [(cached.emb[rows[audio][idx]] if audio in rows else
                                 silent.expand(len(idx), *silent.shape).contiguous()).to(self.device)
                                for idx in self.batches()]
        if key not in self._audio:
            with perf.autocast(self.device, self.amp):
                self._audio[key] = [model.embed_audio(self.data.spects_heard(idx, audio, perm).to(self.device))
                                    for idx in self.batches()]
            self.computed["audio"] += 1
        return self._audio[key]

    def cached_views(self, model, idx: np.ndarray, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Validation's loss inputs from the cache: two feature-space views of the samples `idx` (crops drawn from
        `g`) and their clips' embeddings."""
        rows = self.data.index[idx]
        maps = visual_maps(model, self.data.path, train=True, progress=self.progress).rows(rows).to(self.device)
        v1, v2 = map_views(maps, grid_size(model, self.data.path), g, views=2, batch=len(idx), offset=0)
        return v1, v2, audio_embeddings(model, self.data.path, progress=self.progress).emb[rows].to(self.device)

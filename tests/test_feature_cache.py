"""experiments.feature_cache: frozen-encoder features cached on disk (real HDF5 splits, the small encoders and the
registry-shipped EfficientNet-Lite0 + YAMNet): cached eval heatmaps equal uncached ones bit for bit; a cache is
reused, rebuilt when the data, the encoder or the sizes change, and a damaged file is named and rebuilt; parallel
study jobs read the one cache the parent built; a cached run trains, resumes under DDP and scores; feature-space
crops are seeded per view; the visual PCA round-trips through a checkpoint; the config refuses what cannot be
cached."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from sspl_lib.config import ConfigError, SSPLConfig
from sspl_lib.data.stream import CachedStream, TrainStream, split_path
from sspl_lib.data.transforms import eval_frame, map_views, seeded_generator
from sspl_lib.distributed import DistInfo
from sspl_lib.experiments import feature_cache as FC
from sspl_lib.experiments import runs
from sspl_lib.experiments import train as T
from sspl_lib.experiments.evaluate import compute_heatmaps, load_eval_split
from sspl_lib.experiments.features import SharedFeatures
from sspl_lib.experiments.pretrain import pretrain
from sspl_lib.experiments.study import evaluate_methods, train_methods
from sspl_lib.model import object_prior
from sspl_lib.methods.registry import build_model
from sspl_lib.paths import REPO_ROOT
from sspl_lib.pca import FixedPCA, fit_pca
from sspl_lib.profiles import load_profile

TINY = dict(img_size=48, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, proj_dim=32, pred_hidden=16,
            pcm_cycles=1, epochs=1, batch_size=16, lr_visual=1e-3, lr_sound=1e-3, lr_head=1e-3, workers=0, threads=1,
            seed=5, seeds=(5,), val_samples=0, pretrained=False, feature_cache=True)
AUDIO = ("matched", "shuffled", "silent")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sspl_lib.data.synthetic import generate_benchmark

    torch.set_num_threads(1)
    return generate_benchmark(tmp_path_factory.mktemp("bench"), seed=3, n_train=48, n_val=16, n_test=24,
                              n_labeled=64, n_swap=8, frame_size=64, n_classes=4, workers=1, chunk=16, progress=False)


@pytest.fixture
def data_root(bench, tmp_path):
    """A private copy of the train and val splits (a test may change them or their cache)."""
    for split in ("train", "val", "labeled_images", "labeled_sounds"):
        shutil.copy2(bench / f"{split}.h5", tmp_path / f"{split}.h5")
    return tmp_path


@pytest.fixture(autouse=True)
def fresh_reads():
    FC._LOADED.clear()  # each test reads the files it means to read
    yield
    FC._LOADED.clear()


def _files(root) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted((root / "features").glob("*.pt"))}


# ----------------------------------------------------------------------------- bit-identical evaluation
@pytest.mark.parametrize("kw", [{}, {"method": "ezvsl_gated", "use_pcm": False, "ezvsl_gated_gamma": 2.0,
                                     "ezvsl_gated_region": 0.5, "pretrained": True, "visual_pca_dim": 8},
                                {"visual_encoder": "efficientnet_lite0", "audio_encoder": "yamnet", "img_size": 64,
                                 "pretrained": True}], ids=["small", "pca_gated", "lite0_yamnet"])
def test_cached_eval_heatmaps_equal_uncached(bench, tmp_path, kw):
    """Every audio mode, the swap split's repeated frames (stored once), the object prior of a PCA stream."""
    cfg = SSPLConfig(data_root=str(bench), **{**TINY, **kw})
    if cfg.visual_pca_dim:
        cfg = cfg.replace(encoders_checkpoint=str(pretrain(cfg.replace(pretrain_epochs=1), tmp_path, progress=False)))
    model = FC.stream_model(cfg)
    for split in ("test_multi", "swap"):
        data = load_eval_split(bench / f"{split}.h5")
        bs = data.n  # >= 10 clips per batch: the audio backbones' kernels then embed each clip alike
        shared = SharedFeatures(data, batch_size=bs, progress=False)
        for audio in AUDIO:
            a, _ = compute_heatmaps(model, data, batch_size=bs, audio=audio, seed=3, shared=shared)
            b, _ = compute_heatmaps(model, data, batch_size=bs, audio=audio, seed=3)
            assert torch.equal(a, b), (split, audio)
        assert shared.computed == {"visual": 0, "audio": 0}  # every map and embedding read from the cache
    maps = FC.visual_maps(model, bench / "swap.h5")
    assert len(maps.maps) == len(np.unique(maps.index)) < len(maps.index)  # repeated frames: one map each
    if cfg.visual_pca_dim:  # the stream leads with the encoder map's object prior, then the PCA coefficients
        x = eval_frame(torch.from_numpy(load_eval_split(bench / "swap.h5").frames[:4]), cfg.img_size)
        (v,) = model.encode_frames(x)
        raw = model.visual(x)
        assert v.shape[1] == 9 and torch.equal(v[:, 0], object_prior(raw).half().float())
        assert torch.equal(model.object_prior(v), v[:, 0]) and model.feature_map(v).shape[1] == 8


# ----------------------------------------------------------------------------- reuse, keys, damaged files
def test_the_cache_is_reused_and_rebuilt_when_its_key_changes(data_root, capsys):
    cfg = SSPLConfig(data_root=str(data_root), **TINY)
    FC.prepare_training(cfg)
    first = _files(data_root)
    out = capsys.readouterr().out
    assert len(first) == 5 and out.count("[features] wrote") == 5
    assert re.search(r"\[features\] train\.h5: visual maps at \d+ px: \d+ frames in ", out), out
    assert re.search(r"\[features\] train\.h5: audio embeddings: \d+ clips in ", out), out
    FC._LOADED.clear()
    FC.prepare_training(cfg)  # a second run: computes nothing, writes nothing
    assert capsys.readouterr().out == "" and _files(data_root) == first

    def new_files(**change) -> set:
        FC._LOADED.clear()
        before = set(_files(data_root))
        FC.prepare_training(cfg.replace(**change), progress=False)
        return {n.split("-")[0] for n in set(_files(data_root)) - before}

    assert new_files(cache_scale=1.3) == {"train.train_maps62", "val.train_maps62"}  # the sizes
    assert new_files(img_size=40) == {"train.train_maps46", "val.train_maps46", "val.eval_maps40"}
    assert new_files(seed=6) == {"train.train_maps55", "val.train_maps55", "val.eval_maps48", "train.audio",
                                 "val.audio"}  # other (random) encoder weights
    with h5py.File(data_root / "val.h5", "r+") as f:  # the data: one frame of the validation split changed
        f["frames"][5] = 255 - f["frames"][5]
    assert new_files() == {"val.train_maps55", "val.eval_maps48", "val.audio"}


def test_a_damaged_cache_file_is_named_and_rebuilt(data_root, capsys):
    cfg = SSPLConfig(data_root=str(data_root), **TINY)
    model = FC.stream_model(cfg)
    val = data_root / "val.h5"
    want = FC.visual_maps(model, val, progress=False).maps.clone()
    (file,) = (data_root / "features").glob("val.eval_maps48-*.pt")
    raw = file.read_bytes()
    for damage, says in ((raw[: len(raw) // 2], "unreadable"), (raw[:-1], "unreadable"), (b"", "unreadable"),
                         (raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1:],
                          "checksum")):
        file.write_bytes(damage)
        FC._LOADED.clear()
        got = FC.visual_maps(model, val, progress=False)
        out = capsys.readouterr().out
        assert f"[features] {file}: " in out and says in out and "building it again" in out, out
        assert torch.equal(got.maps, want) and file.read_bytes() != damage
    # another key's file at this name is not used either
    FC._LOADED.clear()
    other = FC.stream_model(cfg.replace(seed=9))
    key = {"version": FC.VERSION, "part": "eval_maps"}
    with pytest.raises(FC.CacheFileError, match="another key"):
        FC._read(file, key)
    assert not torch.equal(FC.visual_maps(other, val, progress=False).maps, want)


# ----------------------------------------------------------------------------- feature-space views
def test_feature_space_views_are_seeded_per_view_and_sliced_per_rank():
    maps = torch.arange(4 * 2 * 6 * 6, dtype=torch.float32).view(4, 2, 6, 6)
    a = map_views(maps, 4, seeded_generator(1, 0, 3), views=2, batch=4, offset=0)
    b = map_views(maps, 4, seeded_generator(1, 0, 3), views=2, batch=4, offset=0)
    c = map_views(maps, 4, seeded_generator(1, 0, 4), views=2, batch=4, offset=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # each view its own crops and flips
    # each view of each item is a 4x4 window of its own map, flipped or not, at the drawn offsets
    g = seeded_generator(1, 0, 3)
    from sspl_lib.data.transforms import AugmentConfig, crop_flip_params

    for view in a:
        oy, ox, flip = crop_flip_params(4, 6, AugmentConfig(img_size=4), g)
        for i in range(4):
            want = maps[i, :, oy[i]:oy[i] + 4, ox[i]:ox[i] + 4]
            assert torch.equal(view[i], want.flip(-1) if flip[i] else want)
    # two ranks' halves of the global batch, same generator: the whole batch's views
    halves = [map_views(maps[r * 2:r * 2 + 2], 4, seeded_generator(1, 0, 3), views=2, batch=4, offset=r * 2)
              for r in (0, 1)]
    assert all(torch.equal(torch.cat([h[v] for h in halves]), a[v]) for v in (0, 1))
    with pytest.raises(ValueError, match="raise cache_scale"):
        map_views(maps, 8, g, views=1, batch=4, offset=0)


def test_cached_stream_follows_the_frame_stream(data_root):
    cfg = SSPLConfig(data_root=str(data_root), **TINY)
    model = FC.stream_model(cfg)
    FC.prepare_training(cfg, model, progress=False)
    stream = FC.cached_stream(model, cfg, DistInfo(rank=0, world_size=1))
    frames = TrainStream(split_path(cfg, "train"), batch_size=16, seed=5, info=DistInfo(rank=0, world_size=1))
    assert stream.steps == frames.steps == 3 and stream.grid == 6
    want = FC.visual_maps(model, split_path(cfg, "train"), train=True)
    emb = FC.audio_embeddings(model, split_path(cfg, "train")).emb
    for row, (maps, e) in zip(frames.indices(1), stream(1)):
        assert torch.equal(maps, want.maps[want.index[row]]) and torch.equal(e, emb[row])
    v1, v2, audio, encoded = stream.inputs(next(iter(stream(1))), cfg, seeded_generator(5, 1, 0), offset=0,
                                           device="cpu")
    assert v1.shape == v2.shape == (16, 16, 6, 6) and encoded and audio.shape == (16, 3, 128)
    with pytest.raises(ValueError, match="fewer than one batch"):
        CachedStream(want.maps, want.index, emb, grid=6, batch_size=64, seed=5, info=DistInfo(rank=0, world_size=1))


# ----------------------------------------------------------------------------- runs on the cache
def test_parallel_jobs_read_the_one_cache_the_study_built_and_the_runs_score(bench, data_root, tmp_path):
    """The quick profile at a tiny size: two methods trained by two processes on one cache, then scored."""
    for split in ("test_single", "test_multi"):
        shutil.copy2(bench / f"{split}.h5", data_root / f"{split}.h5")
    cfg = load_profile("quick", data_root=str(data_root), **{**TINY, "pretrained": True, "seeds": (5, 6),
                                                             "pretrain_epochs": 1, "pretrain_batch_size": 16, "epochs": 2})
    root = tmp_path / "runs"
    hist = train_methods(cfg, root, ["sspl", "ezvsl"], n_seeds=2, jobs=2, progress=False)
    assert {m: sorted(h) for m, h in hist.items()} == {"sspl": [5, 6], "ezvsl": [5, 6]}
    files = _files(data_root)
    assert len(files) == 5  # one cache for 2 methods x 2 seeds (pretrained encoders: one key)
    started = min((run / "config.json").stat().st_mtime_ns for run in (root / "sspl", root / "ezvsl"))
    assert max(files.values()) < started  # built by the parent before any job started; no job wrote it
    res, data = evaluate_methods(cfg, root, ["sspl", "ezvsl"], n_seeds=2, batch_size=24, device="cpu",
                                 controls=("shuffled", "silent"), progress=False)
    assert {"sspl", "sspl_shuffled_audio", "ezvsl_silent_audio", "center_prior"} <= set(res)
    assert set(_files(data_root)) - set(files) == {n for n in _files(data_root) if n.startswith("test_")}
    for name in ("sspl", "ezvsl"):
        model = runs.load_run(root / name)
        r = res[name]["single"]
        assert 0 <= r["summary"]["fixed"]["ciou"] <= 1 and r["heatmaps"].shape == (data["single"].n, 6, 6)
        uncached, _ = compute_heatmaps(model, data["single"], batch_size=24)
        assert torch.equal(r["heatmaps"], uncached)


def test_a_cached_ddp_run_matches_one_process(data_root, tmp_path):
    """2 CPU processes (torchrun, gloo) on the cache == 1 process: rank slices of the same feature-space views."""
    cfg = SSPLConfig(data_root=str(data_root), **TINY)
    T.fit(cfg, tmp_path / "single", progress=False)
    cache = _files(data_root)
    cfg.save(tmp_path / "cfg.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "sspl_lib.experiments.train", "--config", str(tmp_path / "cfg.json"), "--run-dir", str(tmp_path / "ddp"),
           "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _files(data_root) == cache  # read, not rebuilt
    a = runs.load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    b = runs.load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["model"]
    # AdamW moves every element by up to lr (1e-3) whatever its gradient's size, so a gradient near zero summed in
    # another order (the all-reduce) can move an element by a fraction of lr: half an Adam step is allowed per
    # element, and the tensors as a whole must agree far closer
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=5e-4, msg=lambda m, k=k: f"{k}: {m}")
            assert (a[k] - b[k]).abs().mean() < 1e-5, k
    hist = runs.read_history(tmp_path / "single")[0]
    assert hist["train_loss"] == pytest.approx(runs.read_history(tmp_path / "ddp")[0]["train_loss"], abs=1e-4)
    assert np.isfinite(hist["val_loss"]) and hist["val_loss"] != 0.0


# ----------------------------------------------------------------------------- the visual PCA
def test_fit_pca_is_the_principal_subspace():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 7.0
    x = x @ torch.linalg.qr(torch.randn(6, 6, generator=g))[0]  # a rotated ellipsoid
    mean, basis = fit_pca(x, 3)
    assert torch.equal(basis, fit_pca(x, 3)[1])  # deterministic
    torch.testing.assert_close(basis.T @ basis, torch.eye(3), atol=1e-5, rtol=0)
    _, s, vt = np.linalg.svd((x - x.mean(0)).double().numpy(), full_matrices=False)
    np.testing.assert_allclose(np.abs(vt[:3] @ basis.double().numpy()), np.eye(3), atol=1e-4)
    v = x[:4].T.reshape(1, 6, 2, 2)  # four locations of one map
    torch.testing.assert_close(FixedPCA(6, 3).load_fit(mean, basis)(v).reshape(3, 4).T, (x[:4] - mean) @ basis)
    with pytest.raises(ValueError, match="visual_pca_dim=7: expected 1..6"):
        fit_pca(x, 7)


def test_the_pca_round_trips_through_a_checkpoint(data_root, tmp_path):
    """fit pretrains the PCA into encoders.pt; best.pt holds it; load_run needs no refit and maps the same."""
    cfg = SSPLConfig(data_root=str(data_root), **{**TINY, "pretrained": True, "pretrain_epochs": 1,
                                                  "pretrain_batch_size": 16, "visual_pca_dim": 8})
    assert T.needs_pretraining(cfg) and T.needs_pretraining(cfg.replace(visual_encoder="efficientnet_lite0", audio_encoder="yamnet"))
    run = tmp_path / "run"
    T.fit(cfg, run, progress=False)
    enc = torch.load(run / "encoders.pt", weights_only=True)
    state = runs.load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    assert torch.equal(state["visual_pca.basis"], enc["visual_pca"]["basis"]) and state["visual_pca.basis"].shape \
        == (16, 8)
    assert 0.5 < enc["meta"]["pca_result"]["explained_variance"] <= 1.0
    loaded = runs.load_run(run)
    trained = build_model(SSPLConfig.load(run / "config.json"))
    trained.load_state_dict(state)
    x, sp = torch.rand(12, 3, 48, 48), torch.randn(12, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(loaded.heatmap(x, sp), trained.eval().heatmap(x, sp))
    with pytest.raises(ValueError, match="holds no visual PCA"):
        other = tmp_path / "other.pt"
        torch.save({k: v for k, v in enc.items() if k != "visual_pca"}, other)
        build_model(cfg.replace(encoders_checkpoint=str(other)))


# ----------------------------------------------------------------------------- the config
def test_the_config_refuses_what_cannot_be_cached():
    for train in ("fine_tune", "from_scratch"):
        with pytest.raises(ConfigError, match=f"feature_cache=True with {train}=true: a cache and a fixed PCA"):
            SSPLConfig(feature_cache=True, **{train: True})
        with pytest.raises(ConfigError, match=f"visual_pca_dim=8 with {train}=true"):
            SSPLConfig(visual_pca_dim=8, **{train: True})
    with pytest.raises(ConfigError, match=r"cache_scale=0.9: expected >= 1; visual_pca_dim=-1: expected >= 0|"
                                          r"visual_pca_dim=-1: expected >= 0; cache_scale=0.9: expected >= 1"):
        SSPLConfig(cache_scale=0.9, visual_pca_dim=-1)
    cfg = SSPLConfig()
    assert (cfg.feature_cache, cfg.visual_pca_dim) == (False, 0)
    assert FC.train_size(cfg.replace(img_size=224)) == 256 and FC.train_size(cfg) == 128  # 16x16 maps, 14x14 grid
    with pytest.raises(ValueError, match="visual_pca_dim=200: expected 1..128"):
        build_model(cfg.replace(visual_pca_dim=200))


def test_the_study_estimate_times_a_step_on_cached_features(data_root):
    """The plan's seconds per epoch under feature_cache come from a step on encoded maps (the path fit runs), for
    SSPL and for a method with two views of its own; the frame path is timed as before."""
    from sspl_lib.experiments.estimate import timed_epoch_seconds
    from sspl_lib.experiments.jobs import METHODS

    for method in ("sspl", "ezvsl"):
        cfg = SSPLConfig(**{**TINY, **METHODS[method].overrides, "data_root": str(data_root)})
        cached, frames = timed_epoch_seconds(cfg), timed_epoch_seconds(cfg.replace(feature_cache=False))
        assert 0 < cached < float("inf") and 0 < frames < float("inf"), (method, cached, frames)

"""The explorer widget, headless: tiny runs (random weights, the training module's checkpoint layout) over the
tiny synthetic benchmark; widget values are set from Python and the view is checked against independent
computations (the model's own heatmaps, `sspl_lib.metrics.ciou`, the data module's gt maps)."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch

from sspl_lib.config import SSPLConfig
from sspl_lib.data.gt import vggss_gt_map
from sspl_lib.data.h5 import load_split
from sspl_lib.data.transforms import eval_frame
from sspl_lib.metrics import ciou
from sspl_lib.paths import REPO_ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def make_tiny_run(run_dir, data_root, *, use_pcm: bool = True, seed: int = 0):
    """A run folder written by `fit`: a small SSPL (random small encoders, 64-px frames, 2 PCM cycles) trained
    for one epoch on the tiny benchmark."""
    from sspl_lib.experiments.train import fit

    cfg = SSPLConfig(img_size=64, visual_dim=16, encoder_width=8, audio_hidden=32, out_dim=16, use_pcm=use_pcm,
                     pcm_cycles=2, proj_dim=32, pred_hidden=16, pretrained=False, data_root=str(data_root), seed=seed,
                     epochs=1, batch_size=8, threads=1, val_samples=0)
    fit(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def runs(tiny_benchmark, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"sspl": make_tiny_run(root / "sspl", tiny_benchmark),
            "sspl_nopcm": make_tiny_run(root / "sspl_nopcm", tiny_benchmark, use_pcm=False, seed=1)}


@pytest.fixture(scope="module")
def reference(runs, tiny_benchmark):
    """Independent heatmaps and gt maps: the model of the run and the data module's readers."""
    from sspl_lib.experiments.runs import load_run

    model = load_run(runs["sspl"])
    data = {s: load_split(tiny_benchmark / f"{s}.h5") for s in ("test_single", "test_multi")}
    for d in data.values():
        keep = np.flatnonzero(d["label"] >= 0)
        d.update(frames=d["frames"][keep], spects=d["spects"][keep], boxes=d["boxes"][keep])

    def cycles(split, frame_i, audio_i):
        d = data[split]
        with torch.no_grad():
            return model.heatmap_cycles(eval_frame(torch.from_numpy(d["frames"][frame_i][None]), 64),
                                        torch.from_numpy(d["spects"][audio_i][None]))[0].numpy()

    def gt(split, i):
        return vggss_gt_map([data[split]["boxes"][i]])

    return cycles, gt


@pytest.fixture()
def ex(runs):
    from sspl_lib.explorer.app import Explorer

    torch.set_num_threads(1)
    return Explorer(runs["sspl"])  # the sibling run and the centre prior are found / added by default


def test_builds_with_models_splits_and_state(ex, reference):
    cycles, gt = reference
    assert list(ex.models) == ["sspl", "sspl_nopcm", "centre prior"]
    assert ex.selected == ["sspl", "sspl_nopcm", "centre prior"]
    assert list(ex.splits)[:2] == ["test_single", "test_multi"]
    assert ex.image_bytes.startswith(PNG) and ex.ui.image.value == ex.image_bytes
    assert ex.spectrogram_bytes.startswith(PNG) and ex.audio_bytes.startswith(b"RIFF")
    assert ex.current_index == 0 and ex.ui.cycle.max == 2 and not ex.ui.cycle.disabled
    np.testing.assert_allclose(ex.current_heatmap, cycles("test_single", 0, 0)[-1], rtol=1e-5, atol=1e-6)
    assert ex.current_ciou == ciou(ex.current_heatmap, gt("test_single", 0), "fixed", 0.5)
    assert set(ex.cious) == set(ex.selected) and ex.cious["sspl"] == ex.current_ciou
    assert "cIoU" in ex.ui.info.value and ex.data.ids[0] in ex.ui.sample_id.value


def test_sample_slider_updates_image_and_ciou(ex, reference):
    cycles, gt = reference
    seen = {ex.image_bytes}
    for i in (3, 7, 1):
        ex.ui.sample.value = i
        assert ex.current_index == i and ex.image_bytes not in seen
        seen.add(ex.image_bytes)
        hm = cycles("test_single", i, i)[-1]
        np.testing.assert_allclose(ex.current_heatmap, hm, rtol=1e-5, atol=1e-6)
        assert ex.current_ciou == ciou(ex.current_heatmap, gt("test_single", i))


def test_play_is_seen_by_python(ex):
    ex.ui.play.value = 4
    assert ex.ui.sample.value == 4 and ex.current_index == 4


def test_play_steps_and_stop_as_the_page_sends_them(ex):
    """The messages the page's Play widget sends (`set_state` is what the kernel's comm handler calls): steps
    while playing move the sample; the stop button (pause, then value = min) leaves the sample where it is."""
    play, sample = ex.ui.play, ex.ui.sample
    sample.value = 2  # the user's slider: the player goes on from there
    assert play.value == 2
    play.set_state({"playing": True, "value": 3})  # Play pressed: the first step at once
    play.set_state({"value": 4})
    assert sample.value == 4 and ex.current_index == 4
    play.set_state({"playing": False})  # stop = pause ...
    play.set_state({"value": 0})  # ... and the player's reset to its minimum
    assert sample.value == 4 and ex.current_index == 4 and play.value == 4  # no jump back to sample 0
    play.set_state({"playing": True, "value": 5})  # playing again goes on from the sample shown
    assert sample.value == 5


def test_threshold_and_protocol(ex, reference):
    from sspl_lib.metrics import mask_ciou

    _, gt = reference
    g = gt("test_single", 0)
    values = {}
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        before = ex.image_bytes
        ex.ui.threshold.value = t
        values[t] = ex.current_ciou
        assert ex.current_ciou == ciou(ex.current_heatmap, g, "fixed", t)
        assert mask_ciou(ex.current_mask, g) == ex.current_ciou  # the drawn mask is the scored one
        assert ex.image_bytes != before
    assert len(set(values.values())) > 1
    ex.ui.protocol.value = "median"
    assert ex.ui.threshold.disabled
    assert ex.current_ciou == ciou(ex.current_heatmap, g, "median")
    assert ex.current_mask.mean() == pytest.approx(0.5, abs=0.05)
    assert ex.cious["centre prior"] == ciou(ex.models["centre prior"].map[0], g, "median")


def test_listen_with_another_clip(ex, reference):
    cycles, gt = reference
    own_img, own_hm, own_spec, own_wav = ex.image_bytes, ex.current_heatmap, ex.spectrogram_bytes, ex.audio_bytes
    j = int(np.flatnonzero(ex.data.labels != ex.data.labels[0])[0])
    ex.ui.audio_source.value = j
    assert ex.current_audio_index == j and ex.current_index == 0
    np.testing.assert_allclose(ex.current_heatmap, cycles("test_single", 0, j)[-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ex.current_heatmap, own_hm)
    assert ex.current_ciou == ciou(ex.current_heatmap, gt("test_single", 0))  # scored against this frame's gt
    assert ex.image_bytes != own_img and ex.spectrogram_bytes != own_spec and ex.audio_bytes != own_wav
    assert "counterfactual" in ex.ui.sample_id.value
    k = ex.pick_other_clip(seed=0)
    assert ex.data.labels[k] != ex.data.labels[0] and ex.ui.audio_source.value == k
    ex.ui.own_clip.click()
    assert ex.current_audio_index == 0 and ex.audio_bytes == own_wav
    np.testing.assert_allclose(ex.current_heatmap, own_hm)


def test_pcm_cycle_slider(ex, reference):
    cycles, gt = reference
    ref = cycles("test_single", 0, 0)
    assert ref.shape[0] == 3 and ex.ui.cycle.value == 2
    images = set()
    for c in (2, 1, 0):
        ex.ui.cycle.value = c
        images.add(ex.image_bytes)
        np.testing.assert_allclose(ex.current_heatmap, ref[c], rtol=1e-5, atol=1e-6)
        assert ex.current_ciou == ciou(ex.current_heatmap, gt("test_single", 0))
    assert len(images) == 3
    ex.ui.model_select.value = ("sspl_nopcm", "centre prior")  # no PCM model selected: slider disabled
    assert ex.ui.cycle.disabled
    ex.ui.model_select.value = ("sspl",)
    assert not ex.ui.cycle.disabled


def test_model_selector_side_by_side(ex, reference):
    from PIL import Image
    import io

    _, gt = reference
    widths = {}
    for sel in (("sspl",), ("sspl", "centre prior"), ("sspl", "sspl_nopcm", "centre prior")):
        ex.ui.model_select.value = sel
        widths[len(sel)] = Image.open(io.BytesIO(ex.image_bytes)).size[0]
        assert list(ex.cious) == list(sel)
    assert widths[1] < widths[2] < widths[3]
    ex.ui.model_select.value = ("centre prior",)
    assert ex.current_ciou == ciou(ex.models["centre prior"].map[0], gt("test_single", 0))
    ex.ui.model_select.value = ()  # never empty: falls back to the main run
    assert ex.selected == ["sspl"]


def test_sort_by_ciou_worst_first(ex, reference):
    cycles, gt = reference
    per_sample = np.array([ciou(cycles("test_single", i, i)[-1], gt("test_single", i)) for i in range(len(ex.data))])
    # the sort scores batched forward passes: equal to the per-sample cIoU up to a few boundary pixels
    np.testing.assert_allclose(ex.split_cious("sspl"), per_sample, atol=1e-4)
    ex.ui.sort.value = "worst"
    assert ex.ui.sample.value == 0 and ex.current_ciou == pytest.approx(per_sample.min(), abs=1e-4)
    assert np.all(np.diff(per_sample[ex.order]) >= -1e-4)
    ex.ui.sample.value = 2
    shown = ex.current_index
    ex.ui.threshold.value = 0.3  # re-sorted under the new threshold, the same sample stays on screen
    assert ex.current_index == shown
    ex.ui.sort.value = "none"
    assert ex.current_index == shown and list(ex.order) == list(range(len(ex.data)))


def test_split_selector(ex, reference):
    cycles, gt = reference
    ex.ui.split.value = "test_multi"
    assert ex.data.name == "test_multi" and ex.ui.sample.value == 0 and ex.ui.sample.max == len(ex.data) - 1
    assert len(ex.ui.audio_source.options) == len(ex.data) + 1
    ex.ui.sample.value = 5
    np.testing.assert_allclose(ex.current_heatmap, cycles("test_multi", 5, 5)[-1], rtol=1e-5, atol=1e-6)
    assert ex.current_ciou == ciou(ex.current_heatmap, gt("test_multi", 5))


def test_forward_cache_and_latency(ex):
    ex.ui.sample.value = 2
    misses = ex.cache_misses
    for _ in range(3):  # view-only changes: no forward pass
        ex.ui.opacity.value = 0.3 if ex.ui.opacity.value != 0.3 else 0.6
        ex.ui.colormap.value = "inferno" if ex.ui.colormap.value != "inferno" else "viridis"
    ex.ui.sample.value = 0
    ex.ui.sample.value = 2
    assert ex.cache_misses == misses and ex.cache_hits > 0


def test_compare_runs_found_next_to_the_run_and_in_ablation(tiny_benchmark, tmp_path):
    from sspl_lib.explorer.app import Explorer
    from sspl_lib.explorer.sources import default_compare

    main = make_tiny_run(tmp_path / "sspl", tiny_benchmark)
    make_tiny_run(tmp_path / "ablation" / "sspl" / "seed0", tiny_benchmark, seed=2)
    make_tiny_run(tmp_path / "ablation" / "sspl_wo_pcm" / "seed1", tiny_benchmark, use_pcm=False, seed=3)
    make_tiny_run(tmp_path / "ablation" / "sspl_wo_pcm" / "seed0", tiny_benchmark, use_pcm=False, seed=4)
    (tmp_path / "notebooks").mkdir()  # not a run
    found = default_compare(main)
    assert [(n, p.relative_to(tmp_path).as_posix()) for n, p in found] == [
        ("sspl (ablation)", "ablation/sspl/seed0"), ("sspl_wo_pcm", "ablation/sspl_wo_pcm/seed0")]
    ex = Explorer(main)
    assert list(ex.models) == ["sspl", "sspl (ablation)", "sspl_wo_pcm", "centre prior"]
    assert ex.selected == ["sspl", "sspl_wo_pcm", "centre prior"]  # w/ PCM vs w/o PCM vs the centre prior
    assert list(Explorer(main, compare=[], centre_prior=False).models) == ["sspl"]
    # the header names the run and data without this machine's paths (outside the repository: the base name)
    assert str(tmp_path) not in ex.ui.header.value and "sspl" in ex.ui.header.value
    ex.close()


def test_unfinished_run_is_marked_in_the_chooser_and_header(tiny_benchmark, tmp_path):
    """A run interrupted after 1 of 3 epochs (its files as a killed run leaves them) is marked; a finished one
    and one stopped early by patience are not."""
    from sspl_lib.experiments.train import fit
    from sspl_lib.explorer.app import Explorer

    make_tiny_run(tmp_path / "sspl", tiny_benchmark)
    cfg = SSPLConfig.load(tmp_path / "sspl" / "config.json").replace(epochs=3, seed=7)

    def interrupt(event):
        if event["kind"] == "epoch":  # after the epoch's checkpoint and history are written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "sspl_cut", progress=False, on_event=interrupt)
    ex = Explorer(tmp_path / "sspl", compare=[tmp_path / "sspl_cut"])
    labels = dict((v, k) for k, v in ex.ui.model_select.options)
    assert labels == {"sspl": "sspl", "sspl_cut": "sspl_cut (unfinished: 1 of 3 epochs)", "centre prior": "centre prior"}
    assert "sspl_cut: unfinished run, 1 of 3 epochs trained" in ex.ui.header.value
    assert ex.selected == ["sspl", "sspl_cut", "centre prior"]  # still shown and compared, marked
    ex.close()
    hist = json.loads((tmp_path / "sspl_cut" / "history.json").read_text())
    hist[-1]["stopped"] = True  # the same history ended by early stopping: a complete run
    (tmp_path / "sspl_cut" / "history.json").write_text(json.dumps(hist))
    ex = Explorer(tmp_path / "sspl", compare=json.dumps([str(tmp_path / "sspl_cut")]))  # compare as JSON text
    assert "unfinished" not in ex.ui.header.value and list(ex.models) == ["sspl", "sspl_cut", "centre prior"]
    ex.close()


def test_open_explorer_without_run(tmp_path):
    from sspl_lib.explorer.app import open_explorer

    w = open_explorer(tmp_path / "nope")
    assert "No trained run" in w.value and "make reproduce" in w.value


def test_notebook_has_one_literal_parameters_cell():
    nb = json.loads((REPO_ROOT / "notebooks" / "05_explore.ipynb").read_text())
    params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    tree = ast.parse("".join(params[0]["source"]))
    names = []
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign)
        ast.literal_eval(node.value)
        names.append(node.target.id)
    assert names == ["profile", "config", "runs_dir", "run", "compare", "split"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed (nbval compares outputs)"


@pytest.fixture(scope="module")
def swap_run(tmp_path_factory):
    """A benchmark with a swap split (3 scenes) and a run made by fit on it."""
    from sspl_lib.data.synthetic import generate_benchmark

    root = tmp_path_factory.mktemp("swap")
    bench = generate_benchmark(root / "bench", seed=4, n_train=8, n_val=4, n_test=2, n_labeled=0, frame_size=64,
                               n_swap=3, workers=1, progress=False)
    return make_tiny_run(root / "runs" / "sspl", bench), bench


def test_swap_split_choose_the_heard_object(swap_run):
    import io

    from PIL import Image

    from sspl_lib.experiments.runs import load_run
    from sspl_lib.explorer.app import Explorer
    from sspl_lib.explorer.render import wav_bytes

    run, bench = swap_run
    torch.set_num_threads(1)
    ex = Explorer(run, split="swap", compare=[])
    d = load_split(bench / "swap.h5")
    names = [c["name"] for c in json.loads((bench / "meta.json").read_text())["classes"]]
    rows = np.flatnonzero(d["scene"] == 0)  # the shown sample is row 0: scene 0, object 0
    assert ex.ui.scene_sound.layout.display is None and ex.ui.swap_row.layout.display is None
    assert ex.ui.scene_sound.options == tuple((names[d["label"][r]], int(d["object"][r])) for r in rows)
    assert ex.ui.scene_sound.value == 0
    # the row of maps: the run's model on this frame with each object's sound (independent forward passes)
    model = load_run(run)
    with torch.no_grad():
        ref = [model.heatmap(eval_frame(torch.from_numpy(d["frames"][0][None]), 64),
                             torch.from_numpy(d["spects"][r][None]))[0].numpy() for r in rows]
    assert len(ex.swap_heatmaps) == len(rows)
    for got, want in zip(ex.swap_heatmaps, ref):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    from sspl_lib.av_metrics import box_means, follows

    means = box_means(np.stack(ref), np.repeat(d["all_boxes"][:1], len(rows), 0))
    assert ex.swap_follows == list(follows(means, d["object"][rows]))
    width = Image.open(io.BytesIO(ex.swap_bytes)).size[0]
    assert ex.swap_bytes.startswith(PNG) and width == len(rows) * (224 + 10) + 10
    # hear object 1: its clip plays, the map is the one heard with it, its box is the gt
    own_wav = ex.audio_bytes
    ex.ui.scene_sound.value = 1
    r1 = int(rows[1])
    assert ex.current_index == 0 and ex.current_audio_index == r1
    np.testing.assert_allclose(ex.current_heatmap, ref[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ex.current_gt, vggss_gt_map([d["boxes"][r1]]))
    assert ex.current_ciou == ciou(ex.current_heatmap, vggss_gt_map([d["boxes"][r1]]))
    assert ex.audio_bytes != own_wav and ex.audio_bytes == wav_bytes(d["audio"][r1], 16000)
    assert "another object of this scene" in ex.ui.sample_id.value
    assert ex.choose_sound(0) == 0 and ex.current_audio_index == 0 and ex.ui.scene_sound.value == 0
    with pytest.raises(ValueError, match="object 7 not in this scene"):
        ex.choose_sound(7)
    ex.ui.split.value = "test_single"  # no scenes: the selector and the row are hidden
    assert ex.ui.scene_sound.layout.display == "none" and ex.ui.swap_row.layout.display == "none"
    ex.close()


def test_a_bad_split_is_refused_when_the_explorer_opens_it(tiny_benchmark, tmp_path):
    """The explorer's splits go through the same check as training's: float frames are named, not shown black."""
    import shutil

    import h5py

    from sspl_lib.data.h5 import DataFileError
    from sspl_lib.explorer.sources import SplitData

    bad = tmp_path / "test_single.h5"
    shutil.copy2(tiny_benchmark / "test_single.h5", bad)
    with h5py.File(bad, "r+") as f:
        frames = f["frames"][:].astype(np.float32) / 255
        del f["frames"]
        f["frames"] = frames
    assert len(SplitData(tiny_benchmark / "test_single.h5")) > 0
    with pytest.raises(DataFileError, match=r"test_single\.h5.*frames"):
        SplitData(bad)

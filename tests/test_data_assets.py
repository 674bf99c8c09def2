"""Benchmarks composited from an asset folder: layout and decoding, determinism, boxes vs pasted masks,
the drawn benchmark's fields and files, 16 kHz clips, and a clear error for each kind of bad asset."""

import json

import h5py
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl_lib.data.asset_scene import AREA_RANGE, compose_scene
from sspl_lib.data.asset_sound import loop_to, pitch_tempo
from sspl_lib.data.assets import AssetError, load_assets
from sspl_lib.data.demo_assets import make_demo_assets
from sspl_lib.data.h5 import load_split
from sspl_lib.data.synth_sample import sample_rng
from sspl_lib.data.synthetic import generate_benchmark, main

SIZES = dict(n_train=10, n_val=6, n_test=8, n_labeled=8)
SPLITS = ("train", "val", "test_single", "test_multi", "labeled_images", "labeled_sounds")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_assets(tmp_path_factory.mktemp("assets") / "demo", seed=0, n_classes=4, image_size=64)


@pytest.fixture(scope="module")
def bench(demo, tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("bench") / "a", seed=2, frame_size=64, workers=1, chunk=4,
                              progress=False, assets=demo, **SIZES)


def _iou(a, b) -> float:
    iw, ih = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def _mask_box(mask, size) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size


def test_demo_folder_formats_and_decoding(demo):
    names = sorted(p.name for p in (demo / "classes").iterdir())
    assert names == ["blue_square", "green_cross", "red_disc", "yellow_triangle"]
    recs = sorted(p for p in (demo / "classes").glob("*/*") if p.suffix in (".wav", ".ogg", ".flac"))
    assert {p.suffix for p in recs} == {".wav", ".ogg", ".flac"}
    for p in recs:
        info = sf.info(str(p))
        assert info.samplerate == 44100 and info.channels == 2, p
    assert {Image.open(p).mode for p in (demo / "classes").glob("*/*.webp")} == {"RGBA"}
    assert len(list((demo / "classes").glob("*/*_mask.png"))) == 4
    assert len(list((demo / "backgrounds").glob("*.jpg"))) == 3
    a = load_assets(demo, frame_size=64)
    assert a.names == names and a.n_classes == 4
    for cut in (c for cs in a.cutouts for c in cs):  # cropped to the mask: every border row / column touches it
        al = cut[..., 3]
        assert cut.dtype == np.uint8 and max(cut.shape[:2]) <= 64
        assert al[0].max() > 0 and al[-1].max() > 0 and al[:, 0].max() > 0 and al[:, -1].max() > 0
    p = sorted((demo / "classes" / "red_disc").glob("harmonic_*"))[0]
    rec = a.recordings[2][0]
    assert rec.dtype == np.float32 and abs(len(rec) - sf.info(str(p)).frames * 16000 / 44100) <= 2
    assert [min(b.shape[:2]) for b in a.backgrounds] == [96, 128, 96]  # 149 px shrunk to 2 x frame size


def test_generation_is_deterministic(bench, demo, tmp_path):
    main(["--out", str(tmp_path / "b"), "--assets", str(demo), "--seed", "2", "--frame-size", "64", "--workers", "1",
          "--quiet", "--n-train", "10", "--n-val", "6", "--n-test", "8", "--n-labeled", "8"])  # other chunking too
    for split in SPLITS:
        a, b = load_split(bench / f"{split}.h5"), load_split(tmp_path / "b" / f"{split}.h5")
        assert a.keys() == b.keys()
        for k in a.keys() - {"attrs"}:
            assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), (split, k)
    files = sorted(p.relative_to(bench) for p in (bench / "annotations").rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b/annotations").rglob("*.*"))
    assert all((bench / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    other = generate_benchmark(tmp_path / "c", seed=3, frame_size=64, workers=1, progress=False, assets=demo,
                               n_train=2, n_val=0, n_test=0, n_labeled=0)
    assert load_split(other / "train.h5")["frames"].tobytes() != load_split(bench / "train.h5")["frames"][:2].tobytes()


def test_stored_boxes_are_the_pasted_masks_extent(bench, demo):
    a = load_assets(demo, frame_size=64)
    d = load_split(bench / "test_single.h5")
    for i in range(len(d["ids"])):  # replay the compositor with the sample's generator: same frame, its masks
        rng = sample_rng(2, "test_single", i)
        labels = [int(k) for k in rng.choice(4, 1, replace=False)]
        frame, boxes, masks = compose_scene(rng, 64, a, labels, area_range=AREA_RANGE[1])
        assert frame.tobytes() == d["frames"][i].tobytes() and labels[0] == d["label"][i]
        assert _iou(_mask_box(masks[0], 64), d["boxes"][i]) >= 0.95
    rng = np.random.default_rng(0)
    for _ in range(20):  # multi-object scenes: every object's box is its mask's extent, all inside the frame
        labels = list(rng.choice(4, int(rng.integers(1, 4)), replace=False))
        _, boxes, masks = compose_scene(rng, 64, a, labels, area_range=AREA_RANGE[len(labels)])
        for box, mask in zip(boxes, masks):
            assert _iou(_mask_box(mask, 64), box) >= 0.95 and (box >= 0).all() and (box <= 1).all()
            assert 0.02 < (box[2] - box[0]) * (box[3] - box[1]) < 0.45


def _tiny_folder(root, n_classes=3):
    """By hand: per class a magenta RGBA square cut-out and a 1 s 440 Hz wav; one grey background."""
    for k in range(n_classes):
        d = root / "classes" / f"c{k}"
        d.mkdir(parents=True)
        rgba = np.zeros((40, 50, 4), np.uint8)
        rgba[5:35, 10:40] = (255, 0, 255, 255)
        Image.fromarray(rgba, "RGBA").save(d / "obj.png")
        t = np.arange(22050) / 22050
        sf.write(d / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * (k + 1) * t), 22050)
    (root / "backgrounds").mkdir()
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(root / "backgrounds" / "grey.jpg")
    return root


def test_boxes_match_the_pasted_pixels(tmp_path):
    a = load_assets(_tiny_folder(tmp_path / "t"), frame_size=96)
    rng = np.random.default_rng(1)
    for _ in range(12):
        frame, boxes, _ = compose_scene(rng, 96, a, [int(rng.integers(3))], occlusion_p=0.0)
        f = frame / 255
        ys, xs = np.nonzero((f[..., 0] > 0.55) & (f[..., 2] > 0.55) & (f[..., 1] < 0.4))  # the magenta square
        seen = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 96
        assert _iou(seen, boxes[0]) >= 0.9


def test_same_fields_and_files_as_the_drawn_benchmark(bench, tmp_path):
    drawn = generate_benchmark(tmp_path / "d", seed=2, frame_size=64, workers=1, progress=False, **SIZES)
    for split in SPLITS:
        with h5py.File(bench / f"{split}.h5") as fa, h5py.File(drawn / f"{split}.h5") as fd:
            assert set(fa) == set(fd), split
            for k in fa:
                assert fa[k].shape == fd[k].shape and fa[k].dtype == fd[k].dtype, (split, k)
            assert set(fa.attrs) == set(fd.attrs) | {"assets"} and fa.attrs["source"] == "assets"
    for split in ("val", "test_single", "test_multi"):
        got = sorted(p.name for p in (bench / "annotations" / split).iterdir())
        assert got == sorted(p.name for p in (drawn / "annotations" / split).iterdir())
        ann = json.loads((bench / "annotations" / split / "vggss.json").read_text())
        assert {e["class"] for e in ann} <= {"blue_square", "green_cross", "red_disc", "yellow_triangle"}
    ma, md = (json.loads((r / "meta.json").read_text()) for r in (bench, drawn))
    assert set(ma) == set(md) | {"source", "assets", "assets_fingerprint"} and ma["n_classes"] == 4
    assert [c["name"] for c in ma["classes"]] == ["blue_square", "green_cross", "red_disc", "yellow_triangle"]
    multi = load_split(bench / "test_multi.h5")
    n = (multi["all_labels"] >= 0).sum(1)
    assert set(n) <= {2, 3} and all(len(set(r[r >= 0])) == len(r[r >= 0]) for r in multi["all_labels"])


def test_clips_are_16k_with_the_expected_log_mel(bench):
    from sspl_lib.audio import batch_log_mel

    d = load_split(bench / "labeled_sounds.h5")
    assert d["attrs"]["sample_rate"] == 16000 and d["audio"].shape == (8, 48000) and d["audio"].dtype == np.float32
    assert d["spects"].shape == (8, 3, 96, 64) and np.abs(d["audio"]).max() <= 1
    import torch

    np.testing.assert_allclose(d["spects"], batch_log_mel(torch.from_numpy(d["audio"])).numpy(), atol=1e-4)
    am = np.flatnonzero(d["label"] == 3)  # yellow_triangle: an am_tone of 900-1300 Hz, shifted by <= 1 semitone
    assert len(am)
    spec = np.abs(np.fft.rfft(d["audio"][am[0]] - d["audio"][am[0]].mean()))
    assert 840 < np.argmax(spec[100:]) / 3 + 100 / 3 < 1400


def test_loop_crossfade_and_pitch_tempo():
    looped = loop_to(np.ones(1000, np.float32), 5000)
    assert len(looped) >= 5000
    np.testing.assert_allclose(looped[:5000], 1, atol=1e-6)  # raised-cosine fades sum to one at every seam
    tone = np.sin(2 * np.pi * 440 * np.arange(64000) / 16000).astype(np.float32)
    for semitones, tempo, hz in ((1.0, 1.0, 466.2), (0.0, 1.08, 440.0), (-1.0, 0.92, 415.3)):
        y = pitch_tempo(tone, semitones, tempo)
        assert y.shape == (48000,)
        assert abs(np.argmax(np.abs(np.fft.rfft(y[4000:44000]))) * 16000 / 40000 - hz) < 2, (semitones, tempo)


def _break(root, case):
    c0 = root / "classes" / "c0"
    if case == "no image":
        (c0 / "obj.png").unlink()
        return c0
    if case == "no sound":
        (c0 / "tone.wav").unlink()
        return c0
    if case == "no alpha":
        Image.open(c0 / "obj.png").convert("RGB").save(c0 / "obj.png")
        return c0 / "obj.png"
    if case == "unreadable":
        (c0 / "tone.wav").write_bytes(b"RIFF not really a wave file")
        return c0 / "tone.wav"
    if case == "silent":
        sf.write(c0 / "tone.wav", np.zeros(8000), 16000)
        return c0 / "tone.wav"
    if case == "two classes":
        for p in (root / "classes" / "c2").iterdir():
            p.unlink()
        (root / "classes" / "c2").rmdir()
        return root / "classes"
    (root / "backgrounds" / "grey.jpg").unlink()  # "no backgrounds"
    return root / "backgrounds"


@pytest.mark.parametrize("case", ["no image", "no sound", "no alpha", "unreadable", "silent", "two classes",
                                  "no backgrounds"])
def test_bad_assets_name_the_file(tmp_path, case):
    root = _tiny_folder(tmp_path / "bad")
    culprit = _break(root, case)
    with pytest.raises(AssetError) as e:
        generate_benchmark(tmp_path / "out", frame_size=32, workers=1, progress=False, assets=root,
                           n_train=2, n_val=0, n_test=0, n_labeled=0)
    assert str(e.value).startswith(str(culprit)), str(e.value)
    assert not list((tmp_path / "out").glob("*.h5*"))


def test_mask_file_and_overview(tmp_path, bench):
    import matplotlib

    matplotlib.use("Agg")
    from sspl_lib.data.overview import class_players, class_scenes, ensure_benchmark

    root = _tiny_folder(tmp_path / "m")
    c0 = root / "classes" / "c0"
    rgba = np.asarray(Image.open(c0 / "obj.png"))
    Image.fromarray(rgba[..., :3]).save(c0 / "obj.png")  # RGB + a same-named mask
    Image.fromarray(rgba[..., 3]).save(c0 / "obj_mask.png")
    cut = load_assets(root, frame_size=64).cutouts[0][0]
    assert cut.shape == (30, 30, 4) and (cut[..., 3] == 255).all() and (cut[..., :3] == (255, 0, 255)).all()

    fig = class_scenes(bench, "test_multi")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["0: blue_square", "1: green_cross", "2: red_disc", "3: yellow_triangle"]
    assert any(ax.patches for ax in fig.axes)
    html = class_players(bench).data
    assert html.count("<audio") == 4 and all(n in html for n in ("blue_square", "yellow_triangle"))

    kw = dict(seed=0, frame_size=32, workers=1, progress=False, assets=root, n_train=2, n_val=0, n_test=0, n_labeled=0)
    out, reused = ensure_benchmark(tmp_path / "e", **kw)
    assert not reused and ensure_benchmark(tmp_path / "e", **kw)[1]
    sf.write(root / "classes" / "c1" / "more.wav", np.sin(np.arange(8000) / 3), 16000)  # assets changed
    assert not ensure_benchmark(tmp_path / "e", **kw)[1]


def test_off_screen_clips_and_class_count(demo):
    from sspl_lib.data.synth_sample import render_sample

    a = load_assets(demo, frame_size=32)
    infos = [render_sample(4, "train", i, frame_size=32, off_screen_frac=0.5, assets=a) for i in range(16)]
    silent = [(w, i) for _, w, i in infos if i["label"] == -1]
    assert 2 <= len(silent) <= 14 and all(np.isnan(i["box"]).all() and w.shape == (48000,) for w, i in silent)
    assert all(i["audio"] == "noise" or int(i["audio"].split()[1]) not in i["all_labels"] for _, i in silent)
    with pytest.raises(ValueError, match="n_classes=5 but .*4 class folders"):
        generate_benchmark(demo.parent / "never", n_classes=5, assets=demo, frame_size=32, progress=False)


@pytest.mark.parametrize("ext, rate, channels", [("mp3", 48000, 2), ("flac", 8000, 1), ("ogg", 22050, 3)])
def test_recordings_of_any_format_rate_and_channels(tmp_path, ext, rate, channels):
    from sspl_lib.data.assets import read_recording

    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)  # 1 s of 440 Hz
    sf.write(tmp_path / f"r.{ext}", np.repeat(x[:, None], channels, 1), rate)
    y = read_recording(tmp_path / f"r.{ext}")
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1200  # mp3 adds encoder padding
    seg = y[:16000]
    assert abs(np.argmax(np.abs(np.fft.rfft(seg))) * 16000 / len(seg) - 440) <= 2

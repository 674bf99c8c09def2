"""Preparation from raw media written here (wav, jpg/png, mp4), broken inputs, resume after interruption."""

import csv
import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sspl_lib.data.h5 import DataFileError, load_split
from sspl_lib.data.media import MediaError, read_audio, read_image, video_middle_frame
from sspl_lib.data.prepare import find_items, prepare_folder

SR = 16000


def tone(sec, sr, f=440.0, ch=1):
    t = np.arange(int(sec * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * f * t) + 0.05 * np.sin(2 * np.pi * 3 * f * t)
    return np.stack([x, 0.5 * x], 1).astype(np.float32) if ch == 2 else x.astype(np.float32)


def make_mp4(path, n_frames=12, fps=6, size=48, seconds=2.0):
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=fps)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=SR)
        a.layout = "mono"
        for i in range(n_frames):  # frame i is uniformly grey i*20: the middle frame is ~120
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((size, size, 3), i * 20, np.uint8), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        x = tone(seconds, SR)
        for s in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(x[None, s:s + 1024], format="flt", layout="mono")
            fr.sample_rate, fr.pts = SR, s
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A raw folder with good and broken inputs; returns (src, expected ok ids, expected skipped ids)."""
    src = tmp_path_factory.mktemp("raw")
    fr, au, ann = src / "frames", src / "audio", src / "ann"
    for d in (fr, au, ann):
        d.mkdir()
    Image.fromarray(rgb(40, 40, 0)).save(fr / "a_good.jpg")
    sf.write(au / "a_good.wav", tone(4.0, SR), SR)
    Image.fromarray(rgb(30, 50, 1)).save(fr / "b_stereo44k_oddsize.jpg")
    sf.write(au / "b_stereo44k_oddsize.wav", tone(1.0, 44100, ch=2), 44100)  # short: tiled
    Image.fromarray(rgb(32, 32, 2)[..., 0]).convert("L").save(fr / "c_gray.jpg")
    sf.write(au / "c_gray.wav", tone(3.0, 22050), 22050)
    Image.fromarray(np.dstack([rgb(32, 32, 3), np.full((32, 32), 128, np.uint8)]), "RGBA").save(fr / "d_rgba.png")
    sf.write(au / "d_rgba.flac", tone(3.0, SR), SR)
    (fr / "e_garbage.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg" * 20)
    sf.write(au / "e_garbage.wav", tone(3.0, SR), SR)
    Image.fromarray(rgb(32, 32, 5)).save(fr / "f_emptywav.jpg")
    sf.write(au / "f_emptywav.wav", np.zeros(0, np.float32), SR)
    Image.fromarray(rgb(32, 32, 6)).save(fr / "g_silent.jpg")
    sf.write(au / "g_silent.wav", np.zeros(SR * 3, np.float32), SR)
    Image.fromarray(rgb(32, 32, 7)).save(fr / "h_noaudio.jpg")
    Image.fromarray(rgb(32, 32, 8)).save(fr / "i_truncwav.jpg")
    sf.write(au / "i_truncwav.wav", tone(3.0, SR), SR)
    (au / "i_truncwav.wav").write_bytes((au / "i_truncwav.wav").read_bytes()[:30])
    make_mp4(src / "j_video.mp4")
    make_mp4(src / "k_truncated.mp4")
    data = (src / "k_truncated.mp4").read_bytes()
    (src / "k_truncated.mp4").write_bytes(data[: len(data) // 4])
    for i in ("a_good", "b_stereo44k_oddsize", "c_gray", "d_rgba", "g_silent"):
        (ann / f"{i}.xml").write_text("<annotation><object><bbox><label>x</label><xmin>10</xmin><ymin>20</ymin>"
                                      "<xmax>200</xmax><ymax>300</ymax></bbox></object></annotation>")
    ok = ["a_good", "b_stereo44k_oddsize", "c_gray", "d_rgba", "g_silent", "j_video"]
    bad = ["e_garbage", "f_emptywav", "h_noaudio", "i_truncwav", "k_truncated"]
    return src, ok, bad


def test_decoders(raw):
    src, _, _ = raw
    assert read_image(src / "frames/c_gray.jpg").shape == (32, 32, 3)
    assert read_image(src / "frames/d_rgba.png").shape == (32, 32, 3)
    w, sr = read_audio(src / "audio/b_stereo44k_oddsize.wav")
    assert w.ndim == 1 and sr == 44100 and len(w) == 44100
    assert abs(float(video_middle_frame(src / "j_video.mp4").mean()) - 120) < 12
    w, sr = read_audio(src / "j_video.mp4")
    assert sr == SR and abs(len(w) - 2 * SR) < 2048 and np.abs(w).max() > 0.3
    for bad, fn in (("frames/e_garbage.jpg", read_image), ("audio/i_truncwav.wav", read_audio),
                    ("k_truncated.mp4", video_middle_frame)):
        with pytest.raises(MediaError, match=bad.split("/")[-1]):
            fn(src / bad)


def test_prepare_reports_every_item(raw, tmp_path):
    src, ok, bad = raw
    assert [i.id for i in find_items(src)] == sorted(ok + bad)
    out = tmp_path / "p.h5"
    rep = prepare_folder(src, out, frame_size=32, workers=2, progress=False)
    d = load_split(out)
    assert d["ids"] == ok and rep.n_ok == len(ok)
    assert [i for i, _ in rep.skipped] == bad
    reasons = dict(rep.skipped)
    assert "e_garbage.jpg" in reasons["e_garbage"] and "empty audio" in reasons["f_emptywav"]
    assert "no audio file" in reasons["h_noaudio"] and "i_truncwav.wav" in reasons["i_truncwav"]
    assert "k_truncated.mp4" in reasons["k_truncated"]
    assert [i for i, _ in rep.flagged] == ["g_silent"]
    assert d["frames"].shape == (6, 32, 32, 3) and d["frames"].dtype == np.uint8
    assert d["audio"].shape == (6, 48000) and d["spects"].shape == (6, 3, 96, 64)
    assert np.allclose(d["audio"].min(1)[[0, 1, 2, 3, 5]], -1) and (d["audio"].max(1) < 1).all()
    assert (d["audio"][4] == -1).all()  # silent: kept, constant clip
    with open(tmp_path / "p.skipped.csv") as f:
        assert [r[0] for r in csv.reader(f)][1:] == bad
    with open(tmp_path / "p.report.csv") as f:
        assert len(list(csv.reader(f))) == 1 + len(ok) + len(bad)
    for leftover in ("p.h5.journal", "p.h5.parts", "p.h5.partial"):
        assert not (tmp_path / leftover).exists()


def test_annotations_and_silent_skip(raw, tmp_path):
    src, ok, _ = raw
    rep = prepare_folder(src, tmp_path / "g.h5", frame_size=32, workers=1, annotations=src / "ann",
                         silent="skip", progress=False)
    d = load_split(tmp_path / "g.h5")
    assert d["ids"] == ["a_good", "b_stereo44k_oddsize", "c_gray", "d_rgba"]
    reasons = dict(rep.skipped)
    assert "silent audio" in reasons["g_silent"] and "no annotation" in reasons["j_video"]
    assert all("clipped" in w for _, w in rep.flagged) and len(rep.flagged) == 4
    hand = np.zeros((224, 224), np.float32)
    hand[17:224, 8:175] = 0.5  # int(224*20/256)=17, ymax 300 -> clipped to 256 -> 224; 0.5: one annotator
    np.testing.assert_array_equal(d["gt"][0], hand)


def _same(a, b):
    da, db = load_split(a), load_split(b)
    assert da["ids"] == db["ids"]
    for k in ("frames", "audio", "spects"):
        assert da[k].tobytes() == db[k].tobytes(), k


def test_resume_after_interruption_gives_the_same_file(raw, tmp_path):
    src, ok, bad = raw
    full = tmp_path / "full.h5"
    prepare_folder(src, full, frame_size=32, workers=1, progress=False)
    out = tmp_path / "r.h5"
    r1 = prepare_folder(src, out, frame_size=32, workers=1, stop_after=4, chunk=2, progress=False)
    assert r1.interrupted and not out.exists() and (tmp_path / "r.h5.journal").exists()
    assert sorted(p.name for p in (tmp_path / "r.h5.parts").iterdir()) == ["seg-000000.npz", "seg-000001.npz"]
    # a CLI run in a subprocess continues, stops again ...
    cmd = [sys.executable, "-m", "sspl_lib.data.prepare", "--src", str(src), "--out", str(out),
           "--frame-size", "32", "--workers", "1", "--stop-after", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "interrupted" in res.stdout, res.stderr
    # ... a segment written after the last journal line (a kill between the two writes) is redone
    parts = tmp_path / "r.h5.parts"
    (parts / "seg-000003.npz").write_bytes((parts / "seg-000000.npz").read_bytes())
    (parts / "seg-000004.npz.tmp").write_bytes(b"half a segment")
    r3 = prepare_folder(src, out, frame_size=32, workers=2, progress=False)
    assert not r3.interrupted and r3.n_ok == len(ok) and [i for i, _ in r3.skipped] == bad
    _same(full, out)
    assert not parts.exists() and not (tmp_path / "r.h5.journal").exists()


def test_damaged_segment_is_prepared_again(raw, tmp_path):
    src, ok, _ = raw
    out = tmp_path / "c.h5"
    prepare_folder(src, out, frame_size=32, workers=1, stop_after=6, chunk=2, progress=False)
    seg = tmp_path / "c.h5.parts" / "seg-000001.npz"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the checksum in the journal no longer matches
    seg.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"seg-000001\.npz: missing or not as journaled; it and the 1 later"):
        prepare_folder(src, out, frame_size=32, workers=1, progress=False)
    full = tmp_path / "full.h5"
    prepare_folder(src, full, frame_size=32, workers=1, progress=False)
    assert load_split(out)["ids"] == ok
    _same(full, out)
    out.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(DataFileError, match="c.h5"):
        load_split(out)


def test_never_overwrites_a_file_it_did_not_write(raw, tmp_path):
    src, ok, _ = raw
    import h5py

    out = tmp_path / "mine.h5"
    with h5py.File(out, "w") as f:  # somebody's own HDF5 file
        f["x"] = np.arange(3)
    with pytest.raises(FileExistsError, match=r"mine\.h5: exists and was not written by sspl_lib\.data\.prepare"):
        prepare_folder(src, out, frame_size=32, workers=1, progress=False)
    notes = tmp_path / "notes.h5"
    notes.write_text("not even HDF5")
    with pytest.raises(FileExistsError, match=r"notes\.h5: exists"):
        prepare_folder(src, notes, frame_size=32, workers=1, progress=False)
    assert notes.read_text() == "not even HDF5"
    with h5py.File(out, "r") as f:
        assert list(f["x"][:]) == [0, 1, 2]
    other = tmp_path / "other.h5"
    (tmp_path / "other.h5.partial").write_bytes(b"somebody else's partial download")
    with pytest.raises(FileExistsError, match=r"other\.h5\.partial: exists .*no journal"):
        prepare_folder(src, other, frame_size=32, workers=1, progress=False)
    assert (tmp_path / "other.h5.partial").read_bytes() == b"somebody else's partial download"
    (tmp_path / "x.h5.journal").write_text("id,status,detail\n")  # not our journal
    with pytest.raises(ValueError, match=r"x\.h5\.journal: not a journal of sspl_lib\.data\.prepare"):
        prepare_folder(src, tmp_path / "x.h5", frame_size=32, workers=1, progress=False)
    # its own earlier result is replaced, and carries the marker
    ours = tmp_path / "ours.h5"
    prepare_folder(src, ours, frame_size=32, workers=1, progress=False)
    prepare_folder(src, ours, frame_size=32, workers=2, progress=False)
    d = load_split(ours)
    assert d["ids"] == ok and d["attrs"]["sspl_prepared"] == "sspl_lib.data.prepare"


def test_resume_with_other_parameters_is_refused(raw, tmp_path):
    src, ok, _ = raw
    out = tmp_path / "p.h5"
    prepare_folder(src, out, frame_size=32, workers=1, stop_after=3, progress=False)
    with pytest.raises(ValueError, match=r"p\.h5\.journal: the interrupted run used other parameters \(frame_size: "
                                         r"32 then, 24 now\)"):
        prepare_folder(src, out, frame_size=24, workers=1, progress=False)
    rep = prepare_folder(src, out, frame_size=24, workers=1, resume=False, progress=False)  # start over
    assert rep.n_ok == len(ok) and load_split(out)["frames"].shape[1:] == (24, 24, 3)


def test_an_unexpected_per_item_exception_is_a_logged_skip(raw, tmp_path):
    """A VGG-SS box with 3 numbers makes numpy's reshape raise inside the worker: skipped with its reason."""
    import json

    src, ok, _ = raw
    boxes = {i: [[0.1, 0.2, 0.6, 0.7]] for i in ok}
    boxes["c_gray"] = [[0.1, 0.2, 0.6]]
    ann = tmp_path / "vggss.json"
    ann.write_text(json.dumps([{"file": i, "class": "x", "bbox": b} for i, b in boxes.items()]))
    rep = prepare_folder(src, tmp_path / "u.h5", frame_size=32, workers=2, annotations=ann, progress=False)
    reasons = dict(rep.skipped)
    assert "c_gray.jpg: ValueError: cannot reshape array of size 3" in reasons["c_gray"]
    assert load_split(tmp_path / "u.h5")["ids"] == [i for i in ok if i != "c_gray"]
    with open(tmp_path / "u.skipped.csv") as f:
        assert ["c_gray", reasons["c_gray"]] in list(csv.reader(f))


def test_sigkill_midway_then_resume(tmp_path):
    import os
    import signal
    import time

    src = tmp_path / "many"
    (src / "frames").mkdir(parents=True)
    (src / "audio").mkdir()
    for k in range(40):
        Image.fromarray(rgb(24, 24, k)).save(src / "frames" / f"{k:03d}.jpg")
        sf.write(src / "audio" / f"{k:03d}.wav", tone(2.0, 44100, f=200 + 10 * k), 44100)
    out = tmp_path / "k.h5"
    journal = tmp_path / "k.h5.journal"
    cmd = [sys.executable, "-m", "sspl_lib.data.prepare", "--src", str(src), "--out", str(out),
           "--frame-size", "24", "--workers", "1", "--chunk", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    if killed:
        assert not out.exists() and 3 <= len(journal.read_text().splitlines()) <= 41  # header + one per item
    rep = prepare_folder(src, out, frame_size=24, workers=2, progress=False)
    assert rep.n_ok == 40
    full = tmp_path / "full.h5"
    prepare_folder(src, full, frame_size=24, workers=1, progress=False)
    _same(full, out)
    if not killed:
        pytest.skip("the run finished before it could be killed (the resume path was not exercised)")

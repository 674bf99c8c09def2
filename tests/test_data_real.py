"""Readers of the official data layouts, on small files written in that layout."""

import json

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from sspl_lib.data.h5 import AVDataset, DataFileError, load_split
from sspl_lib.data.real import FlickrTest, FlickrTrain, VGGSSTest, pack_official_h5


def _triplet(folder, stem, n, prefix="train", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    frames = rng.integers(0, 256, (n, 64, 64, 3)).astype(np.float32)  # official: float32 0..255
    with h5py.File(folder / f"h5py_{prefix}_frames{stem}.h5", "w") as f:
        f[f"{prefix}_frames"] = frames
    with h5py.File(folder / f"h5py_{prefix}_audios{stem}.h5", "w") as f:
        f[f"{prefix}_audios"] = rng.uniform(-1, 1, (n, 48000)).astype(np.float32)
    with h5py.File(folder / f"h5py_{prefix}_spects{stem}.h5", "w") as f:
        f[f"{prefix}_spects"] = rng.normal(size=(n, 3, 96, 64)).astype(np.float32)
    return frames


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("Datasets")
    fl = root / "SoundNet_Flickr"
    frames10k = _triplet(fl / "10k_unlabeled", "_10k", 6)
    for i in range(1, 11):
        _triplet(fl / "144k_unlabeled", f"_144k_{i}", 2, seed=i)
    lab = fl / "5k_labeled"
    (lab / "Annotations").mkdir(parents=True)
    (lab / "Data" / "frames").mkdir(parents=True)
    (lab / "Data" / "audio").mkdir(parents=True)
    ids = ["1001", "1002"]
    for k, i in enumerate(ids):
        Image.fromarray(np.full((80, 60, 3), 100 + k, np.uint8)).save(lab / "Data/frames" / f"{i}.jpg")
        sf.write(lab / "Data/audio" / f"{i}.wav", np.sin(np.arange(16000 * 5) * 0.1).astype(np.float32), 16000)
        (lab / "Annotations" / f"{i}.xml").write_text(
            "<annotation><object><bbox><label>1</label><xmin>0</xmin><ymin>0</ymin><xmax>128</xmax>"
            "<ymax>128</ymax></bbox></object></annotation>")
    (fl / "flickr_test249_in5k.csv").write_text("1001,0\n1002,1\n")
    vg = root / "VGG-Sound"
    _triplet(vg / "5k_labeled" / "Data", "", 3, prefix="test")
    (vg / "5k_labeled" / "Annotations").mkdir(parents=True)
    (vg / "5k_labeled" / "Annotations" / "vggss_test_5158.json").write_text(json.dumps(
        [{"file": f"v{k}", "class": "c", "bbox": [[0.1 * k, 0, 0.5, 0.5]]} for k in range(4)]))
    (vg / "vggss_test_4692.csv").write_text("v0\nv1\nv2\n")
    return root, frames10k


def test_flickr_train_10k_and_144k(datasets):
    root, frames = datasets
    ds = FlickrTrain(root, subset="10k", img_size=32)
    assert len(ds) == 6
    it = ds[2]
    assert it["frame_view1"].shape == (3, 32, 32) and it["spect"].shape == (3, 96, 64)
    big = FlickrTrain(root / "SoundNet_Flickr", subset="144k", img_size=32)
    assert len(big) == 20 and big[19]["index"] == 19
    with h5py.File(root / "SoundNet_Flickr/144k_unlabeled/h5py_train_spects_144k_10.h5") as f:
        np.testing.assert_array_equal(big[19]["spect"].numpy(), f["train_spects"][1])


def test_flickr_test_and_vggss_test(datasets):
    root, _ = datasets
    ft = FlickrTest(root, img_size=32)
    it = ft[1]
    assert it["id"] == "1002" and it["frame"].shape == (3, 32, 32) and it["spect"].shape == (3, 96, 64)
    assert it["gt"].shape == (224, 224) and float(it["gt"].max()) == 0.5
    vt = VGGSSTest(root, img_size=32)
    assert len(vt) == 3 and vt[2]["id"] == "v2"
    g = vt[2]["gt"].numpy()
    hand = np.zeros((224, 224), np.float32)
    hand[0:112, int(224 * 0.2):112] = 1
    np.testing.assert_array_equal(g, hand)


def test_pack_official_into_sspl_format(datasets, tmp_path):
    root, frames = datasets
    out = pack_official_h5(root, tmp_path / "flickr10k.h5", dataset="flickr", subset="10k", chunk=4)
    d = load_split(out)
    np.testing.assert_array_equal(d["frames"], frames.astype(np.uint8))
    assert d["spects"].shape == (6, 3, 96, 64) and d["attrs"]["source"] == "flickr" and d["attrs"]["frame_size"] == 64
    ds = AVDataset(out, img_size=32, train=True)
    assert ds[5]["frame_view2"].shape == (3, 32, 32)
    test = pack_official_h5(root, tmp_path / "vggss.h5", dataset="vggsound", subset="test")
    dt = load_split(test)
    assert dt["ids"] == ["v0", "v1", "v2"] and dt["gt"].shape == (3, 224, 224)
    it = AVDataset(test, img_size=32, train=False)[2]
    torch.testing.assert_close(it["gt"], VGGSSTest(root)[2]["gt"])


def test_missing_files_say_where_they_go(tmp_path):
    with pytest.raises(DataFileError, match=r"h5py_train_frames_10k\.h5: missing.*SSPL README"):
        FlickrTrain(tmp_path, subset="10k")
    with pytest.raises(DataFileError, match=r"vggss_test_4692\.csv: missing"):
        VGGSSTest(tmp_path)

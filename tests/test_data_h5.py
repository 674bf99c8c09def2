"""Packed HDF5 format: writer round trip, atomicity, clear errors, AVDataset items, transforms."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from sspl_lib.data.h5 import AVDataset, DataFileError, H5Writer, load_split, open_h5, read_ids
from sspl_lib.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, crop_flip, crop_flip_params,
                                      denormalize, eval_frame, random_views, train_views)


def _batch(n, start=0, s=32):
    rng = np.random.default_rng(start)
    return {"ids": [f"id{start + i}" for i in range(n)],
            "frames": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
            "audio": rng.uniform(-1, 1, (n, 48000)).astype(np.float32),
            "spects": rng.normal(size=(n, 3, 96, 64)).astype(np.float32),
            "label": np.arange(start, start + n, dtype=np.int16),
            "boxes": rng.uniform(0, 1, (n, 4)).astype(np.float32)}


def test_writer_round_trip_and_atomic_rename(tmp_path):
    out = tmp_path / "x.h5"
    w = H5Writer(out, attrs={"frame_size": 32, "source": "test"})
    w.append(_batch(3))
    w.append(_batch(2, start=3))
    assert (tmp_path / "x.h5.partial").exists() and not out.exists() and len(w) == 5
    w.close()
    assert out.exists() and not (tmp_path / "x.h5.partial").exists()
    d = load_split(out)
    a, b = _batch(3), _batch(2, start=3)
    assert d["ids"] == a["ids"] + b["ids"]
    for k in ("frames", "audio", "spects", "label", "boxes"):
        np.testing.assert_array_equal(d[k], np.concatenate([a[k], b[k]]))
        assert d[k].dtype == a[k].dtype
    assert d["attrs"]["format"] == "sspl-h5/1" and d["attrs"]["source"] == "test"


def test_ids_are_fixed_length_utf8_and_old_variable_length_files_still_read(tmp_path):
    out = tmp_path / "ids.h5"
    with H5Writer(out) as w:
        w.append(_batch(2) | {"ids": ["a", "bé"]})
        w.append(_batch(1, start=2) | {"ids": ["a_much_longer_id_ü"]})  # wider than before: the dataset widens
        w.append(_batch(1, start=3) | {"ids": ["z"]})
    with h5py.File(out, "r") as f:
        assert f["ids"].dtype == np.dtype("S19") and h5py.check_string_dtype(f["ids"].dtype).length == 19  # not vlen
        assert f["ids"][1] == "bé".encode()
    assert read_ids(out) == ["a", "bé", "a_much_longer_id_ü", "z"]
    assert all(type(i) is str for i in load_split(out)["ids"])
    assert AVDataset(out, img_size=24, train=False)[2]["id"] == "a_much_longer_id_ü"
    old = tmp_path / "old.h5"  # written by an earlier version: variable-length utf-8 strings
    with h5py.File(old, "w") as f:
        f.create_dataset("ids", data=["x1", "ÿ2"], dtype=h5py.string_dtype("utf-8"))
        f["frames"] = np.zeros((2, 8, 8, 3), np.uint8)
        f["spects"] = np.zeros((2, 3, 96, 64), np.float32)
    assert read_ids(old) == ["x1", "ÿ2"] and all(type(i) is str for i in read_ids(old))
    assert AVDataset(old, img_size=8, train=False)[1]["id"] == "ÿ2"


def test_writer_exception_keeps_partial(tmp_path):
    with pytest.raises(RuntimeError):
        with H5Writer(tmp_path / "y.h5") as w:
            w.append(_batch(2))
            raise RuntimeError("boom")
    assert not (tmp_path / "y.h5").exists() and (tmp_path / "y.h5.partial").exists()


def test_truncated_and_missing_files_raise_named_errors(tmp_path):
    with H5Writer(tmp_path / "ok.h5") as w:
        w.append(_batch(4))
    raw = (tmp_path / "ok.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataFileError, match=r"cut\.h5.*not a readable sspl HDF5 file"):
        load_split(tmp_path / "cut.h5")
    with pytest.raises(DataFileError, match="cut.h5"):
        AVDataset(tmp_path / "cut.h5", img_size=24)
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(DataFileError, match="garbage.h5"):
        open_h5(tmp_path / "garbage.h5")
    with pytest.raises(DataFileError, match="absent.h5: file not found"):
        open_h5(tmp_path / "absent.h5")
    with pytest.raises(DataFileError, match=r"ok\.h5: no dataset 'gt'"):
        load_split(tmp_path / "ok.h5", ["gt"])
    with h5py.File(tmp_path / "nospect.h5", "w") as f:
        f["frames"] = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(DataFileError, match=r"nospect\.h5: no dataset 'spects'"):
        AVDataset(tmp_path / "nospect.h5")


def test_avdataset_train_items(tiny_benchmark):
    ds = AVDataset(tiny_benchmark / "train.h5", img_size=56, train=True, seed=1)
    assert len(ds) == 40
    it = ds[3]
    assert set(it) == {"frame_view1", "frame_view2", "spect", "index"}
    assert it["frame_view1"].shape == (3, 56, 56) and it["frame_view1"].dtype == torch.float32
    assert it["spect"].shape == (3, 96, 64) and it["index"] == 3
    assert not torch.equal(it["frame_view1"], it["frame_view2"])
    again = AVDataset(tiny_benchmark / "train.h5", img_size=56, train=True, seed=1)[3]
    assert torch.equal(it["frame_view1"], again["frame_view1"]) and torch.equal(it["frame_view2"], again["frame_view2"])
    other = AVDataset(tiny_benchmark / "train.h5", img_size=56, train=True, seed=2)[3]
    assert not torch.equal(it["frame_view1"], other["frame_view1"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["frame_view1"], it["frame_view1"])
    # normalization: undoing it gives pixels in [0, 1] with the stored image's mean colour
    pix = denormalize(it["frame_view1"])
    assert 0 <= pix.min() and pix.max() <= 1
    # picklable before and after opening; works in DataLoader workers
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2[5]["spect"], ds[5]["spect"])
    dl = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    b = next(iter(dl))
    assert b["frame_view1"].shape == (8, 3, 56, 56) and b["spect"].shape == (8, 3, 96, 64)


def test_avdataset_eval_items(tiny_benchmark):
    ds = AVDataset(tiny_benchmark / "test_single.h5", img_size=48, train=False)
    it = ds[0]
    assert {"frame", "spect", "index", "id", "box", "label"} <= set(it)
    assert it["frame"].shape == (3, 48, 48) and it["box"].shape == (4,) and it["label"].dtype == torch.int64
    raw = load_split(tiny_benchmark / "test_single.h5", ["frames", "boxes"])
    ref = torch.nn.functional.interpolate(torch.from_numpy(raw["frames"][0]).permute(2, 0, 1)[None].float(),
                                          size=(48, 48), mode="bicubic", antialias=True)[0].clamp(0, 255).round()
    m, s = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(it["frame"], (ref / 255 - m) / s)
    np.testing.assert_array_equal(it["box"].numpy(), raw["boxes"][0])
    raw_ds = AVDataset(tiny_benchmark / "train.h5", raw_frames=True)
    assert raw_ds[0]["frame_uint8"].dtype == torch.uint8


def test_random_crop_flip_is_a_crop():
    img = torch.arange(3 * 20 * 20, dtype=torch.float32).reshape(1, 3, 20, 20).expand(64, -1, -1, -1)
    cfg = AugmentConfig(img_size=12)
    out = crop_flip(img, *crop_flip_params(64, 20, cfg, torch.Generator().manual_seed(0)), cfg.img_size)
    assert out.shape == (64, 3, 12, 12)
    flipped = 0
    for o in out:  # each output equals one crop of the input, possibly mirrored
        y, x = divmod(int(o[0, 0, :].min().item()), 20)
        crop = img[0, :, y:y + 12, x:x + 12]
        flipped += not torch.equal(o, crop)
        assert torch.equal(o, crop) or torch.equal(o, crop.flip(-1))
    assert 10 < flipped < 54


def test_train_views_follow_official_sizes_and_batch_version():
    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cfg = AugmentConfig(img_size=40)
    assert cfg.resize_to == 44
    v = random_views(frame, cfg, 2, torch.Generator().manual_seed(0))
    assert len(v) == 2 and v[0].shape == (3, 40, 40)
    b = train_views(frame[None].expand(5, -1, -1, -1), cfg, torch.Generator().manual_seed(0), views=2, batch=5, offset=0,
                    device="cpu")
    assert len(b) == 2 and b[0].shape == (5, 3, 40, 40)
    e = eval_frame(torch.zeros(30, 50, 3, dtype=torch.uint8) + 255, 20)  # non-square: shorter side, centre crop
    assert e.shape == (3, 20, 20)
    torch.testing.assert_close(denormalize(e), torch.ones(3, 20, 20))

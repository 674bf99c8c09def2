"""Every missing file of a profile named once, all together, with where it goes and how to get it: weights,
packed splits and the official-layout sources they are packed from; nothing run before the list is shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sspl_lib.data.preflight import MissingFiles, check_profile_files, missing_files
from sspl_lib.paths import REPO_ROOT
from sspl_lib.profiles import load_profile

from official_layouts import write_flickr


def _paper(tmp_path, **over):
    return load_profile("paper_flickr10k", source_root=str(tmp_path / "Datasets"), data_root=str(tmp_path / "packed"),
                        vgg16_weights=str(tmp_path / "w" / "vgg16.pth"), vggish_weights=str(tmp_path / "w" / "vggish.pth"),
                        **over)


def test_a_paper_profile_without_files_lists_every_piece_at_once(tmp_path):
    cfg = _paper(tmp_path)
    with pytest.raises(MissingFiles) as e:
        check_profile_files(cfg, "train", "profile 'paper_flickr10k'")
    text = str(e.value)
    paths = [m.path for m in e.value.missing]
    assert paths[:2] == [str(tmp_path / "w" / "vgg16.pth"), str(tmp_path / "w" / "vggish.pth")]  # weights first
    for name in ("packed/train.h5", "packed/val.h5", "10k_unlabeled/h5py_train_frames_10k.h5",
                 "flickr_test249_in5k.csv", "5k_labeled/Annotations", "5k_labeled/Data/frames"):
        assert sum(p.endswith(name) for p in paths) == 1, name  # each piece once
    assert text.startswith(f"profile 'paper_flickr10k' (train): {len(paths)} missing files (all of them listed):")
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in text
    assert text.count("notebooks/01_data_preparation.ipynb packs these") == 1  # one remedy per group
    assert text.count("github.com/zjsong/SSPL") == 1


def test_the_official_layout_leaves_only_what_is_really_missing(tmp_path):
    write_flickr(tmp_path / "Datasets")
    cfg = _paper(tmp_path, pretrained=False)  # random weights: no weight files needed
    assert missing_files(cfg, "pipeline") == []  # notebook 01 can pack everything
    assert [m.path.rsplit("/", 1)[-1] for m in missing_files(cfg, "train")] == ["train.h5", "val.h5"]
    (tmp_path / "Datasets" / "SoundNet_Flickr" / "flickr_test249_in5k.csv").unlink()
    assert [m.what for m in missing_files(cfg, "prepare")] == ["Flickr test id list (for val.h5)"]


def test_synthetic_profile_points_to_notebook_01(tmp_path, tiny_benchmark):
    cfg = load_profile("quick", data_root=str(tmp_path / "none"))
    assert missing_files(cfg, "pipeline") == []  # notebook 01 generates it
    what = [m.what for m in missing_files(cfg, "train")]
    assert what == [f"the generated benchmark's {s} split" for s in ("train", "val", "labeled_images",
                                                                      "labeled_sounds")]
    assert "01_data_preparation.ipynb generates these" in missing_files(cfg, "train")[0].how
    assert missing_files(cfg.replace(data_root=str(tiny_benchmark)), "train") == []


def test_the_train_command_lists_them_and_trains_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sspl_lib.experiments.train", "--profile", "paper_flickr10k",
                           "--run-dir", str(tmp_path / "run"), "--set", f"source_root={tmp_path}",
                           f"data_root={tmp_path / 'packed'}", f"vgg16_weights={tmp_path / 'vgg16.pth'}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Nothing was trained." in proc.stderr, proc.stderr[-2000:]
    assert str(tmp_path / "vgg16.pth") in proc.stderr and "packed/train.h5" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_training_data_not_found_points_to_notebook_01(tmp_path):
    from sspl_lib.data.h5 import DataFileError
    from sspl_lib.data.stream import check_training_data

    with pytest.raises(DataFileError, match=r"train\.h5: file not found; .* notebooks/01_data_preparation\.ipynb"):
        check_training_data(load_profile("quick", data_root=str(tmp_path)))

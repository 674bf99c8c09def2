"""Each paper profile end to end through the notebooks (papermill, real kernel) on CPU, at a tiny size: miniature
datasets in the official layouts and VGG16 / VGGish weight files in their published key layouts, written here.

01 packs the official layout into train / val / test, 02 trains 2 epochs with model selection on val, 03 writes
results.json, 05 opens the explorer. The source files must be left exactly as they were."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sspl_lib import pipeline
from sspl_lib.profiles import load_profile
from sspl_lib.experiments.runs import load_checkpoint, read_history

from official_layouts import tree_hash, write_flickr, write_vggsound, write_weights

PROFILES = ("paper_flickr10k", "paper_flickr144k", "paper_vggsound144k")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    write_flickr(root / "Datasets")
    write_vggsound(root / "Datasets")
    write_weights(root / "weights")
    return root


def _kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    if pipeline.KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.skip(f"Jupyter kernel {pipeline.KERNEL!r} not installed (make setup installs it)")
    return pipeline.KERNEL


@pytest.mark.parametrize("profile", PROFILES)
def test_paper_profile_through_the_notebooks(profile, sources, tmp_path):
    kernel = _kernel()
    before = tree_hash(sources)
    config = {"source_root": str(sources / "Datasets"), "data_root": str(tmp_path / "packed"), "epochs": 2,
              "batch_size": 4, "img_size": 64, "workers": 0, "threads": 2,
              "vgg16_weights": str(sources / "weights" / "vgg16-397923af.pth"),
              "vggish_weights": str(sources / "weights" / "vggish-10086976.pth")}
    runs = tmp_path / "runs"
    trained = ("sspl", "ezvsl") if profile == "paper_flickr10k" else ("sspl",)  # sspl_wo_pcm: tests/test_official
    res = pipeline.run_pipeline(profile, kernel=kernel, notebooks=("01_data_preparation", "02_train", "03_evaluate",
                                                                    "05_explore"),
                                extra={"config": config, "runs_dir": str(runs), "figures_dir": str(tmp_path / "fig"),
                                       "live": False, "methods": list(trained)},  # fewer runs for the 144k ones (CI time)
                                runs_dir=runs, out_dir=tmp_path / "executed")
    assert list(res["executed"]) == ["01_data_preparation", "02_train", "03_evaluate", "05_explore"]
    cfg = load_profile(profile, **config)
    # 01: the packed splits, with gt maps for val and test
    assert sorted(p.name for p in (tmp_path / "packed").glob("*.h5")) == ["test.h5", "train.h5", "val.h5"]
    # 02: two epochs, finite validation scores read from the val split's gt maps, best.pt = best val epoch
    for run in trained:
        hist = read_history(runs / profile / run)
        assert [h["epoch"] for h in hist] == [1, 2]
        assert all(np.isfinite(h["val_ciou"]) and 0 <= h["val_ciou"] <= 1 for h in hist), hist
        best = max(hist, key=lambda h: (h["val_ciou"], h["val_auc"]))["epoch"]
        assert load_checkpoint(runs / profile / run / "checkpoints" / "best.pt")["epoch"] + 1 == best
        assert load_checkpoint(runs / profile / run / "checkpoints" / "best.pt")["config"]["visual_encoder"] == "vgg16"
    # 03: results.json = {model: {split: {ciou, auc, n}}}, the real test split only
    out = json.loads((runs / profile / "results.json").read_text())
    n_test = 4
    assert {*trained, "center_prior", "random", "whole_image", "feature_l2norm", "sspl_shuffled_audio",
            "sspl_silent_audio"} <= set(out)
    for per_split in out.values():
        assert list(per_split) == ["test"]
        rec = per_split["test"]
        assert rec["n"] == n_test and 0 <= rec["ciou"] <= 1 and 0 <= rec["auc"] <= 1
    # 05: the explorer opened on the run (no error output) and shows no machine path
    import nbformat

    nb = nbformat.read(tmp_path / "executed" / "05_explore.ipynb", as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert cfg.dataset in ("flickr", "vggsound")
    # the user's files are exactly as they were
    assert tree_hash(sources) == before

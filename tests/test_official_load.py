"""load_official on broken inputs: each error names the file and the problem.

The four official files are real torch.save'd state dicts in the official key layout (seeded weights of
tests/official_weights.py from the manifests stored in tests/data/official_reference.npz); each test breaks
one of them. A positive control loads the intact set, so every failure below comes from the break alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from official_weights import manifests_from_json, write_official_checkpoints
from sspl_lib.official import OfficialCheckpointError, load_official

REF_PATH = Path(__file__).parent / "data" / "official_reference.npz"
PARTS = ("frame", "sound", "pcm", "ssl_head")


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> dict:
    with np.load(REF_PATH) as f:
        manifests, seed = manifests_from_json(f["pcm4__manifests"]), int(f["weight_seed"])
    return write_official_checkpoints(tmp_path_factory.mktemp("official"), manifests, seed)


@pytest.fixture
def files(intact, tmp_path) -> dict:
    """The four intact files, but sound / pcm / ssl_head are paths in the test's own folder that a test writes
    (broken) or leaves absent; `restore(part)` links the intact file there."""
    out = {part: intact[part] if part == "frame" else tmp_path / intact[part].name for part in PARTS}
    out["restore"] = lambda part: out[part].symlink_to(intact[part])
    return out


def test_intact_files_load(intact):
    model = load_official(*(intact[p] for p in PARTS))
    assert model.pcm.cycles == 4 and not model.training
    sound = torch.load(intact["sound"], weights_only=True)
    assert torch.equal(model.audio.mlp[0].weight, sound["module.fc.0.weight"])


@pytest.mark.parametrize("part", ["sound", "pcm", "ssl_head"])
def test_missing_file_is_named(files, part):
    for other in {"sound", "pcm", "ssl_head"} - {part}:
        files["restore"](other)
    with pytest.raises(FileNotFoundError, match=rf"official {part} checkpoint not found: .*{files[part].name}"):
        load_official(*(files[p] for p in PARTS))


@pytest.mark.parametrize("part", ["sound", "pcm", "ssl_head"])
@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_unreadable_file_is_named(intact, files, part, damage):
    for other in {"sound", "pcm", "ssl_head"} - {part}:
        files["restore"](other)
    path = files[part]
    data = intact[part].read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(OfficialCheckpointError, match=rf"{path}: the official {part} checkpoint is not a readable "
                                                      "PyTorch file"):
        load_official(*(files[p] for p in PARTS))


@pytest.mark.parametrize("content,kind", [([torch.zeros(3)], "list"), (torch.zeros(3), "Tensor")])
def test_non_dict_file_is_named(files, content, kind):
    files["restore"]("sound"), files["restore"]("ssl_head")
    torch.save(content, files["pcm"])
    with pytest.raises(OfficialCheckpointError,
                       match=rf"{files['pcm']}: the official pcm checkpoint should hold a state dict .* got a {kind}"):
        load_official(*(files[p] for p in PARTS))


def test_dict_of_non_tensors_is_named(intact, files):
    """A training checkpoint that wraps the state dict ({"epoch": ..., "state_dict": {...}}) is not the layout."""
    files["restore"]("sound"), files["restore"]("pcm")
    torch.save({"epoch": 3, "state_dict": torch.load(intact["ssl_head"], weights_only=True)}, files["ssl_head"])
    with pytest.raises(OfficialCheckpointError, match=rf"{files['ssl_head']}: .* not tensors: \['epoch', 'state_dict'\]"):
        load_official(*(files[p] for p in PARTS))


def test_shape_mismatch_names_file_and_both_keys(intact, files):
    files["restore"]("pcm"), files["restore"]("ssl_head")
    state = torch.load(intact["sound"], weights_only=True)
    state["module.fc.0.weight"] = torch.zeros(512, 64)  # the model's audio MLP takes 128-d VGGish embeddings
    torch.save(state, files["sound"])
    with pytest.raises(OfficialCheckpointError) as e:
        load_official(*(files[p] for p in PARTS))
    msg = str(e.value)
    assert (f"shape mismatch in {files['sound']}: audio.mlp.0.weight (official key fc.0.weight) is (512, 64) "
            "there, the model expects (512, 128)") in msg
    assert "missing" not in msg and "unexpected" not in msg  # only the one problem


def test_swapped_files_are_named(intact):
    """frame_best.pth given as the sound file: its keys are not in the sound layout."""
    with pytest.raises(OfficialCheckpointError,
                       match=rf"{intact['frame']}: 26 key\(s\) not in the official sound layout: \['feat_extractor"):
        load_official(intact["frame"], intact["frame"], intact["pcm"], intact["ssl_head"])


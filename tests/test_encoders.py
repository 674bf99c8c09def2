"""Encoders: pretrained-weight loading from files, clear errors, frozen backbones."""

import pytest
import torch

from sspl_lib import encoders
from sspl_lib.encoders import VGGish, VGG16Encoder, WeightsNotFound


def test_missing_weights_error_names_file_folder_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SSPL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFound) as e:
        VGGish(pretrained=True)
    msg = str(e.value)
    assert str(tmp_path / "vggish-10086976.pth") in msg and "harritaylor/torchvggish" in msg
    with pytest.raises(WeightsNotFound, match="vgg16-397923af.pth"):
        VGG16Encoder(pretrained=True)


# The published layout of torchvggish's vggish-10086976.pth (github.com/harritaylor/torchvggish, vggish.py:
# `make_layers()` = conv 3x3 at Sequential indices 0, 3, 6, 8, 11, 13 (ReLU after each, max-pools between),
# `embeddings` = Linear 12288->4096, 4096->4096, 4096->128 at indices 0, 2, 4), loaded there by a strict
# `load_state_dict` into VGG(features, embeddings). Its PCA file (vggish_pca_params-970ea276.pth) is separate;
# a state dict saved from torchvggish's VGGish with the postprocessor also holds pproc.pca_matrix / pca_means.
TORCHVGGISH_KEYS = [
    ("features.0.weight", (64, 1, 3, 3)), ("features.0.bias", (64,)),
    ("features.3.weight", (128, 64, 3, 3)), ("features.3.bias", (128,)),
    ("features.6.weight", (256, 128, 3, 3)), ("features.6.bias", (256,)),
    ("features.8.weight", (256, 256, 3, 3)), ("features.8.bias", (256,)),
    ("features.11.weight", (512, 256, 3, 3)), ("features.11.bias", (512,)),
    ("features.13.weight", (512, 512, 3, 3)), ("features.13.bias", (512,)),
    ("embeddings.0.weight", (4096, 12288)), ("embeddings.0.bias", (4096,)),
    ("embeddings.2.weight", (4096, 4096)), ("embeddings.2.bias", (4096,)),
    ("embeddings.4.weight", (128, 4096)), ("embeddings.4.bias", (128,)),
]
TORCHVGGISH_PPROC_KEYS = [("pproc.pca_matrix", (128, 128)), ("pproc.pca_means", (128, 1))]


def _seeded(keys, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.02 * torch.randn(shape, generator=g) for k, shape in keys}


@pytest.mark.parametrize("with_pproc", [False, True])
def test_vggish_loads_torchvggish_layout(tmp_path, monkeypatch, with_pproc):
    """A file with torchvggish's published key names and shapes (seeded values) loads from the weights folder:
    every features / embeddings tensor lands on the key of the same name; the postprocessor is ignored."""
    published = _seeded(TORCHVGGISH_KEYS + (TORCHVGGISH_PPROC_KEYS if with_pproc else []), seed=5)
    torch.save(published, tmp_path / encoders.VGGISH_FILE)
    monkeypatch.setenv("SSPL_WEIGHTS", str(tmp_path))
    loaded = VGGish(pretrained=True).state_dict()
    assert list(loaded) == [k for k, _ in TORCHVGGISH_KEYS]  # same names, same order, nothing else
    for k, _ in TORCHVGGISH_KEYS:
        assert torch.equal(loaded[k], published[k]), k


def test_vgg16_loads_torchvision_file(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    full = vgg16(weights=None)
    path = tmp_path / "my_vgg16.pth"
    torch.save(full.state_dict(), path)  # the whole torchvision model, classifier included
    enc = VGG16Encoder(weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(enc(x), full.features[:29](x))
    # every torchvision key up to conv5_3 (features.0 ... features.28) maps by name; classifier.* is left out
    wanted = {k: v for k, v in full.state_dict().items() if k.startswith("features.") and int(k.split(".")[1]) < 29}
    assert len(wanted) == 26 and {f"features.{k}" for k in enc.features.state_dict()} == wanted.keys()
    assert all(torch.equal(enc.features.state_dict()[k[len("features."):]], v) for k, v in wanted.items())


def test_corrupt_weights_file_is_named(tmp_path):
    bad = tmp_path / "vggish-10086976.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        VGGish(weights=str(bad))


def test_vggish_flatten_order_is_channels_last():
    """The embedding MLP sees the conv output in TF's (h, w, c) order, as the released weights expect."""
    torch.manual_seed(0)
    m = VGGish(pretrained=False).eval()
    x = torch.randn(3, 1, 96, 64)
    feats = m.features(x)
    expected = m.embeddings(feats.permute(0, 2, 3, 1).reshape(3, -1))
    assert torch.equal(m(x), expected)

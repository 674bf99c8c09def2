"""The environment files agree: environment.yml installs exactly the pinned requirements.txt."""

import re

import yaml

from sspl_lib.paths import REPO_ROOT


def test_environment_yml_uses_requirements():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-r requirements.txt"]


def test_requirements_are_all_pinned_and_complete():
    lines = [l.split("#")[0].strip() for l in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [l for l in lines if l]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+\-]*", r) for r in reqs), reqs
    names = {r.split("==")[0].lower() for r in reqs}
    card = {"torch", "torchvision", "torchaudio", "jupyterlab", "papermill", "ipywidgets", "matplotlib",
            "librosa", "nbval", "einops"}
    assert card <= names
    pins = dict(r.lower().split("==") for r in reqs)
    assert (pins["torch"], pins["torchvision"], pins["torchaudio"]) == ("2.11.0", "0.26.0", "2.11.0")


def test_installed_versions_match_pins():
    from importlib.metadata import version

    for r in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        r = r.split("#")[0].strip()
        if r:
            name, pin = r.split("==")
            assert version(name).split("+")[0] == pin, name

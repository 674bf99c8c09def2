"""The environment files agree: environment.yml installs exactly the pinned requirements.txt."""

import re

import yaml

from sspl_lib.paths import REPO_ROOT


def test_environment_yml_uses_requirements():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-r requirements.txt", "-e .", "./sspl_lib/jupyter_kernel"]


def test_conda_route_installs_the_sspl_kernel(tmp_path):
    """The kernel package that environment.yml installs puts a kernel spec named `sspl` into the prefix, which
    Jupyter finds there (every notebook names that kernel)."""
    import json
    import subprocess
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--prefix", str(tmp_path / "env"),
                          str(REPO_ROOT / "sspl_lib" / "jupyter_kernel")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    kernels = tmp_path / "env" / "share" / "jupyter" / "kernels"
    spec = KernelSpecManager(kernel_dirs=[str(kernels)]).get_kernel_spec("sspl")
    assert spec.display_name == "Python (sspl)" and spec.argv[:3] == ["python", "-m", "ipykernel_launcher"]
    nb = json.loads((REPO_ROOT / "notebooks" / "02_train.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "sspl"


def _pins(name: str) -> list[str]:
    lines = [l.split("#")[0].strip() for l in (REPO_ROOT / name).read_text().splitlines()]
    return [l for l in lines if l]


def test_requirements_are_all_pinned_and_complete():
    reqs = _pins("requirements.txt")
    nodeps = _pins("requirements-nodeps.txt")
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+\-]*", r) for r in reqs + nodeps), reqs + nodeps
    assert not {r.split("==")[0] for r in reqs} & {r.split("==")[0] for r in nodeps}
    names = {r.split("==")[0].lower() for r in reqs}
    card = {"torch", "torchvision", "torchaudio", "jupyterlab", "papermill", "ipywidgets", "matplotlib",
            "librosa", "nbval", "einops"}
    assert card <= names
    pins = dict(r.lower().split("==") for r in reqs)
    assert (pins["torch"], pins["torchvision"], pins["torchaudio"]) == ("2.11.0", "0.26.0", "2.11.0")


def test_installed_versions_match_pins():
    from importlib.metadata import version

    for r in _pins("requirements.txt") + _pins("requirements-nodeps.txt"):
        name, pin = r.split("==")
        assert version(name).split("+")[0] == pin, name


def test_nodeps_pins_are_installed_without_their_dependencies():
    """`make setup` installs requirements-nodeps.txt with --no-deps; environment.yml tells conda users to."""
    make = (REPO_ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in make
    assert "$(STAMP): requirements.txt requirements-nodeps.txt" in make
    assert "pip install --no-deps -r requirements-nodeps.txt" in (REPO_ROOT / "environment.yml").read_text()

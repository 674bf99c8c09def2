"""The commands of the README and docs/ (their ```bash blocks) and the `papermill -p` examples in the notebooks'
parameter comments work as written: each program is the venv's (or make); `make X` is a known target (`make -n`);
`python -m M ...` / `torchrun ... -m M ...` parse with M's own parser (and `--help` ones run); papermill lines
are prepared by papermill itself and their notebook runs, in a real kernel, through the cell that reads the
profile (`load_profile`): the parameters are accepted, and what stops it is at most the list of missing data."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sspl_lib.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """Each command line of the ```bash blocks of the README and of docs/*.md."""
    text = "\n".join(p.read_text() for p in [README, *sorted((REPO_ROOT / "docs").glob("*.md"))])
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def notebook_examples() -> list[tuple[str, list[str]]]:
    """(notebook, ["-p", NAME, VALUE]) of each `-p NAME VALUE` example in a parameters cell's comments."""
    out = []
    for nb_path in sorted((REPO_ROOT / "notebooks").glob("0*.ipynb")):
        nb = json.loads(nb_path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        for line in "".join(cell["source"]).splitlines():
            comment = line.split("#", 1)[1] if "#" in line else ""
            for m in re.finditer(r"-p (\w+) ('[^']*'|\S+)", comment):
                out.append((nb_path.name, ["-p", m[1], shlex.split(m[2])[0].rstrip(",")]))
    return out


def _split(line: str) -> tuple[Path, list[str]]:
    """(working directory, argv) of a README line (`cd DIR && command` included)."""
    words, cwd = shlex.split(line, comments=True), REPO_ROOT
    if words[0] == "cd":
        assert words[2] == "&&", line
        cwd, words = REPO_ROOT / words[1], words[3:]
    return cwd, words


def _program(word: str, cwd: Path) -> Path | None:
    """The venv program a README command names (`.venv/bin/X` from its directory); None for make."""
    if word == "make":
        return None
    assert re.fullmatch(r"(\.\./)*\.venv/bin/[\w-]+", word), f"{word}: name the venv's program (.venv/bin/...)"
    # the folder, not the program: a venv's python is a link to the interpreter it was made from
    assert (cwd / word).parent.resolve() == (REPO_ROOT / ".venv" / "bin").resolve()
    return BIN / Path(word).name


def _module_parse(module: str, args: list[str], line: str) -> None:
    p = importlib.import_module(module).parser()
    try:
        p.parse_args(args)
    except SystemExit as e:
        if "--help" not in args:
            pytest.fail(f"`{line}`: {module} refuses these arguments (exit {e.code})")


def _make(args: list[str], line: str) -> None:
    proc = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"`{line}`: {proc.stderr}"


def _papermill(cwd: Path, args: list[str], tmp_path: Path, kernel: str) -> None:
    """papermill --prepare-only with the line's arguments, then the notebook run up to its load_profile cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    src, _out, rest = args[0], args[1], args[2:]
    prepared = tmp_path / "prepared.ipynb"
    proc = subprocess.run([str(BIN / "papermill"), src, str(prepared), *rest, "--prepare-only", "-k", kernel],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    nb = nbformat.read(prepared, as_version=4)
    cut = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "load_profile(" in c.source)
    probe = nbformat.v4.new_code_cell(  # the list parameters through the functions that read them later
        "from sspl_lib.experiments.jobs import methods as _methods, ablation_variants as _variants\n"
        "from sspl_lib.profiles import as_list as _as_list, load_profile as _load\n"
        "if 'methods' in globals(): _methods(methods)\n"
        "if 'cycles' in globals(): _variants(_load(profile, config), cycles=cycles)\n"
        "if 'seeds' in globals(): _as_list(seeds, 'seeds', int)\n"
        "if 'compare' in globals(): _as_list(compare, 'compare')")
    nb.cells = nb.cells[:cut] + [probe, nb.cells[cut]]
    client = NotebookClient(nb, kernel_name=kernel, timeout=300,
                            resources={"metadata": {"path": str((cwd / src).parent)}})
    try:
        client.execute()
    except CellExecutionError as e:  # only the preflight may stop it: the data is not there
        assert e.ename == "MissingFiles", f"{' '.join(args)}: {e.ename}: {e.evalue}"


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    if "sspl" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("Jupyter kernel 'sspl' not installed (make setup installs it)")
    return "sspl"


def test_the_readme_has_commands():
    lines = readme_commands()
    assert any("papermill" in line for line in lines) and any(line.startswith("make ") for line in lines)


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_works_as_written(line, tmp_path, request):
    cwd, words = _split(line)
    program = _program(words[0], cwd)
    if program is None:
        return _make(words[1:], line)
    name, args = program.name, words[1:]
    assert program.is_file(), f"`{line}`: {program} is not installed"
    if name == "papermill":
        return _papermill(cwd, args, tmp_path, request.getfixturevalue("kernel"))
    if name == "torchrun":
        args = args[args.index("-m") + 1:]
    elif name == "python":
        assert args[0] == "-m", line
        args = args[1:]
    elif name == "tensorboard":
        assert "--logdir" in args, line
        return None
    else:
        pytest.fail(f"`{line}`: no check for {name} here yet: add one")
    _module_parse(args[0], args[1:], line)
    if "--help" in args:  # cheap: run it as written
        proc = subprocess.run([str(program), *words[1:]], cwd=cwd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("notebook, param", notebook_examples())
def test_notebook_parameter_examples_work(notebook, param, tmp_path, kernel):
    _papermill(REPO_ROOT / "notebooks", [notebook, "out.ipynb", *param], tmp_path, kernel)

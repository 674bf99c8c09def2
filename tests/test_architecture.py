"""The layering holds: the import contracts (.importlinter), no import cycle anywhere in sspl_lib, no
re-export shims, no module that switches matplotlib's backend (it would turn a notebook's inline plots off), and
following one training step or one heatmap -> cIoU computation stays a short walk (`python -m benchmarks.walk`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sspl_lib.paths import REPO_ROOT


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--config", str(REPO_ROOT / ".importlinter")], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph("sspl_lib")
    modules = sorted(m for m in graph.modules if m.startswith("sspl_lib"))
    cycles = []
    for m in modules:
        for imported in graph.find_modules_directly_imported_by(m):
            if imported.startswith("sspl_lib") and not m.startswith(imported + ".") and \
                    graph.chain_exists(importer=imported, imported=m):
                cycles.append((m, imported))
    assert not cycles, cycles


def test_no_reexport_shims_or_backend_switches():
    offenders = []
    for path in sorted((REPO_ROOT / "sspl_lib").rglob("*.py")):
        text = path.read_text()
        lazy_exports = path.name == "__init__.py" and "def __getattr__" in text
        if "noqa: F401" in text or "re-export" in text or "matplotlib.use(" in text or lazy_exports:
            offenders.append(path.relative_to(REPO_ROOT).as_posix())
    assert not offenders


def test_one_step_and_one_evaluation_are_short_walks():
    """The files whose functions run in one SSPL training step (views, loss, backward, AdamW, schedule) and in one
    heatmap -> cIoU computation, traced: each is named, and their number does not grow."""
    from benchmarks.walk import walks

    got = {name: list(files) for name, files in walks("quick").items()}
    print(got)
    step, ciou = got["training step"], got["heatmap -> cIoU"]
    core = ["sspl_lib/model.py", "sspl_lib/pcm.py", "sspl_lib/encoders.py", "sspl_lib/methods/base.py"]
    assert {"sspl_lib/experiments/train.py", "sspl_lib/methods/sspl.py", "sspl_lib/head.py", *core} <= set(step)
    assert {"sspl_lib/experiments/evaluate.py", "sspl_lib/metrics.py", *core} <= set(ciou)
    assert len(step) <= 10 and len(ciou) <= 10, got

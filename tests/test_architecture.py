"""The layering holds: the import contracts (.importlinter), no import cycle anywhere in sspl_lib, no
re-export shims, and no module that switches matplotlib's backend (it would turn a notebook's inline plots off)."""

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
        if "noqa: F401" in text or "re-export" in text or "matplotlib.use(" in text:
            offenders.append(path.relative_to(REPO_ROOT).as_posix())
    assert not offenders

"""Every notebook is thin and parameterizable: one `parameters` cell of typed literals only (types papermill
shows with --help-notebook), executed outputs."""

import ast
import json

import pytest

from sspl_lib.paths import REPO_ROOT
from sspl_lib.pipeline import NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_one_literal_parameters_cell_and_executed(name):
    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "sspl"
    params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1, "papermill needs exactly one cell tagged `parameters`"
    for node in ast.parse("".join(params[0]["source"])).body:
        assert isinstance(node, ast.AnnAssign) and node.value is not None, ast.dump(node)
        ast.literal_eval(node.value)  # literals only: nbval cannot inject parameters
    assert not [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code)
    assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][0]["source"][0].startswith("# ")


def test_headline_cells_are_checked_by_nbval():
    checked = {n: sum("NBVAL_CHECK_OUTPUT" in "".join(c["source"])
                      for c in json.loads((REPO_ROOT / "notebooks" / f"{n}.ipynb").read_text())["cells"])
               for n in NOTEBOOKS}
    assert all(checked[n] >= 1 for n in ("01_data_preparation", "02_train", "03_evaluate", "04_ablation")), checked


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_help_shows_every_parameter_with_its_type(name):
    """`papermill --help-notebook` reads each parameter's annotation and comment (a line with a second `=` it
    skips, an unannotated one it shows as 'Unknown type')."""
    import papermill as pm

    path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
    declared = [n.target.id for n in ast.parse("".join(next(
        c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])).body]
    inferred = pm.inspect_notebook(str(path))
    assert list(inferred) == declared
    for p in inferred.values():
        assert p["inferred_type_name"] not in ("None", ""), p
        assert p["help"], p

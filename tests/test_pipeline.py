"""sspl_lib.pipeline: papermill runs of a trivial notebook with parameters from a profile yaml (real kernel)."""

from __future__ import annotations

import json

import nbformat
import pytest
import yaml

from sspl_lib import pipeline


def _kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    names = KernelSpecManager().find_kernel_specs()
    if pipeline.KERNEL in names:
        return pipeline.KERNEL
    pytest.skip(f"Jupyter kernel {pipeline.KERNEL!r} not installed (make setup installs it)")


def _notebook(path, out_file):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('epochs = 1\nname = "default"\nrun_dir = "runs/quick/x"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# trivial"), params,
                nbformat.v4.new_code_cell(
                    "import json, os\n"
                    f"json.dump({{'epochs': epochs, 'name': name, 'run_dir': run_dir, 'cwd': os.getcwd()}}, open({str(out_file)!r}, 'w'))\n"
                    "print(epochs * 2)")]
    nb.metadata["kernelspec"] = {"name": "sspl", "display_name": "Python (sspl)", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_declared_and_selected_parameters(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", tmp_path / "o.json")
    assert pipeline.declared_parameters(nb) == {"epochs", "name", "run_dir"}
    assert pipeline.select_parameters(nb, {"epochs": 3, "lr": 0.1, "profile": "quick"}) == {"epochs": 3}
    assert pipeline.select_parameters(nb, {"epochs": 3, "profile": "full"}) == {"epochs": 3, "run_dir": "runs/full/x"}


def test_profile_params_from_yaml():
    p = pipeline.profile_params("quick")
    assert p["profile"] == "quick" and "epochs" in p
    with pytest.raises(pipeline.PipelineError, match="no such profile"):
        pipeline.profile_params("no_such_profile_xyz")


def test_runs_notebook_with_injected_yaml_parameters(tmp_path, monkeypatch):
    kernel = _kernel()
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    out = tmp_path / "seen.json"
    _notebook(nbdir / "01_data_preparation.ipynb", out)
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    (params_dir / "tiny.yaml").write_text(yaml.safe_dump({"epochs": 7, "lr_head": 0.5}))
    monkeypatch.setattr(pipeline, "PARAMS_DIR", params_dir)
    res = pipeline.run_pipeline("tiny", kernel=kernel, notebook_dir=nbdir, out_dir=tmp_path / "executed",
                                notebooks=("01_data_preparation", "02_train"), require_results=False)
    assert res["skipped"] == ["02_train"] and list(res["executed"]) == ["01_data_preparation"]
    seen = json.loads(out.read_text())
    assert seen["epochs"] == 7 and seen["name"] == "default" and seen["run_dir"] == "runs/tiny/x"
    assert seen["cwd"] == str(nbdir)
    executed = nbformat.read(tmp_path / "executed" / "01_data_preparation.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert executed.cells[-1].outputs[0]["text"].strip() == "14"
    # in place: no injection, the notebook's own defaults, no papermill run metadata left
    res = pipeline.run_pipeline("tiny", kernel=kernel, notebook_dir=nbdir, in_place=True,
                                notebooks=("01_data_preparation",), require_results=False)
    assert json.loads(out.read_text())["epochs"] == 1
    nb = nbformat.read(nbdir / "01_data_preparation.ipynb", as_version=4)
    assert "papermill" not in nb.metadata and nb.cells[-1].outputs[0]["text"].strip() == "2"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)

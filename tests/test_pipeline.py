"""sspl_lib.pipeline: papermill runs of a trivial notebook with the profile injected (real kernel)."""

from __future__ import annotations

import json

import nbformat
import pytest

from sspl_lib import pipeline


def _kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    names = KernelSpecManager().find_kernel_specs()
    if pipeline.KERNEL in names:
        return pipeline.KERNEL
    pytest.skip(f"Jupyter kernel {pipeline.KERNEL!r} not installed (make setup installs it)")


def _notebook(path, out_file):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\nconfig = {}\nepochs = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# trivial"), params,
                nbformat.v4.new_code_cell(
                    "import json, os\n"
                    f"json.dump({{'epochs': epochs, 'profile': profile, 'config': config, 'cwd': os.getcwd()}}, open({str(out_file)!r}, 'w'))\n"
                    "print(epochs * 2)")]
    nb.metadata["kernelspec"] = {"name": "sspl", "display_name": "Python (sspl)", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_other_profiles_keep_their_figures_in_their_run_folder(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\nfigures_dir = "figures"')
    params.metadata["tags"] = ["parameters"]
    out = tmp_path / "fig.txt"
    nb.cells = [params, nbformat.v4.new_code_cell(f"open({str(out)!r}, 'w').write(figures_dir)")]
    nb.metadata["kernelspec"] = {"name": "sspl", "display_name": "Python (sspl)", "language": "python"}
    nbformat.write(nb, nbdir / "01_data_preparation.ipynb")
    kw = dict(kernel=_kernel(), notebook_dir=nbdir, notebooks=("01_data_preparation",), require_results=False,
              runs_dir=tmp_path / "runs", out_dir=tmp_path / "executed")
    (tmp_path / "assets").mkdir()  # the profile's asset folder must exist: the preflight checks it first
    pipeline.run_pipeline("assets_demo", extra={"config": {"assets": str(tmp_path / "assets")}}, **kw)
    assert out.read_text() == str(tmp_path / "runs" / "assets_demo" / "figures")
    pipeline.run_pipeline("quick", **kw)
    assert out.read_text() == "figures"
    # -p runs_dir moves the other profiles' figures (and the results the pipeline checks) with it
    elsewhere = tmp_path / "elsewhere"
    pipeline.run_pipeline("assets_demo", extra={"config": {"assets": str(tmp_path / "assets")},
                                                "runs_dir": str(elsewhere)}, **kw)
    assert out.read_text() == str(elsewhere / "assets_demo" / "figures")


def test_reproduce_trains_every_method_while_the_notebooks_default_to_sspl():
    """The notebooks' own defaults stay cheap (nbval runs them on a fresh checkout); make reproduce injects all."""
    import ast

    import papermill as pm

    from sspl_lib.experiments.jobs import METHODS

    injected = pipeline.PIPELINE_PARAMETERS["methods"]
    assert sorted(injected) == sorted(METHODS) and injected[0] == "sspl"
    for name in ("02_train", "03_evaluate"):
        declared = pm.inspect_notebook(str(pipeline.NOTEBOOK_DIR / f"{name}.ipynb"))
        assert ast.literal_eval(declared["methods"]["default"]) == ["sspl"]
    ablation = pm.inspect_notebook(str(pipeline.NOTEBOOK_DIR / "04_ablation.ipynb"))  # make ablation: two seeds
    assert ast.literal_eval(ablation["seeds"]["default"]) == [0] and pipeline.PIPELINE_PARAMETERS["seeds"] == [0, 1]


def test_profile_parameters_are_those_the_notebook_declares(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", tmp_path / "o.json")
    assert pipeline.profile_parameters(nb, "paper_flickr10k") == {"profile": "paper_flickr10k"}
    got = pipeline.profile_parameters(nb, "quick", {"config": {"epochs": 2}, "runs_dir": "/x"})
    assert got == {"profile": "quick", "config": {"epochs": 2}}  # runs_dir: not declared by this notebook


def test_a_bad_profile_fails_before_any_notebook(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    out = tmp_path / "seen.json"
    _notebook(nbdir / "01_data_preparation.ipynb", out)
    with pytest.raises(pipeline.PipelineError, match="no_such_profile_xyz"):
        pipeline.run_pipeline("no_such_profile_xyz", kernel=_kernel(), notebook_dir=nbdir, require_results=False)
    with pytest.raises(pipeline.PipelineError, match="epochs"):
        pipeline.run_pipeline("quick", kernel=_kernel(), notebook_dir=nbdir, require_results=False,
                              extra={"config": {"epochs": "three"}})
    assert not out.exists()


def test_strip_removes_run_metadata_and_widget_state(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        pipeline.WIDGET_VIEW: {"model_id": "abc", "version_major": 2, "version_minor": 0}, "text/plain": "VBox()"})]
    cell.metadata["papermill"] = {"duration": 1.0}
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {"x": "y" * 1000}}}}
    nb.metadata["papermill"] = {"input_path": "/somewhere/on/this/machine"}
    nbformat.write(nb, tmp_path / "n.ipynb")
    pipeline.strip_run_metadata(tmp_path / "n.ipynb")
    out = nbformat.read(tmp_path / "n.ipynb", as_version=4)
    assert "widgets" not in out.metadata and "papermill" not in out.metadata
    assert out.cells[0].outputs[0]["data"] == {"text/plain": "[interactive widget: run the notebook to use it]"}
    assert "papermill" not in out.cells[0].metadata


def test_runs_notebook_with_the_profile_injected(tmp_path):
    kernel = _kernel()
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    out = tmp_path / "seen.json"
    _notebook(nbdir / "01_data_preparation.ipynb", out)
    from official_layouts import write_flickr

    write_flickr(tmp_path / "Datasets")  # the preflight wants the profile's sources (random weights: no files)
    config = {"epochs": 7, "source_root": str(tmp_path / "Datasets"), "pretrained": False}
    res = pipeline.run_pipeline("paper_flickr10k", kernel=kernel, notebook_dir=nbdir, out_dir=tmp_path / "executed",
                                notebooks=("01_data_preparation", "02_train"), require_results=False,
                                extra={"config": config}, runs_dir=tmp_path / "runs")
    assert res["skipped"] == ["02_train"] and list(res["executed"]) == ["01_data_preparation"]
    seen = json.loads(out.read_text())
    assert seen == {"epochs": 1, "profile": "paper_flickr10k", "config": config, "cwd": str(nbdir)}
    executed = nbformat.read(tmp_path / "executed" / "01_data_preparation.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert executed.cells[-1].outputs[0]["text"].strip() == "2"  # epochs: the notebook's own default
    # in place: no injection, the notebook's own defaults, no papermill run metadata left
    res = pipeline.run_pipeline("quick", kernel=kernel, notebook_dir=nbdir, in_place=True,
                                notebooks=("01_data_preparation",), require_results=False)
    assert json.loads(out.read_text())["profile"] == "quick"
    nb = nbformat.read(nbdir / "01_data_preparation.ipynb", as_version=4)
    assert "papermill" not in nb.metadata and nb.cells[-1].outputs[0]["text"].strip() == "2"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_papermill_f_profile_file_runs_a_notebook_on_that_profile(tmp_path):
    """`papermill NB OUT -f params/<profile>.yaml` (the documented command): the profile file's two keys are the
    notebook's `profile` and `config` parameters, injected without an unknown-parameter warning."""
    import subprocess
    import sys

    from sspl_lib.profiles import load_profile
    from sspl_lib.paths import PARAMS_DIR

    _kernel()
    out = tmp_path / "seen.json"
    nb = _notebook(tmp_path / "a.ipynb", out)
    proc = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "o.ipynb"), "-f",
                           str(PARAMS_DIR / "paper_vggsound144k.yaml"), "-p", "epochs", "3", "-k", "sspl"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "unknown parameter" not in proc.stderr.lower()
    seen = json.loads(out.read_text())
    assert seen["profile"] == "paper_vggsound144k" and seen["epochs"] == 3
    assert load_profile(seen["profile"], **seen["config"]) == load_profile("paper_vggsound144k")


def test_reproduce_leaves_the_ablation_to_its_own_target():
    assert pipeline.select_notebooks() == ["01_data_preparation", "02_train", "03_evaluate", "05_explore"]
    assert pipeline.select_notebooks(["04_ablation"]) == ["04_ablation"]
    assert pipeline.select_notebooks(["03", "01"]) == ["01_data_preparation", "03_evaluate"]
    with pytest.raises(ValueError, match="--notebooks 07: no such notebook"):
        pipeline.select_notebooks(["07"])
    with pytest.raises(SystemExit):
        pipeline.main(["--notebooks", "07"])


def test_pipeline_runs_every_seed(tmp_path, tiny_benchmark):
    """A notebook declaring `n_seeds` (02, 03: one seed by default) gets n_seeds = 0 (all study seeds) from the
    pipeline; an in-place run keeps the notebook's own default."""
    kernel = _kernel()
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    out = tmp_path / "seen.txt"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\nn_seeds = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(f"open({str(out)!r}, 'w').write(str(n_seeds))")]
    nb.metadata["kernelspec"] = {"name": "sspl", "display_name": "Python (sspl)", "language": "python"}
    nbformat.write(nb, nbdir / "02_train.ipynb")
    kw = dict(kernel=kernel, notebook_dir=nbdir, notebooks=("02_train",), require_results=False,
              runs_dir=tmp_path / "runs", extra={"config": {"data_root": str(tiny_benchmark)}})  # data: preflight
    pipeline.run_pipeline("quick", out_dir=tmp_path / "executed", **kw)
    assert out.read_text() == "0"
    pipeline.run_pipeline("quick", in_place=True, **kw)
    assert out.read_text() == "1"

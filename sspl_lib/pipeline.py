"""`make reproduce`: execute the notebooks in order with papermill, with a profile's parameters.

    python -m sspl_lib.pipeline --profile quick              # executed copies in runs/quick/notebooks/
    python -m sspl_lib.pipeline --notebooks-in-place          # re-execute notebooks/*.ipynb themselves

Parameters: the keys of `params/<profile>.yaml` that a notebook's `parameters` cell declares are injected
(others are ignored), plus `profile` when declared; a declared parameter whose default is a path under
`runs/quick` is moved under `runs/<profile>` for another profile.
In-place runs inject nothing: the committed notebooks keep their own (quick-profile) defaults, and the
per-run papermill metadata is stripped so that only the outputs change. Works from any CWD (notebooks
run with CWD = notebooks/); kernel `sspl` (installed by `make setup`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .paths import FIGURES_DIR, PARAMS_DIR, REPO_ROOT, RUNS_DIR

NOTEBOOKS = ("01_data_preparation", "02_train", "03_evaluate", "04_ablation", "05_explore")
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "sspl"


class PipelineError(RuntimeError):
    pass


def profile_params(profile: str) -> dict:
    """The raw `params/<profile>.yaml` mapping plus `profile`."""
    import yaml

    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.is_file():
        avail = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise PipelineError(f"{path}: no such profile (available: {avail})")
    raw = yaml.safe_load(path.read_text()) or {}
    return {**raw, "profile": profile}


def declared_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters` (empty when it has none)."""
    import papermill as pm

    return set(pm.inspect_notebook(str(notebook)))


def select_parameters(notebook: str | Path, params: dict) -> dict:
    """The subset of `params` that the notebook's parameters cell declares; for a profile other than quick,
    declared string defaults under `runs/quick` are moved to `runs/<profile>`."""
    import ast

    import papermill as pm

    declared = pm.inspect_notebook(str(notebook))
    out = {k: v for k, v in params.items() if k in declared}
    profile = params.get("profile", "quick")
    if profile != "quick":
        for name, spec in declared.items():
            try:
                default = ast.literal_eval(spec.get("default", ""))
            except (ValueError, SyntaxError):
                continue
            if name not in out and isinstance(default, str) and (default + "/").startswith("runs/quick/"):
                out[name] = f"runs/{profile}" + default[len("runs/quick"):]
    return out


def check_kernel(kernel: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel as e:
        raise PipelineError(f"Jupyter kernel {kernel!r} is not installed: run `make setup` (it runs "
                            f"`python -m ipykernel install --sys-prefix --name {kernel}`)") from e


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's per-run metadata (timings, paths) from an executed notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def run_notebook(src: Path, dst: Path, params: dict, *, kernel: str = KERNEL, cwd: Path = NOTEBOOK_DIR,
                 log_output: bool = False, timeout: int | None = None) -> float:
    """Execute `src` into `dst` with papermill; returns the wall time in seconds."""
    import papermill as pm

    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel, cwd=str(cwd),
                        progress_bar=False, log_output=log_output, execution_timeout=timeout)
    return time.perf_counter() - t0


def run_pipeline(profile: str = "quick", *, notebooks=NOTEBOOKS, in_place: bool = False, kernel: str = KERNEL,
                 log_output: bool = False, notebook_dir: Path = NOTEBOOK_DIR, out_dir: Path | None = None,
                 require_results: bool = True) -> dict:
    """Run the notebooks in order; returns {"executed": {name: seconds}, "skipped": [...], "figures": [...],
    "results": path | None, "seconds": total}. Raises PipelineError on a failed notebook."""
    t_start = time.time()
    t0 = time.perf_counter()
    check_kernel(kernel)
    params = profile_params(profile)
    out_dir = out_dir or RUNS_DIR / profile / "notebooks"
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    executed, skipped = {}, []
    for name in notebooks:
        src = notebook_dir / f"{name}.ipynb"
        if not src.is_file():
            print(f"[pipeline] {name}: {src} does not exist yet, skipped", flush=True)
            skipped.append(name)
            continue
        dst = src if in_place else out_dir / src.name
        injected = {} if in_place else select_parameters(src, params)
        shown = ", ".join(f"{k}={v!r}" for k, v in injected.items()) or "notebook defaults"
        print(f"[pipeline] {name}: running ({shown}) ...", flush=True)
        try:
            dt = run_notebook(src, dst, injected, kernel=kernel, cwd=notebook_dir, log_output=log_output)
        except Exception as e:  # papermill's execution error carries the failing cell and traceback
            raise PipelineError(f"{name} failed; the partially executed notebook is {dst}\n{e}") from e
        if in_place:
            strip_run_metadata(dst)
        executed[name] = dt
        print(f"[pipeline] {name}: done in {dt:.0f} s -> {dst}", flush=True)
    figures = sorted(p for p in FIGURES_DIR.glob("*.png") if p.stat().st_mtime >= t_start - 1)
    stale = sorted(p for p in FIGURES_DIR.glob("*.png") if p.stat().st_mtime < t_start - 1)
    results = RUNS_DIR / profile / "results.json"
    fresh = results.is_file() and results.stat().st_mtime >= t_start - 1
    if require_results and "03_evaluate" in executed and not fresh:
        raise PipelineError(f"{results} was not written by 03_evaluate")
    total = time.perf_counter() - t0
    print(f"[pipeline] profile {profile!r}: {len(executed)} notebooks executed, {len(skipped)} skipped "
          f"({', '.join(skipped) or 'none'})")
    print(f"[pipeline] executed notebooks: {notebook_dir if in_place else out_dir}")
    print(f"[pipeline] figures: {FIGURES_DIR} ({len(figures)} refreshed"
          + (f", {len(stale)} older ones left as they were" if stale else "") + ")")
    print(f"[pipeline] results: {results if results.is_file() else 'none (03_evaluate not run)'}")
    print(f"[pipeline] total wall time: {total:.0f} s ({total / 60:.1f} min)")
    return {"executed": executed, "skipped": skipped, "figures": [str(p) for p in figures],
            "results": str(results) if results.is_file() else None, "seconds": total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Execute the sspl notebooks in order (papermill).")
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml")
    p.add_argument("--notebooks-in-place", action="store_true",
                   help="re-execute notebooks/*.ipynb in place with their own defaults (to commit them with outputs)")
    p.add_argument("--only", nargs="*", metavar="NAME", help=f"a subset of {', '.join(NOTEBOOKS)} (in pipeline order)")
    p.add_argument("--kernel", default=KERNEL)
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' outputs")
    a = p.parse_args(argv)
    if a.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = NOTEBOOKS if not a.only else [n for n in NOTEBOOKS if any(n.startswith(o) for o in a.only)]
    try:
        run_pipeline(a.profile, notebooks=names, in_place=a.notebooks_in_place, kernel=a.kernel,
                     log_output=a.log_output)
    except PipelineError as e:
        print(f"[pipeline] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

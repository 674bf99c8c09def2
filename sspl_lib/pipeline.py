"""`make reproduce`: the notebooks in order with papermill and a profile's parameters (outputs in
runs/<profile>/; every method, every study seed), after a check of every file the profile needs.

    python -m sspl_lib.pipeline --profile quick [--notebooks 04_ablation] [-p NAME VALUE] [--notebooks-in-place]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import HelpFormat
from .paths import FIGURES_DIR, REPO_ROOT, RUNS_DIR, resolve

NOTEBOOKS = ("01_data_preparation", "02_train", "03_evaluate", "04_ablation", "05_explore")
REPRODUCE = ("01_data_preparation", "02_train", "03_evaluate", "05_explore")  # make reproduce; 04: make ablation
# injected into the notebooks that declare them (not in-place runs, which keep the notebooks' cheap defaults):
# every study seed of every method, the slowest first (runs start in this order); two seeds of each ablation variant
PIPELINE_PARAMETERS = {"n_seeds": 0, "methods": ["sspl", "sacl", "sspl_wo_pcm", "ezvsl_gated", "ezvsl", "ezvsl_ogl"],
                       "seeds": [0, 1]}
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "sspl"


class PipelineError(RuntimeError):
    pass


def profile_parameters(notebook: str | Path, profile: str, extra: dict | None = None) -> dict:
    import papermill as pm

    declared = pm.inspect_notebook(str(notebook))
    return {k: v for k, v in {"profile": profile, **(extra or {})}.items() if k in declared}


def check_kernel(kernel: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel as e:
        raise PipelineError(f"Jupyter kernel {kernel!r} is not installed: run `make setup` (it runs "
                            f"`python -m ipykernel install --sys-prefix --name {kernel}`)") from e


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's per-run metadata and the saved widget state (a text note stays) from a notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                out["data"] = {"text/plain": "[interactive widget: run the notebook to use it]"}
    nbformat.write(nb, path)


def run_notebook(src: Path, dst: Path, params: dict, *, kernel: str = KERNEL, cwd: Path = NOTEBOOK_DIR,
                 log_output: bool = False, timeout: int | None = None, echo: bool = True) -> float:
    """Execute one notebook; `echo`: its printed lines (the progress lines) go to this process's stdout as
    they come, `log_output`: every output through papermill's log."""
    import papermill as pm

    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel, cwd=str(cwd),
                        progress_bar=False, log_output=log_output, execution_timeout=timeout,
                        stdout_file=sys.stdout if echo and not log_output else None)
    return time.perf_counter() - t0


FIRST_STAGE = {"01_data_preparation": "pipeline", "02_train": "train", "03_evaluate": "evaluate",
               "04_ablation": "train", "05_explore": "evaluate"}  # what the first notebook run needs on disk


def preflight(profile: str, notebooks, config=None) -> None:
    """Every file the notebooks need that is missing (weights, data, sources), named at once: PipelineError."""
    from .data.preflight import MissingFiles, check_profile_files
    from .profiles import load_profile

    try:
        cfg = load_profile(profile, config)
        first = next((n for n in NOTEBOOKS if n in notebooks), None)
        if first is not None:
            check_profile_files(cfg, FIRST_STAGE[first], f"profile {profile!r}")
    except MissingFiles as e:
        raise PipelineError(f"{e}\nNothing was run.") from e
    except (FileNotFoundError, ValueError) as e:  # a bad profile or override
        raise PipelineError(str(e)) from e


def run_pipeline(profile: str = "quick", *, notebooks=REPRODUCE, in_place: bool = False, kernel: str = KERNEL,
                 log_output: bool = False, notebook_dir: Path = NOTEBOOK_DIR, out_dir: Path | None = None,
                 require_results: bool = True, extra: dict | None = None, runs_dir: Path = RUNS_DIR) -> dict:
    """Run the notebooks in order; returns the executed ones' seconds, the skipped, figures, results.json."""
    t_start = time.time()
    t0 = time.perf_counter()
    check_kernel(kernel)
    runs_dir = resolve((extra or {}).get("runs_dir", runs_dir))  # -p runs_dir: the notebooks' runs and results
    preflight(profile, notebooks, (extra or {}).get("config"))  # a bad profile or a missing file: before any notebook
    out_dir = out_dir or runs_dir / profile / "notebooks"
    extra = {**PIPELINE_PARAMETERS, **(extra or {})}
    if profile != "quick" and not in_place:  # figures/ holds the quick profile's figures (the README shows them)
        extra = {"figures_dir": str(runs_dir / profile / "figures"), **extra}
    figures_dir = resolve(extra.get("figures_dir", FIGURES_DIR))
    figures_dir.mkdir(parents=True, exist_ok=True)
    executed, skipped = {}, []
    for name in notebooks:
        src = notebook_dir / f"{name}.ipynb"
        if not src.is_file():
            print(f"[pipeline] {name}: {src} does not exist yet, skipped", flush=True)
            skipped.append(name)
            continue
        dst = src if in_place else out_dir / src.name
        injected = {} if in_place else profile_parameters(src, profile, extra)
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
    figures = sorted(p for p in figures_dir.glob("*.png") if p.stat().st_mtime >= t_start - 1)
    stale = sorted(p for p in figures_dir.glob("*.png") if p.stat().st_mtime < t_start - 1)
    results = runs_dir / profile / "results.json"
    fresh = results.is_file() and results.stat().st_mtime >= t_start - 1
    if require_results and "03_evaluate" in executed and not fresh:
        raise PipelineError(f"{results} was not written by 03_evaluate")
    total = time.perf_counter() - t0
    print(f"[pipeline] profile {profile!r}: {len(executed)} notebooks executed, {len(skipped)} skipped "
          f"({', '.join(skipped) or 'none'})")
    print(f"[pipeline] executed notebooks: {notebook_dir if in_place else out_dir}")
    print(f"[pipeline] figures: {figures_dir} ({len(figures)} refreshed"
          + (f", {len(stale)} older ones left as they were" if stale else "") + ")")
    print(f"[pipeline] results: {results if results.is_file() else 'none (03_evaluate not run)'}")
    print(f"[pipeline] total wall time: {total:.0f} s ({total / 60:.1f} min)")
    return {"executed": executed, "skipped": skipped, "figures": [str(p) for p in figures],
            "results": str(results) if results.is_file() else None, "seconds": total}


def select_notebooks(only=None) -> list[str]:
    if not only:
        return list(REPRODUCE)
    unknown = [o for o in only if not any(n.startswith(o) for n in NOTEBOOKS)]
    if unknown:
        raise ValueError(f"--notebooks {' '.join(unknown)}: no such notebook (expected names or prefixes of "
                         f"{', '.join(NOTEBOOKS)})")
    return [n for n in NOTEBOOKS if any(n.startswith(o) for o in only)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sspl_lib.pipeline", formatter_class=HelpFormat,
                                description="Execute the sspl notebooks in order with papermill (make reproduce), "
                                            "their outputs in runs/<profile>/notebooks/; every file the profile needs "
                                            "is checked first. The notebooks' printed lines (progress) are shown.")
    p.add_argument("--profile", default="quick", help="params/<profile>.yaml")
    p.add_argument("--notebooks-in-place", action="store_true",
                   help="re-execute notebooks/*.ipynb in place with their own defaults (to commit them with outputs)")
    p.add_argument("--notebooks", "--only", dest="only", nargs="*", metavar="NAME",
                   help=f"notebooks to run, by name or prefix, of {', '.join(NOTEBOOKS)} (in this order; default: "
                        f"{', '.join(REPRODUCE)})")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a notebook parameter, as papermill's -p (VALUE read as YAML / JSON: 1, sspl, '[1, 2]'); "
                        "given to each notebook that declares NAME")
    p.add_argument("--kernel", default=KERNEL, help="the Jupyter kernel the notebooks run on (make setup installs it)")
    p.add_argument("--log-output", action="store_true", help="stream every output of the notebooks (not only "
                                                             "their printed lines)")
    return p


def notebook_parameters(pairs, notebooks) -> dict:
    """`-p NAME VALUE` pairs as parameters; a NAME no selected notebook declares is refused."""
    import papermill as pm

    from .profiles import read_yaml

    declared = {k for n in notebooks if (NOTEBOOK_DIR / f"{n}.ipynb").is_file()
                for k in pm.inspect_notebook(str(NOTEBOOK_DIR / f"{n}.ipynb"))}
    unknown = sorted({k for k, _ in pairs} - declared)
    if unknown:
        raise ValueError(f"-p {', '.join(unknown)}: not a parameter of {', '.join(notebooks)} (they declare "
                         f"{', '.join(sorted(declared))})")
    return {k: read_yaml(v) for k, v in pairs}


def main(argv=None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        names = select_notebooks(a.only)
        extra = notebook_parameters(a.parameter, names)
    except ValueError as e:
        p.error(str(e))
    try:
        run_pipeline(a.profile, notebooks=names, in_place=a.notebooks_in_place, kernel=a.kernel,
                     log_output=a.log_output, extra=extra)
    except PipelineError as e:
        print(f"[pipeline] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

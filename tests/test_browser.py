"""The explorer notebook in a real browser: JupyterLab + headless Chromium (Debian's, driven by playwright).

A tiny run over the tiny synthetic benchmark is written to a tmp folder; notebooks/05_explore.ipynb is copied
there with its parameters injected (papermill --prepare-only), JupyterLab serves that folder on localhost with a
random token, Chromium opens the notebook, runs all cells from the Run menu, waits for the widget's image, moves
the sample slider with the keyboard and checks that the image changed. The screenshot of the widget is saved
to figures/explorer.png unless that file shows a real run (PNG text chunk `sspl-source`), so the README's
screenshot of the quick run is never replaced by the tiny one.

Also a script, to (re)make the README screenshot from a real run:
    .venv/bin/python tests/test_browser.py --run-dir runs/quick/sspl --out figures/explorer.png
Needs /usr/bin/chromium (`apt-get install chromium`); never `playwright install`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "05_explore.ipynb"
SCREENSHOT = REPO / "figures" / "explorer.png"
CHROMIUM = os.environ.get("SSPL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(notebook_dir: Path, work: Path, timeout: float = 60):
    """JupyterLab on 127.0.0.1:<free port> with a random token, its state in `work`; killed on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
               JUPYTER_CONFIG_DIR=str(work / "config"), IPYTHONDIR=str(work / "ipython"), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--notebook-dir={notebook_dir}", "--ServerApp.port_retries=0",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers
        cmd.append("--allow-root")
    log = open(work / "jupyter.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({proc.returncode}): {(work / 'jupyter.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer within {timeout} s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started (its session)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def prepare_notebook(folder: Path, **parameters) -> Path:
    """A copy of the explorer notebook in `folder` with the parameters injected (papermill --prepare-only)."""
    import papermill

    out = folder / NOTEBOOK.name
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, prepare_only=True,
                               progress_bar=False, log_output=False)
    nb = json.loads(out.read_text())  # the committed notebook names the `sspl` kernel (make setup installs it);
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    out.write_text(json.dumps(nb))  # the copy runs on this interpreter's own python3 kernel
    return out


def _image_digest(page, selector: str) -> str:
    """sha-like digest of the bytes behind an <img> (blob: or data: URL), computed in the page."""
    return page.evaluate("""async (sel) => {
        const img = document.querySelector(sel);
        if (!img || !img.src) return "";
        const buf = await (await fetch(img.src)).arrayBuffer();
        const d = await crypto.subtle.digest("SHA-256", buf);
        return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, "0")).join("");
    }""", selector)


def drive_explorer(url: str, token: str, notebook: str, screenshot: Path, *, timeout_s: float = 60,
                   steps: int = 2, expect_id: str | None = None, source: str = "tiny-test",
                   check_stop: bool = False) -> dict:
    """Open the notebook, run all cells, wait for the view, move the sample slider `steps` to the right,
    (and, given `expect_id`, wait until the view names that sample), save the widget's screenshot; `check_stop`:
    then press play, wait for a step, press stop. Returns {"before", "after": SHA-256 of the view's PNG,
    "readout": the slider's, "played" / "stopped": its readout after the step / 2 s after stop, "seconds"}."""
    from playwright.sync_api import sync_playwright

    ms = int(timeout_s * 1000)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sspl-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1500, "height": 1100})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(ms)
            page.goto(f"{url}/lab/tree/{notebook}?token={token}&reset", timeout=ms)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=ms)
            # the kernel is connected when the status bar reads "<kernel name> | Idle"
            page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=ms)
            with contextlib.suppress(Exception):  # "notified about Jupyter news?" toast: no
                page.locator(".jp-toast-button", has_text="No").first.click(timeout=2000)
            page.locator(".jp-Notebook .jp-Cell").first.click()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            view = ".sspl-explorer .sspl-view"
            page.wait_for_function("(sel) => { const i = document.querySelector(sel);"
                                   " return i && i.src && i.naturalWidth > 0; }", arg=view, timeout=ms)
            before, before_src = _image_digest(page, view), page.eval_on_selector(view, "i => i.src")
            handle = page.locator(".sspl-sample .noUi-handle").first
            handle.focus()
            t_press = time.monotonic()
            for _ in range(steps):
                handle.press("ArrowRight")
            # the kernel answers with a new image (a new blob URL) and the id of the new sample
            page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel);"
                                   " return i && i.src && i.src !== old && i.complete && i.naturalWidth > 0; }",
                                   arg=[view, before_src], timeout=ms, polling=200)
            if expect_id:
                page.locator(".sspl-explorer b", has_text=expect_id).first.wait_for(timeout=ms)
            update_s = time.monotonic() - t_press  # key press -> the new sample's view in the page
            after = _image_digest(page, view)
            readout = page.locator(".sspl-sample .widget-readout").first.inner_text()
            page.mouse.move(0, 0)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".sspl-explorer").first.screenshot(path=str(screenshot))
            _tag_png(screenshot, source)
            played, stopped = (_play_then_stop(page, readout, ms) if check_stop else (None, None))
            return {"before": before, "after": after, "readout": readout, "update_s": round(update_s, 3),
                    "played": played, "stopped": stopped, "seconds": round(time.monotonic() - t0, 1)}
        except Exception:
            with contextlib.suppress(Exception):  # evidence for the failure report
                page.screenshot(path=str(screenshot.with_name(screenshot.stem + "_failure.png")))
                print("failure screenshot:", screenshot.with_name(screenshot.stem + "_failure.png"), file=sys.stderr)
            raise
        finally:
            ctx.close()


def _play_then_stop(page, readout: str, ms: int) -> tuple[str, str]:
    """Press the player's play button, wait for the slider to leave `readout`, press stop (its second button)."""
    buttons = page.locator(".sspl-explorer .widget-play button")
    buttons.nth(0).click()
    page.wait_for_function("([sel, old]) => { const r = document.querySelector(sel);"
                           " return r && r.innerText.trim() !== old; }", arg=[".sspl-sample .widget-readout", readout],
                           timeout=ms, polling=100)
    played = page.locator(".sspl-sample .widget-readout").first.inner_text()
    buttons.nth(1).click()
    page.wait_for_timeout(2000)  # longer than the player's interval: a late step or a jump back would show
    return played, page.locator(".sspl-sample .widget-readout").first.inner_text()


def _tag_png(path: Path, source: str) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("sspl-source", source)
    with Image.open(path) as im:
        im.load()
        im.save(path, pnginfo=info, optimize=True)


def _may_replace(path: Path) -> bool:
    """figures/explorer.png is replaced by the test's tiny-run screenshot only if missing or tiny itself."""
    if not path.exists():
        return True
    from PIL import Image

    with Image.open(path) as im:
        return im.info.get("sspl-source", "tiny-test") == "tiny-test"


def _require_browser():
    """Skip (with the reason) when Chromium or playwright is absent; in CI (CI=true) fail instead, so that a
    CI machine that could not install Chromium does not pass without ever running the browser."""
    in_ci = os.environ.get("CI", "").strip().lower() == "true"
    missing = None
    if not Path(CHROMIUM).exists():
        missing = (f"no Chromium at {CHROMIUM}: install Debian's with `apt-get install chromium` "
                   "(never `playwright install`), or set SSPL_CHROMIUM")
    elif importlib.util.find_spec("playwright") is None:
        missing = "the playwright python package is needed (requirements.txt)"
    if missing:
        (pytest.fail if in_ci else pytest.skip)(("CI=true: " if in_ci else "") + missing)


def test_missing_chromium_fails_in_ci_and_skips_outside(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: no Chromium at .*no-chromium"):
        _require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium at .*no-chromium"):
        _require_browser()


def test_explorer_notebook_in_chromium(tiny_benchmark, tmp_path):
    _require_browser()
    from test_explorer import make_tiny_run

    from sspl_lib.data.h5 import read_ids

    make_tiny_run(tmp_path / "runs" / "quick" / "sspl", tiny_benchmark)
    make_tiny_run(tmp_path / "runs" / "quick" / "sspl_nopcm", tiny_benchmark, use_pcm=False, seed=1)
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    prepare_notebook(nb_dir, profile="quick", config={"data_root": str(tiny_benchmark)}, runs_dir=str(tmp_path / "runs"),
                     run="sspl", split="test_multi")
    shot = tmp_path / "explorer.png"
    with jupyter_lab(nb_dir, tmp_path) as (url, token):
        res = drive_explorer(url, token, NOTEBOOK.name, shot, timeout_s=60, steps=2,
                             expect_id=read_ids(tiny_benchmark / "test_multi.h5")[2], check_stop=True)
    print("browser:", res)
    assert res["before"] and res["after"] and res["before"] != res["after"], res
    assert res["readout"].strip() == "2", res  # two ArrowRight presses: sample 0 -> 2, seen by the kernel
    # play goes on from sample 2; stop leaves the sample where playing was (no jump back to sample 0)
    assert int(res["played"]) >= 3 and int(res["stopped"]) >= int(res["played"]), res
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] > 600 and im.size[1] > 400
    if _may_replace(SCREENSHOT):
        shutil.copyfile(shot, SCREENSHOT)


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Screenshot the explorer notebook on a real run (for the README).")
    ap.add_argument("--run-dir", default="runs/quick/sspl", help="runs/<profile>/<run>")
    ap.add_argument("--split", default="test_multi")
    ap.add_argument("--out", default=str(SCREENSHOT))
    ap.add_argument("--steps", type=int, default=1, help="ArrowRight presses on the sample slider (>= 1): the sample shown")
    a = ap.parse_args(argv)
    run = Path(a.run_dir) if Path(a.run_dir).is_absolute() else REPO / a.run_dir
    sys.path.insert(0, str(REPO))
    from sspl_lib.experiments.runs import find_checkpoint, load_run
    from sspl_lib.explorer.sources import SplitData, find_splits

    data_root = load_run(run, which=find_checkpoint(run).stem).cfg.data_root
    split = SplitData(find_splits(data_root)[a.split])
    expect = split.ids[a.steps]
    split.close()
    with tempfile.TemporaryDirectory(prefix="sspl-shot-") as tmp:
        tmp = Path(tmp)
        (tmp / "nb").mkdir()
        prepare_notebook(tmp / "nb", profile=run.parent.name, runs_dir=str(run.parent.parent), run=run.name,
                         split=a.split)
        with jupyter_lab(tmp / "nb", tmp) as (url, token):
            res = drive_explorer(url, token, NOTEBOOK.name, Path(a.out), timeout_s=120, steps=a.steps,
                                 expect_id=expect, source=str(a.run_dir))
    print(f"{a.out}: {res}")


if __name__ == "__main__":
    main()

"""The notebooks as a learner meets them: JupyterLab in headless Chromium, cells run, a slider moved.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and Playwright for Python (driven with
``executable_path``; no browser download). Without them these tests are skipped and say why.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import playwright.sync_api as pw  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="playwright for Python is not installed (pip install playwright)"),
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "kfc-lite-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab from the project's environment, on 127.0.0.1, serving a copy of notebooks/."""
    folder = tmp_path_factory.mktemp("lab")
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, folder / nb.name)
    # the notebooks' own data and runs, as a learner's lab has them: notebook 03 starts from the model notebook 02
    # saved in runs/ (the notebook tests run before these and train it), instead of training it again here
    for cache in ("data", "runs"):
        (ROOT / "notebooks" / cache).mkdir(exist_ok=True)
        (folder / cache).symlink_to(ROOT / "notebooks" / cache, target_is_directory=True)
    port = free_port()
    env = dict(os.environ, KFC_QUICK="1", JUPYTER_RUNTIME_DIR=str(folder / ".runtime"))
    env.pop("MPLBACKEND", None)  # the notebook picks the inline backend, as a learner's would
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            *(["--allow-root"] if os.geteuid() == 0 else []),
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={folder}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.open_browser=False",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "lab.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(folder / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not answer within 60 s")
    yield url, folder
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


#: the notebook on show (Lumino hides the other tabs with lm-mod-hidden)
ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def widget_images(page) -> list[str]:
    return page.eval_on_selector_all(f"{ACTIVE} .jp-OutputArea-output img", "els => els.map(e => e.src)")


def run_notebook_and_move_slider(lab, browser, name: str, shots: pathlib.Path, slider_index: int = 0):
    url, folder = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/tree/{name}?reset&token={TOKEN}")  # reset: no tabs restored from an earlier test
    page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", timeout=60_000)
    time.sleep(3)  # the kernel starts
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # every code cell gets an execution count, none is still running ("[*]")
    page.wait_for_function(
        """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                 .map(e => e.textContent.trim());
                   return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }""",
        timeout=600_000,
        polling=1000,
    )
    page.screenshot(path=str(shots / f"{name}-ran.png"))
    handles = page.locator(f"{ACTIVE} .widget-slider .noUi-handle")
    assert handles.count() > slider_index, f"{name}: no slider widget on the page"
    handle = handles.nth(slider_index)
    handle.scroll_into_view_if_needed()
    before = widget_images(page)
    handle.focus()
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([sel, b]) => { const now = [...document.querySelectorAll(sel)]"
        ".map(e => e.src); return JSON.stringify(now) !== JSON.stringify(b); }",
        arg=[f"{ACTIVE} .jp-OutputArea-output img", before],
        timeout=60_000,
    )
    page.screenshot(path=str(shots / f"{name}-slider-moved.png"))
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    time.sleep(2)
    saved = json.loads((folder / name).read_text())
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(saved["cells"])
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{name}: cells show errors in the browser: {errors}"
    page.close()


@pytest.mark.parametrize("name", ["01_koopman_on_toy_systems.ipynb", "03_symmetries_of_dynamics.ipynb"])
def test_explorer_in_a_real_browser(lab, browser, name, tmp_path):
    if not (ROOT / "notebooks" / name).exists():
        pytest.skip(f"{name} is not written yet")
    run_notebook_and_move_slider(lab, browser, name, tmp_path)

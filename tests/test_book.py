"""The course's website (tools/book.py, ``make book``): a book of one notebook, executed by myst-nb in quick mode,
has an index page made from README's table and a page with the notebook's outputs and figures, which Chromium
shows (the Chromium part is skipped, saying why, where Debian's chromium or Playwright is missing)."""

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from conftest import ROOT

from kfc_lite.notebooks import SOLUTION_TAG, draws_figure, notebook_paths, tags

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import playwright.sync_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip

#: the notebook of the test book: figures and exercises, under 20 s in quick mode
NOTEBOOK = next(p for p in notebook_paths(ROOT / "notebooks") if p.name.startswith("01_"))

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, KFC_QUICK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    # A cell of the notebook takes seconds: a kernel gone quiet (tests/test_notebooks.py) is given up on after a
    # minute and a half, and tools/book.py runs the build once more. The whole build takes under a minute; its
    # limit leaves room for a machine shared with other work.
    proc = subprocess.run([sys.executable, "-m", "tools.book", "--only", NOTEBOOK.stem[:2], "--out", str(out),
                           "--cell-timeout", "90"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, f"the book did not build:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out / "html"


@functools.cache
def source():
    return nbformat.read(NOTEBOOK, as_version=4)


def title():
    return source().cells[0].source.split("\n")[0].lstrip("#").strip()


def test_the_index_lists_the_notebooks_of_the_readme_and_links_the_built_one(book):
    index = (book / "index.html").read_text()
    readme = (ROOT / "README.md").read_text()
    stems = re.findall(r"^\| `(\d\d_\w+)` \|", readme, re.M)
    assert NOTEBOOK.stem in stems, "README's table of notebooks does not name the notebook"
    assert all(stem in index for stem in stems), stems
    assert f'href="{NOTEBOOK.stem}.html"' in index
    assert title().split(":")[0] in index


def test_the_page_holds_the_executed_notebook_with_its_figures_and_folded_solutions(book):
    page = (book / f"{NOTEBOOK.stem}.html").read_text()
    n_figures = sum(draws_figure(c) for c in source().cells)
    images = re.findall(r'<img[^>]+src="(_images/[^"]+\.png)"', page)
    assert n_figures and len(images) >= n_figures, f"{n_figures} figure cells, {len(images)} images on the page"
    for src in images:
        assert (book / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    # run in quick mode with the solutions in: every check printed "passed"
    n_solutions = sum(SOLUTION_TAG in tags(c) for c in source().cells)
    assert len(re.findall(r"Exercise \d\d\.\S+: passed", page)) == n_solutions
    assert page.count("hide-input") >= n_solutions, "solution cells are not folded"


def test_a_build_stopped_by_a_stuck_kernel_runs_once_more_and_no_other_failure_does(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("KFC_QUICK", "1")  # build() passes the mode on to the kernels through the environment
    import tools.book as book_tool

    def fake(outputs):
        calls = []

        def run(cmd, cwd):
            calls.append(cmd)
            return outputs[len(calls) - 1]

        return calls, run

    monkeypatch.setattr(book_tool, "stage", lambda *args: {})
    for outputs, code, n_calls in [
        ([(2, "nbclient.exceptions.CellTimeoutError: A cell timed out"), (0, "build succeeded")], 0, 2),
        ([(2, "DeadKernelError: Kernel died"), (2, "DeadKernelError: Kernel died")], 2, 2),
        ([(2, "NameError: name 'x' is not defined")], 2, 1),
    ]:
        calls, run = fake(outputs)
        monkeypatch.setattr(book_tool, "run_and_echo", run)
        assert book_tool.build(tmp_path, only=["01"]) == code
        assert len(calls) == n_calls
        assert f"nb_execution_timeout={book_tool.QUICK_CELL_TIMEOUT}" in calls[0]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="playwright for Python is not installed (pip install playwright)")
def test_chromium_shows_the_page_with_its_title_and_figures(book, tmp_path):
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=book,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(base, timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "the static server did not start"
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            # only this site: the widget scripts a page names on a CDN are not for the test to fetch
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
            page.goto(f"{base}/index.html")
            page.click(f"a[href='{NOTEBOOK.stem}.html']")
            page.wait_for_load_state("load")
            assert page.title().startswith(title()), page.title()
            assert page.locator("div.body h1").first.inner_text().startswith(title().split(":")[0])
            loaded = page.eval_on_selector_all(
                "img[src^='_images/']", "els => els.map(e => e.complete && e.naturalWidth > 100)"
            )
            assert loaded and all(loaded), f"images on the page and whether each loaded: {loaded}"
            page.screenshot(path=str(tmp_path / "page.png"), full_page=False)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()

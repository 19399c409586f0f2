"""End-to-end checks in a real browser: the app starts, Explore draws a coloured UMAP, zooms it on a wheel step,
names the cell under a resting pointer and selects by box, no error shows (also in presentation mode on a 1280x720
screen); the guided tour walks every step from the home page, each step's figures
and tables rendering; and the HTML report opens from a file with the network blocked, every figure showing.

Runs ``streamlit run app.py`` on a free local port, drives Debian's Chromium through Playwright
(no browser download) and inspects the rendered page. Marked ``browser``; skipped when Chromium
or Playwright is missing. Set ``SCCORE_SCREENSHOT_DIR`` to keep the screenshots (``explore.png``,
``presentation.png``, and from the tour ``tour.png``, ``search.png``, ``knockout.png``, ``screen.png``).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.serving import CHROMIUM, CHROMIUM_ARGS, free_port, log_tail, start_server, stop_process

FIRST_RENDER_MS = 180_000  # a cold numba cache makes the first PCA + UMAP slow on a small machine

pytestmark = pytest.mark.browser


def _layout_png(page) -> bytes | None:
    """The PNG of the first layout viewer's image (dashboard/viewer.py) on the page, or None while there is none."""
    href = page.evaluate(
        """() => {
            const image = document.querySelector('.scv-root .scv-image');
            const h = image ? image.getAttribute('src') || '' : '';
            return h.startsWith('data:image/png') ? h : null;
        }"""
    )
    if not href:
        return None
    return base64.b64decode(href.split(",", 1)[1])


def _in_browser(tmp_path: Path, viewport: dict, check) -> None:
    """Serve ``app.py`` on a free local port, open Chromium at ``viewport`` and call ``check(page, base, log)``."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: the browser test needs Debian's Chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)  # keeps NUMBA_CACHE_DIR when it is set
    env["SCCORE_CACHE_DIR"] = str(tmp_path / "cache")
    env["SCCORE_UPLOAD_DIR"] = str(tmp_path / "uploads")
    env["PYTHONUNBUFFERED"] = "1"  # so the log tail in a failure message is current
    log = tmp_path / "streamlit.log"
    try:
        process = start_server(port, env, log)
    except RuntimeError as error:
        pytest.fail(str(error))
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                check(browser.new_page(viewport=viewport), base, log)
            finally:
                browser.close()
    finally:
        stop_process(process)


def test_explore_draws_umap_in_browser(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    _in_browser(tmp_path, {"width": 1400, "height": 2000},
                lambda page, base, log: _check_explore(page, base, tmp_path, log, Image))


def test_presentation_mode_at_1280x720_draws_explore(tmp_path):
    """Presentation mode on a 1280x720 screen: larger fonts, the logo, and Explore draws its UMAP with no error
    and no page wider than the screen."""
    Image = pytest.importorskip("PIL.Image")

    def check(page, base: str, log: Path) -> None:
        _check_explore(page, base, tmp_path, log, Image, presentation=True)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 1280, f"the Explore page is {width} px wide at 1280x720"
        assert page.locator('[data-testid="stSidebarLogo"], [data-testid="stHeaderLogo"]').count()

    _in_browser(tmp_path, {"width": 1280, "height": 720}, check)


def _check_explore(page, base: str, tmp_path: Path, log: Path, Image, presentation: bool = False) -> None:
    """Open Explore from the home page (first turning presentation mode on, if asked) and check its UMAP image;
    the screenshot goes to ``tmp_path`` (``explore.png``, or ``presentation.png``)."""
    def fail(message: str) -> None:
        shot = tmp_path / "failure.png"
        try:
            page.screenshot(path=str(shot))
        except Exception:  # noqa: BLE001 - the screenshot is only a diagnostic
            pass
        pytest.fail(f"{message}\nscreenshot: {shot}\n--- server log ---\n{log_tail(log)}")

    # The root first: a deep link on a cold server shows Streamlit's legacy page list instead of st.navigation.
    page.goto(f"{base}/", wait_until="domcontentloaded")
    # "Explore", capitalised: until app.py's st.navigation has run once, a fresh server lists the pages/ files
    # ("explore", ...) and that link would run the page without app.py
    link = page.locator('[data-testid="stSidebarNavLink"]', has_text=re.compile(r"Explore\s*$"))
    try:
        link.first.wait_for(state="visible", timeout=60_000)
    except Exception as error:  # noqa: BLE001
        fail(f"no 'Explore' link in the sidebar navigation: {error}")
    if presentation:
        page.locator('[data-testid="stSidebar"] label', has_text="Presentation mode").first.click()
        try:
            page.wait_for_function("() => getComputedStyle(document.documentElement).fontSize === '20px'",
                                   timeout=30_000)
        except Exception as error:  # noqa: BLE001
            fail(f"presentation mode did not enlarge the fonts: {error}")
    link.first.click()

    try:
        page.get_by_role("heading", name="Explore the cells").wait_for(timeout=60_000)
    except Exception as error:  # noqa: BLE001
        fail(f"the Explore page did not open: {error}")

    deadline = time.monotonic() + FIRST_RENDER_MS / 1000
    png = None
    while png is None and time.monotonic() < deadline:
        if page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count():
            break
        png = _layout_png(page)
        if png is None:
            page.wait_for_timeout(500)

    errors = _shown_errors(page)
    if errors:
        fail("the Explore page shows an error:\n" + "\n---\n".join(errors))
    if png is None:
        fail(f"no layout image (data:image/png) after {FIRST_RENDER_MS // 1000} s")

    # Let the rest of the page (buttons, exports) finish so a late exception is caught too.
    try:
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    except Exception:  # noqa: BLE001 - the status widget may linger; errors are checked below anyway
        pass
    shot = "presentation.png" if presentation else "explore.png"
    page.screenshot(path=str(tmp_path / shot))
    if os.environ.get("SCCORE_SCREENSHOT_DIR"):
        folder = Path(os.environ["SCCORE_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / shot, folder / shot)

    errors = _shown_errors(page)
    if errors:
        fail("the Explore page shows an error:\n" + "\n---\n".join(errors))

    image = Image.open(io.BytesIO(png)).convert("RGBA")
    rgba = np.asarray(image).reshape(-1, 4)
    opaque = rgba[rgba[:, 3] > 0, :3]
    colours = np.unique(opaque, axis=0)
    size = image.width * image.height
    if len(opaque) < max(500, size // 200):
        fail(f"the UMAP image looks blank: {len(opaque)} non-transparent pixels of {size} ({image.size})")
    if len(colours) < 5:
        fail(f"the UMAP image has only {len(colours)} distinct colours; cells should be coloured by cell type")
    if not presentation:
        _zoom_hover_and_select(page, fail)


# whether the first layout viewer's image is (or is not) the PNG data URL given
IMAGE_IS_JS = """([src, same]) => {
    const image = document.querySelector('.scv-root .scv-image');
    return image !== null && (image.getAttribute('src') === src) === same; }"""
# dashboard/viewer.js's counters: the hover asked for and the one answered
TOOLTIP_JS = """() => { const r = document.querySelector('.scv-root'), tip = r.querySelector('.scv-tip');
    return r.dataset.hoverAsked && r.dataset.hoverShown === r.dataset.hoverAsked && !tip.hidden; }"""
DRAWN_PIXEL_JS = """() => {
    const img = document.querySelector('.scv-root .scv-image'), canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data, box = img.getBoundingClientRect();
    for (let y = 40; y < canvas.height - 40; y += 2) for (let x = 40; x < canvas.width - 40; x += 2)
        if (pixels[(y * canvas.width + x) * 4 + 3] >= 200)
            return [box.left + x * box.width / canvas.width, box.top + y * box.height / canvas.height];
    return null;
}"""


def _zoom_hover_and_select(page, fail) -> None:
    """The first layout viewer without a button: a wheel step re-renders the new view, a resting pointer names the
    cell under it, and a box selection fills the "Selected cells" section."""
    frame = page.locator(".scv-frame").first
    box = frame.bounding_box()
    whole = page.evaluate("() => document.querySelector('.scv-root .scv-image').getAttribute('src')")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    try:
        page.wait_for_function(IMAGE_IS_JS, arg=[whole, False], timeout=60_000)
    except Exception as error:  # noqa: BLE001
        fail(f"a wheel zoom was not re-rendered: {error}")
    page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # back to the whole layout
    try:
        page.wait_for_function(IMAGE_IS_JS, arg=[whole, True], timeout=60_000)
    except Exception as error:  # noqa: BLE001
        fail(f"a double-click did not bring back the whole layout: {error}")
    wait_idle = "() => document.querySelector('[data-testid=\"stApp\"]').dataset.testScriptState === 'notRunning'"
    page.wait_for_function(wait_idle, timeout=60_000)
    x, y = page.evaluate(DRAWN_PIXEL_JS)
    page.mouse.move(x - 10, y - 10)
    page.mouse.move(x, y)
    try:
        page.wait_for_function(TOOLTIP_JS, timeout=60_000)
    except Exception as error:  # noqa: BLE001
        fail(f"no tooltip over a drawn cell: {error}")
    tooltip = page.locator(".scv-tip").first.inner_text()
    if "cell_type: " not in tooltip:
        fail(f"the tooltip does not name the cell's annotations: {tooltip!r}")
    page.locator(".scv-button", has_text="Box select").first.click()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 5, box["y"] + box["height"] - 5, steps=5)
    page.mouse.up()
    try:
        page.get_by_text(re.compile(r"cells selected \(")).first.wait_for(timeout=60_000)
    except Exception as error:  # noqa: BLE001
        fail(f"a box selection did not fill the Selected cells section: {error}")
    errors = _shown_errors(page)
    if errors:
        fail("the Explore page shows an error after zooming, hovering and selecting:\n" + "\n---\n".join(errors))


TOUR_STEP_MS = 300_000  # the first step computes the analysis; the screen deletes 25 genes in 30 cells on a CPU
# What each step of the guided tour must show once its page has run: (CSS selector, how many at least).
TOUR_FIGURES = [
    [('.scv-root .scv-image[src^="data:image/png"]', 1)],  # the UMAP coloured by cell type
    [('.scv-root .scv-image[src^="data:image/png"]', 2)],  # PCA's UMAP and the encoder's
    [('[data-testid="stDataFrame"]', 4), ('.st-key-search_plot .scv-mark', 2)],  # neighbours, their make-up, marked
    [('h3:has-text("Delete FCGR3A in cell_type = CD14+ Monocyte")', 1), ('[data-testid="stDataFrame"]', 1),
     ('[class*="st-key-ko_umap_"] .js-plotly-plot', 3)],  # the methods' table, arrows in each method's UMAP
    [('h3:has-text("Screen of cell_type = CD14+ Monocyte")', 1), ('[data-testid="stTab"]', 3),
     ('[data-testid="stDataFrame"]', 3)],  # the knockout's table, a ranked table per method, their agreement
]
# Screenshots kept from the tour (SCCORE_SCREENSHOT_DIR): step -> (file, the heading it starts at, None for the top
# of the page, and the elements it ends under).
TOUR_SHOTS = {1: ("tour.png", None, ".scv-root"),
              2: ("search.png", "Similar cells", ".st-key-search_plot"),
              3: ("knockout.png", "Knock out one gene", '[class*="st-key-ko_umap_"]'),
              4: ("screen.png", "Screen: which knockouts move cells most, or toward a goal state",
                  '[data-testid="stAlert"]')}  # down to the caveat under the methods' agreement


def test_guided_tour_in_browser(tmp_path):
    """The guided tour from the home page: Next through every step, each step's figures and tables render with no
    error, Back once, then Leave tour keeps the page as it is."""
    Image = pytest.importorskip("PIL.Image")

    def check(page, base: str, log: Path) -> None:
        def fail(message: str) -> None:
            page.screenshot(path=str(tmp_path / "failure.png"))
            pytest.fail(f"{message}\nscreenshot: {tmp_path / 'failure.png'}\n--- server log ---\n{log_tail(log)}")

        page.goto(f"{base}/", wait_until="domcontentloaded")
        start = page.get_by_role("button", name="Take the guided tour", exact=True)
        try:
            start.wait_for(state="visible", timeout=120_000)
        except Exception as error:  # noqa: BLE001
            fail(f"no 'Take the guided tour' button on the home page: {error}")
        start.click()
        for index, figures in enumerate(TOUR_FIGURES):
            if index:
                page.get_by_role("button", name="Next", exact=True).click()
            _wait_for_tour_step(page, index, figures, fail)
            if index in TOUR_SHOTS and os.environ.get("SCCORE_SCREENSHOT_DIR"):
                _keep_screenshot(page, *TOUR_SHOTS[index], Image)
        assert page.locator(".st-key-tour_next").count() == 0  # the last step has no Next

        page.get_by_role("button", name="Back", exact=True).click()
        _wait_for_tour_step(page, 3, TOUR_FIGURES[3], fail)
        page.get_by_role("button", name="Leave tour", exact=True).click()
        try:
            page.locator(".st-key-tour_panel").wait_for(state="detached", timeout=60_000)
        except Exception as error:  # noqa: BLE001
            fail(f"Leave tour did not hide the tour's panel: {error}")
        _wait_for_figures(page, TOUR_FIGURES[3], fail, "after leaving the tour")
        assert page.get_by_role("heading", name="In-silico knockout").count() == 1  # still the same page

    _in_browser(tmp_path, {"width": 1280, "height": 4000}, check)


def _wait_for_tour_step(page, index: int, figures: list, fail) -> None:
    """Wait until the tour's panel shows step ``index`` and its page's ``figures``, with no error shown."""
    label = f"step {index + 1} of {len(TOUR_FIGURES)}"
    try:
        page.locator(".st-key-tour_panel", has_text=label).wait_for(timeout=TOUR_STEP_MS)
    except Exception as error:  # noqa: BLE001
        fail(f"the tour's panel never showed {label}: {error}")
    _wait_for_figures(page, figures, fail, f"at {label}")


def _wait_for_figures(page, figures: list, fail, where: str) -> None:
    """Wait until every (selector, count) of ``figures`` is on the page and the run has finished; fail on an error."""
    deadline = time.monotonic() + TOUR_STEP_MS / 1000
    missing = figures
    while time.monotonic() < deadline:
        if _shown_errors(page):
            break
        missing = [(selector, n) for selector, n in figures if page.locator(selector).count() < n]
        if not missing:
            break
        page.wait_for_timeout(500)
    try:
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=TOUR_STEP_MS)
    except Exception:  # noqa: BLE001 - the status widget may linger; errors are checked below anyway
        pass
    errors = _shown_errors(page)
    if errors:
        fail(f"the page shows an error {where}:\n" + "\n---\n".join(errors))
    if missing:
        fail(f"these never showed {where}: {missing}")


def _keep_screenshot(page, name: str, heading: str | None, last: str, Image) -> None:
    """Save the main area from ``heading`` (or the top) down to the last element matching ``last`` as
    ``SCCORE_SCREENSHOT_DIR/name``, in at most 256 colours to keep the committed file small."""
    main = page.locator('[data-testid="stMain"]').bounding_box()
    top = page.get_by_role("heading", name=heading).first.bounding_box()["y"] - 16 if heading else 0
    ends = page.locator(last)
    boxes = [ends.nth(i).bounding_box() for i in range(ends.count())]
    bottom = max(box["y"] + box["height"] for box in boxes if box)  # hidden elements have no box
    left = 0 if heading is None else main["x"]
    clip = {"x": left, "y": top, "width": main["x"] + main["width"] - left, "height": bottom + 16 - top}
    folder = Path(os.environ["SCCORE_SCREENSHOT_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
    image.quantize(256, dither=Image.Dither.NONE).save(folder / name, optimize=True)


def _shown_errors(page) -> list[str]:
    found = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    return [found.nth(i).inner_text() for i in range(found.count())]


def test_report_opens_offline_in_browser(tmp_path):
    """The HTML report from ``sccore.report`` opens from a file with the network blocked: every figure shows and
    the console stays clean."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: the browser test needs Debian's Chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import pandas as pd

    from sccore.embed import pca
    from sccore.pp import PreprocessParams, preprocess
    from sccore.report import write_report
    from tests.conftest import make_counts

    adata = preprocess(make_counts(n_cells=300), PreprocessParams(min_genes=0))
    pca(adata)
    knockouts = pd.DataFrame([{"gene": "<script>alert(1)</script>", "method": "pca", "n_cells": 10,
                               "n_not_expressed": 0, "mean_cosine": 0.99, "mean_shift": 0.01, "mean_shift_norm": 0.2}])
    report = tmp_path / "report.html"
    write_report(report, adata, knockouts=knockouts)

    requested, problems = [], []

    def file_only(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.route("**/*", file_only)
            page = context.new_page()
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate("() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            heading = page.locator("h1").inner_text()
        finally:
            browser.close()
    assert requested == [], f"the report asked the network for {requested}"
    assert problems == [], problems
    assert len(images) >= 3, images  # QC histograms, variance per PC, PC1 vs PC2
    assert all(complete and width > 0 for _, complete, width in images), images
    assert heading.startswith("sccore report")

"""Explore's interaction latency in a real browser (issue 17): re-colour, zoom, pan and hover, gesture end to picture.

Serves this checkout, then today's main (``git archive`` of ``--baseline-ref`` into a temporary folder), one after the
other on 127.0.0.1 with one shared temporary cache (so both draw the same analysis), the data folder of ``--h5ad``
and ``--atlas``; drives Debian's headless Chromium through Playwright. On a 10,000-cell file and on the atlas:
re-colour by an annotation (choosing it in the select box) and by a gene (typing it, Enter), zoom (one mouse-wheel
step; this checkout re-renders when no wheel event came for 100 ms, which the figure includes), pan (a drag, timed
from the release) and hover (the pointer comes to rest on a drawn cell; timed to the tooltip naming it; the 40 ms rest
before asking is included). Each is timed from the gesture's end to the moment the new picture (the decoded image of
the new view or colour, titled with it) or the tooltip is on screen. A main older than the layout viewer has no wheel
zoom, pan or hover on its plotly figure: its zoom is "Zoom to selection" after a lasso, timed from the click to the new
image. Reported: the median
and range over ``--repeats`` gestures (each to a view or colour not drawn before in that server, so nothing is served
from a cache), the ratio main / this checkout, and the targets (re-colour <= 0.3 s by an annotation and <= 0.5 s by a
gene; zoom, pan and hover <= 0.5 s).

    python benchmarks/bench_interaction.py [--h5ad /work/bench_data/kang_10k.h5ad] [--atlas FOLDER] [--repeats 5]
        [--baseline-ref main] [--write-results]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from results import OtherLoad, command_line, machine_facts, md_table, write_section  # noqa: E402
from serving import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, SCRIPT_IDLE_JS, free_port, log_tail, start_server, stop_process,
)

HEADING = "## Explore: re-colour, zoom, pan and hover in the browser (issue 17)"
VIEWPORT = {"width": 1400, "height": 1800}
FIRST_PICTURE_MS = 900_000  # opening a file computes its analysis (QC, PCA, neighbours, UMAP) on a cold cache
STEP_MS = 120_000
TARGETS = {"re-colour by an annotation": 0.3, "re-colour by a gene": 0.5, "zoom (wheel)": 0.5, "pan (drag)": 0.5,
           "hover (tooltip)": 0.5}
VIEWER = ".scv-root"
# this checkout: the viewer's counters (dashboard/viewer.js) say which view / image / hover answer is on screen
COLOURED_JS = "(option) => (document.querySelector('.scv-root').dataset.shownTitle || '').endsWith(' · ' + option)"
VIEW_SHOWN_JS = """(n) => { const r = document.querySelector('.scv-root');
    return +(r.dataset.requested || 0) > n && r.dataset.shown === r.dataset.requested; }"""
TOOLTIP_JS = """(n) => { const r = document.querySelector('.scv-root'), tip = r.querySelector('.scv-tip');
    return +(r.dataset.hoverAsked || 0) > n && r.dataset.hoverShown === r.dataset.hoverAsked && !tip.hidden; }"""
# a drawn cell near the centre of the first viewer's image, in page pixels
DRAWN_CELL_JS = """(offset) => {
    const img = document.querySelector('.scv-root .scv-image'), canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data, box = img.getBoundingClientRect();
    const cx = canvas.width / 2 + offset, cy = canvas.height / 2;
    let best = null, nearest = Infinity;
    for (let y = 2; y < canvas.height - 2; y += 3) for (let x = 2; x < canvas.width - 2; x += 3) {
        if (pixels[(y * canvas.width + x) * 4 + 3] < 250) continue;
        const d = Math.hypot(x - cx, y - cy);
        if (d < nearest) { nearest = d; best = [box.left + x * box.width / canvas.width,
                                                box.top + y * box.height / canvas.height]; }
    }
    return best;
}"""
# today's main: the first plotly figure's title names the colour and it has its layout image
PLOTLY_COLOURED_JS = """(option) => { const chart = document.querySelector('[data-testid="stPlotlyChart"]');
    const title = chart && chart.querySelector('.gtitle'), image = chart && chart.querySelector('image');
    return title !== null && image !== null && title.textContent.endsWith('· ' + option); }"""
# today's main: the first plotly layout image's PNG
PLOTLY_IMAGE_JS = """() => { const image = document.querySelector('[data-testid="stPlotlyChart"] image');
    return image ? (image.getAttribute('href') || image.getAttribute('xlink:href') || '') : ''; }"""


def plotly_changed_js() -> str:
    """A predicate on the old PNG: true once the first plotly layout image shows another PNG."""
    return (f"(old) => {{ const href = ({PLOTLY_IMAGE_JS})(); "
            "return href.startsWith('data:image/png') && href !== old; }")


def snapshot(ref: str, folder: Path) -> str:
    """Write the files of git ``ref`` into ``folder``; return its commit."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = folder.with_suffix(".tar")
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, stdout=handle)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return commit


def largest_atlas(folder: Path) -> Path | None:
    """The finished atlas (every stage in ``manifest.json``, ``atlas.h5ad``) in ``folder`` with the most cells kept."""
    sizes = {}
    for manifest in folder.glob("*/manifest.json"):
        stages = json.loads(manifest.read_text()).get("stages", {})
        if "frame" in stages and (manifest.parent / "atlas.h5ad").is_file():
            kept = [v.get("cells_kept") for v in stages.values() if isinstance(v, dict)]
            sizes[manifest.parent] = max([k for k in kept if k] or [0])
    return max(sizes, key=sizes.get) if sizes else None


def wait_idle(page, timeout_ms: float = STEP_MS) -> None:
    """Until the app's script has stopped running."""
    page.wait_for_function(SCRIPT_IDLE_JS, timeout=timeout_ms, polling=50)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label`` by typing it (long lists show only some options)."""
    box = page.locator('[data-testid="stSelectbox"]', has_text=label).first
    box.click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).first.click()


def open_dataset(page, base: str, kind: str, label: str) -> None:
    """Open the data-folder file or atlas ``label`` on the Home page, then the Explore page."""
    page.goto(f"{base}/", wait_until="domcontentloaded")
    page.get_by_text("Categorical annotations").first.wait_for(timeout=FIRST_PICTURE_MS)
    wait_idle(page)
    cells = page.locator('[data-testid="stMetricValue"]').first.inner_text()  # of the dataset open now
    page.locator('[data-testid="stRadio"] label', has_text=kind).first.click()
    wait_idle(page)
    choose(page, "File" if kind.startswith("A file") else "Atlas", label)
    wait_idle(page)
    page.get_by_role("button", name="Open file" if kind.startswith("A file") else "Open atlas").click()
    page.wait_for_function("(old) => { const m = document.querySelector('[data-testid=\"stMetricValue\"]');"
                           " return m !== null && m.textContent.trim() !== old; }", arg=cells.strip(),
                           timeout=FIRST_PICTURE_MS, polling=200)
    wait_idle(page, FIRST_PICTURE_MS)
    page.locator('[data-testid="stSidebarNavLink"]', has_text=re.compile(r"Explore\s*$")).first.click()
    page.get_by_role("heading", name="Explore the cells").wait_for(timeout=STEP_MS)


def timed(act, shown) -> float:
    """Seconds from the end of ``act()`` (the gesture) to the end of ``shown()`` (the picture on screen)."""
    act()
    start = time.perf_counter()
    shown()
    return time.perf_counter() - start


class Viewer:
    """This checkout's Explore page: the layout viewer (dashboard/viewer.py) and its counters."""

    def __init__(self, page):
        self.page = page
        page.wait_for_selector(f"{VIEWER}[data-images]", timeout=FIRST_PICTURE_MS)
        wait_idle(page)
        box = page.locator(".scv-frame").first.bounding_box()
        self.centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def counter(self, name: str) -> int:
        """One of the viewer's counters (images, requested, hoverAsked)."""
        return int(self.page.evaluate(f"() => +(document.querySelector('{VIEWER}').dataset.{name} || 0)"))

    def recolour(self, label: str, option: str) -> float:
        """Choose a colour; seconds to its picture (titled with it) on screen."""
        box = self.page.locator('[data-testid="stSelectbox"]', has_text=label).first
        box.click()
        self.page.keyboard.type(option)
        seconds = timed(lambda: self.page.keyboard.press("Enter"),
                        lambda: self.page.wait_for_function(COLOURED_JS, arg=option, timeout=STEP_MS, polling=5))
        wait_idle(self.page)
        return seconds

    def zoom(self, step: int) -> float:
        """One wheel step (in on even steps, out on odd ones, about a point moving right); seconds to the picture."""
        asked = self.counter("requested")
        self.page.mouse.move(self.centre[0] + 7 * step, self.centre[1] - 5 * step)
        seconds = timed(lambda: self.page.mouse.wheel(0, -240 if step % 2 == 0 else 200),
                        lambda: self.page.wait_for_function(VIEW_SHOWN_JS, arg=asked, timeout=STEP_MS, polling=5))
        wait_idle(self.page)
        return seconds

    def pan(self, step: int) -> float:
        """Drag by about 90 px (alternating directions); seconds from the release to the picture."""
        asked = self.counter("requested")
        x, y = self.centre
        sign = 1 if step % 2 == 0 else -1
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        for part in range(1, 6):
            self.page.mouse.move(x + sign * 18 * part, y + sign * 9 * part + step)
        seconds = timed(self.page.mouse.up,
                        lambda: self.page.wait_for_function(VIEW_SHOWN_JS, arg=asked, timeout=STEP_MS, polling=5))
        wait_idle(self.page)
        return seconds

    def hover(self, step: int) -> float:
        """Bring the pointer to rest on a drawn cell; seconds to its tooltip."""
        asked = self.counter("hoverAsked")
        x, y = self.page.evaluate(DRAWN_CELL_JS, 25 * step - 60)
        self.page.mouse.move(x - 25, y - 15)
        seconds = timed(lambda: self.page.mouse.move(x, y),
                        lambda: self.page.wait_for_function(TOOLTIP_JS, arg=asked, timeout=STEP_MS, polling=5))
        wait_idle(self.page)
        return seconds


class PlotlyPage:
    """Today's main's Explore page: a plotly figure with a datashaded layout image and a "Zoom to selection" button."""

    def __init__(self, page):
        self.page = page
        page.wait_for_function("() => (" + PLOTLY_IMAGE_JS + ")().startsWith('data:image/png')",
                               timeout=FIRST_PICTURE_MS, polling=100)
        wait_idle(page)

    def image(self) -> str:
        """The PNG the figure shows now."""
        return self.page.evaluate(PLOTLY_IMAGE_JS)

    def changed(self, old: str) -> None:
        """Until the figure shows another PNG."""
        self.page.wait_for_function(plotly_changed_js(), arg=old, timeout=STEP_MS, polling=5)

    def recolour(self, label: str, option: str) -> float:
        """Choose a colour; seconds to the figure titled with it (its image comes in the same figure)."""
        box = self.page.locator('[data-testid="stSelectbox"]', has_text=label).first
        box.click()
        self.page.keyboard.type(option)
        seconds = timed(lambda: self.page.keyboard.press("Enter"), lambda: self.page.wait_for_function(
            PLOTLY_COLOURED_JS, arg=option, timeout=STEP_MS, polling=5))
        wait_idle(self.page)
        return seconds

    def zoom(self, step: int) -> float:
        """Lasso a region round the centre, then "Zoom to selection"; seconds from the click to the new image."""
        chart = self.page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
        x, y = chart["x"] + chart["width"] / 2 + 5 * step, chart["y"] + chart["height"] / 2
        self.page.mouse.move(x - 60, y - 50)
        self.page.mouse.down()
        for dx, dy in [(60, -50), (60, 50), (-60, 50), (-70, 0), (-60, -45)]:
            self.page.mouse.move(x + dx, y + dy, steps=4)
        self.page.mouse.up()
        button = self.page.get_by_role("button", name="Zoom to selection").first
        self.page.wait_for_function("() => { const b = Array.from(document.querySelectorAll('button')).find("
                                    "b => b.textContent.includes('Zoom to selection')); return b && !b.disabled; }",
                                    timeout=STEP_MS, polling=20)
        wait_idle(self.page)
        old = self.image()
        seconds = timed(button.click, lambda: self.changed(old))
        wait_idle(self.page)
        old = self.image()
        self.page.get_by_role("button", name="Reset view").first.click()
        self.changed(old)
        wait_idle(self.page)
        return seconds


def explore_plot(page):
    """The Explore page's plot: the layout viewer, or (a main older than it) the plotly figure."""
    page.wait_for_selector(f"{VIEWER}, [data-testid='stPlotlyChart']", timeout=FIRST_PICTURE_MS)
    return Viewer(page) if page.locator(VIEWER).count() else PlotlyPage(page)


def measure_server(root: Path, env: dict, workdir: Path, name: str, datasets: dict, repeats: int) -> dict:
    """Serve ``root`` and time every gesture it offers on each of ``datasets`` (name -> (Home page choice, label,
    annotations, genes)); returns {(dataset, gesture): [seconds]}."""
    from playwright.sync_api import sync_playwright

    log = workdir / f"{name}.log"
    server = start_server(free_port(), dict(env, PYTHONPATH=str(root)), log, root=root)
    base = f"http://127.0.0.1:{server.args[server.args.index('--server.port') + 1]}"
    times: dict = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            try:
                for dataset, (kind, label, columns, genes) in datasets.items():
                    open_dataset(page, base, kind, label)
                    plot = explore_plot(page)
                    times[(dataset, "re-colour by an annotation")] = [plot.recolour("Annotation", column)
                                                                      for column in columns[:repeats]]
                    page.locator('[data-testid="stRadio"] label', has_text="Gene").first.click()
                    wait_idle(page)
                    first = page.locator('[data-testid="stSelectbox"]', has_text="Gene").first.inner_text()
                    first = first.strip().splitlines()[-1].strip()  # the gene shown on switching to genes
                    times[(dataset, "re-colour by a gene")] = [plot.recolour("Gene", gene) for gene in
                                                               [g for g in genes if g != first][:repeats]]
                    times[(dataset, "zoom (wheel)" if isinstance(plot, Viewer) else "zoom (lasso + button)")] = [
                        plot.zoom(i) for i in range(repeats)]
                    if isinstance(plot, Viewer):
                        times[(dataset, "pan (drag)")] = [plot.pan(i) for i in range(repeats)]
                        times[(dataset, "hover (tooltip)")] = [plot.hover(i) for i in range(repeats)]
            except BaseException:
                shot = Path(tempfile.gettempdir()) / f"bench_interaction_failure_{os.getpid()}.png"
                page.screenshot(path=str(shot))
                print(f"screenshot of the failure: {shot}", file=sys.stderr)
                raise
            finally:
                browser.close()
    except BaseException:
        print(f"--- {name} server log ---\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        stop_process(server)
    return times


def dataset_facts(source: Path) -> tuple[list[str], list[str]]:
    """The annotations to re-colour by (those the page offers, ``sccore.annotations.annotation_columns``, but the
    first, which it shows first) and genes to colour by (spread over the genes, so none repeats) of an ``.h5ad`` file
    or an atlas folder."""
    import anndata as ad

    from sccore.annotations import annotation_columns

    adata = ad.read_h5ad(source / "atlas.h5ad" if source.is_dir() else source, backed="r")
    columns, genes = annotation_columns(adata)[1:], list(adata.var_names[:: max(1, adata.n_vars // 40)])
    adata.file.close()
    return columns, genes


def seconds_range(values: list[float]) -> str:
    """Median and range, in seconds."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def report(ours: dict, main: dict, facts: dict, args, commit: str, load: float) -> str:
    """The results section (markdown)."""
    rows = []
    for (dataset, step), values in ours.items():
        baseline_step = "zoom (lasso + button)" if step == "zoom (wheel)" and (dataset, step) not in main else step
        before = main.get((dataset, baseline_step))
        median = statistics.median(values)
        target = TARGETS.get(step)
        rows.append([dataset, step, seconds_range(values),
                     (f"{seconds_range(before)}" + (" (button)" if baseline_step != step else "")) if before else
                     "no such gesture",
                     f"{statistics.median(before) / median:.1f}x" if before else "—",
                     f"<= {target} s: {'met' if median <= target else 'MISSED'}" if target else ""])
    headers = ["dataset", "gesture", "this checkout: median (range), s", f"main {commit[:8]}: median (range), s",
               "main / this", "target"]
    lines = [md_table(headers, rows), "",
             f"- {args.repeats} gestures each (re-colour by an annotation: one per annotation the page offers but the "
             "first, shown on opening), every one to a view or colour not drawn before on that server; timed "
             "from the gesture's end (option chosen, last wheel event, mouse release, pointer at rest) to the new "
             "picture decoded on screen or the tooltip shown; headless Chromium at "
             f"{VIEWPORT['width']}x{VIEWPORT['height']}.",
             f"- other processes used {load:.2f} cores on average during the run (the machine is shared).",
             "", "Command:", "", "```", command_line(), "```", "", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    return "\n".join(lines)


def main() -> None:
    """Measure both servers, print the table; with ``--write-results`` update benchmarks/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5ad", type=Path, default=Path("/work/bench_data/kang_10k.h5ad"))
    parser.add_argument("--atlas", type=Path, default=None, help="default: the largest atlas beside --h5ad")
    parser.add_argument("--no-atlas", action="store_true", help="the 10k file only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-ref", default="main", help="the git ref served as today's main")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="the servers' analysis cache (default: a temporary folder, so the first picture of each "
                             "file is computed in the run)")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: this benchmark drives Debian's Chromium")
    if not args.h5ad.is_file():
        sys.exit(f"{args.h5ad} not found: make it with benchmarks/make_large_dataset.py --cells 10000 -o {args.h5ad}")
    atlas = None if args.no_atlas else (args.atlas or largest_atlas(args.h5ad.parent))
    if atlas is not None and atlas.parent != args.h5ad.parent:
        sys.exit("--atlas must be in the same folder as --h5ad (the app's data folder)")
    datasets = {"10k file": ("A file from the data folder", f"{args.h5ad.parent.name}/{args.h5ad.name}",
                             *dataset_facts(args.h5ad))}
    if atlas is not None:
        datasets[f"atlas {atlas.name}"] = ("An atlas", f"{atlas.parent.name}/{atlas.name}", *dataset_facts(atlas))
    facts = machine_facts(["streamlit", "playwright", "datashader", "numpy"])
    load = OtherLoad().start()
    with tempfile.TemporaryDirectory(prefix="sccore-interaction-") as folder:
        workdir = Path(folder)
        commit = snapshot(args.baseline_ref, workdir / "main")
        env = dict(os.environ, SCCORE_CACHE_DIR=str(args.cache_dir or workdir / "cache"),
                   SCCORE_UPLOAD_DIR=str(workdir / "uploads"),
                   SCCORE_DATA_DIRS=str(args.h5ad.parent), SCCORE_SETTINGS="/dev/null", PYTHONUNBUFFERED="1")
        ours = measure_server(ROOT, env, workdir, "this checkout", datasets, args.repeats)
        main_times = measure_server(workdir / "main", env, workdir, "main", datasets, args.repeats)
    text = report(ours, main_times, facts, args, commit, load.stop())
    print(text)
    if args.write_results:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()

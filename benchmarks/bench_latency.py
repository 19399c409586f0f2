"""Click-to-picture waits in a real browser, beside today's main measured in the same run (issue 17).

For each version of the app (this checkout, and a ``git worktree`` of the baseline commit, default cd526f9), one
``streamlit run app.py`` on 127.0.0.1 with private cache, upload and data folders (the data folder holds a copy of a
10,000-cell file, ``--data``), and headless Chromium (Debian's, through Playwright) timing, from the click to the
picture shown with the app's script stopped:

- open the 10k file (Home: Open file, then Explore) to its first coloured UMAP: the first time (empty cache), in a
  new browser session (cached), and after a server restart (results cached on disk);
- re-colour the UMAP by another annotation, and by genes;
- a knockout of one gene in 1,000 of the 10k file's cells (the two baselines: no encoder embeds it), and in the
  demo's 700 cells with the small demo encoder and both baselines (each a new gene, so computed, not cached);
- in a new session on the 10k file: the Search & transfer page's first visit to its plot (which shows its first cell's
  neighbours), then a search with another number of neighbours (each a new k, so computed).

"Picture shown" is robust to the plot widget: a new image (a plotly layout image, an ``<img>`` or a canvas) differs
from every image shown before the click, and the script has stopped running. Versions run one after the other, so
they never compete for the cores; the machine is shared, so each figure comes with the load of other processes.
Each wait also records where the CPU went: the seconds used by Chromium's processes (scripts, layout and drawing of
the page) and by the server process.

    python benchmarks/bench_latency.py [--baseline cd526f9] [--repeats 3] [--knockouts-only] [--write-results]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from results import OtherLoad, command_line, machine_facts, md_table, write_section
from serving import (
    CHROMIUM, CHROMIUM_ARGS, SCRIPT_IDLE_JS, WATCH_RERUN_JS, free_port, log_tail, start_server, stop_process,
)

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Click-to-picture latency: first frame, re-colour, knockout (issue 17)"
DEFAULT_DATA = Path("/work/bench_data/kang_10k.h5ad")
VIEWPORT = {"width": 1400, "height": 1600}
TARGETS = {"open 10k: first time": 15.0, "open 10k: new session (cached)": 2.0,
           "open 10k: after server restart (cached)": 2.0, "re-colour by annotation": 0.3, "re-colour by gene": 0.5,
           "knockout, 1,000 cells, both baselines": 1.5, "knockout, 700 demo cells, small encoder + baselines": 4.0}
GENES = ["LYZ", "CST3", "NKG7", "GNLY", "CD3E", "FCGR3A", "S100A8", "S100A9", "HLA-DRA", "CD79A", "IL7R", "CCL5",
         "MS4A1", "GZMB", "PPBP"]
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'
# Every image the main area shows, as short fingerprints: plotly's layout images, <img> and canvases.
IMAGES_JS = """() => {
    const main = document.querySelector('[data-testid="stMainBlockContainer"]') || document.body;
    const marks = [];
    const mark = (text) => marks.push(text.length + ':' + text.slice(-48) + ':' + text.slice(text.length >> 1,
                                                                                            (text.length >> 1) + 48));
    main.querySelectorAll('image').forEach(i => mark(i.getAttribute('href') || i.getAttribute('xlink:href') || ''));
    main.querySelectorAll('img').forEach(i => mark(i.getAttribute('src') || ''));
    main.querySelectorAll('canvas').forEach(c => { try { mark(c.toDataURL()); } catch (e) { mark('canvas'); } });
    return marks.filter(m => !m.startsWith('0:'));
}"""
# A new image, or (when the new picture looks exactly like the old one, e.g. two columns grouping the cells alike) a
# finished run of the script with an image shown; either way with the script stopped.
NEW_PICTURE_JS = """(before) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (app === null || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const images = (%s)();
    return images.some(m => !before.includes(m)) || (window.sccoreRerunStarted === true && images.length > 0);
}""" % IMAGES_JS


@dataclass
class Timings:
    """Seconds per measured wait (several for repeated ones), errors seen and the other processes' load."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)
    browser_cpu: dict[str, list[float]] = field(default_factory=dict)  # Chromium's CPU seconds per wait
    server_cpu: dict[str, list[float]] = field(default_factory=dict)  # the server process's CPU seconds per wait

    def add(self, name: str, seconds: float, browser_cpu: float, server_cpu: float) -> None:
        """Record one wait, with the CPU seconds Chromium and the server used in it."""
        self.seconds.setdefault(name, []).append(seconds)
        self.browser_cpu.setdefault(name, []).append(browser_cpu)
        self.server_cpu.setdefault(name, []).append(server_cpu)
        print(f"  {name}: {seconds:.2f} s (CPU s: Chromium {browser_cpu:.2f}, server {server_cpu:.2f})", flush=True)


class Browser:
    """One page of a new browser context, with the waits the benchmark needs (``server``: the server's process id, whose
    CPU time each wait records)."""

    def __init__(self, browser, base: str, timings: Timings, timeout_s: float, server: int,
                 shots: Path | None = None):
        import psutil

        self.browser, self.base, self.timings, self.timeout_ms = browser, base, timings, timeout_s * 1000
        self.server, self.shots = psutil.Process(server), shots

    async def __aenter__(self) -> "Browser":
        self.context = await self.browser.new_context(viewport=VIEWPORT)
        self.page = await self.context.new_page()
        self.page.on("pageerror", lambda error: self.timings.errors.append(f"page error: {error}"))
        self.page.on("crash", lambda _: self.timings.errors.append("page crashed"))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.context.close()

    async def counters(self) -> tuple[float, float, float]:
        """Now: the clock, and the CPU seconds of Chromium's processes (browser, renderers, GPU: every process of
        this benchmark named chromium, with the children they waited for) and of the server."""
        import psutil

        browser = 0.0
        for process in psutil.Process().children(recursive=True):
            try:
                if "chrom" in process.name():
                    times = process.cpu_times()
                    browser += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:  # exited meanwhile
                continue
        times = self.server.cpu_times()
        return time.perf_counter(), browser, times.user + times.system

    async def record(self, name: str, start: tuple[float, float, float]) -> None:
        """Record the wait ``name`` from ``start`` (:meth:`counters`) to now."""
        end = await self.counters()
        self.timings.add(name, end[0] - start[0], end[1] - start[1], end[2] - start[2])

    async def idle(self) -> None:
        """Until the app's script has stopped running."""
        await self.page.wait_for_function(SCRIPT_IDLE_JS, timeout=self.timeout_ms, polling=50)

    async def images(self) -> list[str]:
        """Fingerprints of the images shown now."""
        return await self.page.evaluate(IMAGES_JS)

    async def new_picture(self, before: list[str]) -> None:
        """Until an image not in ``before`` is shown and the script has stopped."""
        await self.page.wait_for_function(NEW_PICTURE_JS, arg=before, timeout=self.timeout_ms, polling=50)

    async def check_errors(self, step: str) -> None:
        """Count the exception blocks and error boxes shown after ``step`` (and keep a screenshot with ``--shots``)."""
        if self.shots is not None:
            count = len(self.timings.seconds.get(step, []))
            await self.page.screenshot(path=str(self.shots / f"{re.sub(r'[^A-Za-z0-9]+', '-', step)}-{count}.png"))
        shown = self.page.locator(ERROR_SELECTOR)
        for i in range(await shown.count()):
            self.timings.errors.append(f"{step}: {(await shown.nth(i).inner_text())[:200]}")

    async def open_home(self) -> None:
        """Open the app on its Home page."""
        await self.page.goto(f"{self.base}/", wait_until="domcontentloaded")
        await self.page.get_by_text("Categorical annotations").first.wait_for(timeout=self.timeout_ms)
        await self.idle()

    async def nav(self, title: str) -> None:
        """Click the sidebar link of the page titled ``title``."""
        await self.page.locator('[data-testid="stSidebarNavLink"]', has_text=re.compile(
            rf"{re.escape(title)}\s*$")).first.click(timeout=self.timeout_ms)

    async def open_file_to_umap(self, name: str) -> None:
        """Home: choose the data folder's file, then time Open file -> Explore's first coloured picture."""
        await self.open_home()
        await self.page.get_by_text("A file from the data folder").click(timeout=self.timeout_ms)
        await self.idle()
        await self.page.get_by_role("button", name="Open file").wait_for(timeout=self.timeout_ms)
        before = await self.images()
        start = await self.counters()
        await self.page.get_by_role("button", name="Open file").click(timeout=self.timeout_ms)
        await self.page.get_by_text("10,000").first.wait_for(timeout=self.timeout_ms)
        await self.idle()
        await self.nav("Explore")
        await self.page.get_by_role("heading", name="Explore the cells").wait_for(timeout=self.timeout_ms)
        await self.new_picture(before)
        await self.record(name, start)
        await self.check_errors(name)

    async def typed_option(self, label: str, option: str):
        """Open the select box labelled ``label`` and type ``option`` (long lists work too); its entry in the list."""
        box = self.page.locator('[data-testid="stSelectbox"]', has_text=label).first
        await box.click(timeout=self.timeout_ms)
        await box.locator("input").fill(option, timeout=self.timeout_ms)
        entry = self.page.get_by_role("option", name=option, exact=True).first
        await entry.wait_for(timeout=self.timeout_ms)
        return entry

    async def options(self, label: str) -> tuple[str, list[str]]:
        """The value chosen in the select box labelled ``label``, and its options."""
        box = self.page.locator('[data-testid="stSelectbox"]', has_text=label).first
        value = await box.locator("input").input_value(timeout=self.timeout_ms)
        await box.click(timeout=self.timeout_ms)
        await self.page.get_by_role("option").first.wait_for(timeout=self.timeout_ms)
        texts = await self.page.get_by_role("option").all_inner_texts()
        await self.page.keyboard.press("Escape")
        return value, [text.strip() for text in texts]

    async def timed_choice(self, name: str, label: str, option: str) -> None:
        """Time choosing ``option`` in the select box labelled ``label``: opening the box and typing the name (a wait of
        its own, ``"<name>: open and type"``), then the click on the option to a new picture shown."""
        await self.idle()
        before = await self.images()
        start = await self.counters()
        entry = await self.typed_option(label, option)
        await self.record(f"{name}: open and type", start)
        await self.page.evaluate(WATCH_RERUN_JS)
        start = await self.counters()
        await entry.click(timeout=self.timeout_ms)
        await self.new_picture(before)
        await self.record(name, start)
        await self.check_errors(name)

    async def recolour(self, repeats: int) -> None:
        """On Explore: time colouring by other annotations, then by genes."""
        current, columns = await self.options("Annotation")
        others = [column for column in columns if column != current]
        for column in (others + [current])[:repeats]:
            await self.timed_choice("re-colour by annotation", "Annotation", column)
        await self.page.get_by_role("radiogroup").get_by_text("Gene", exact=True).first.click(timeout=self.timeout_ms)
        await self.idle()
        for gene in GENES[:repeats]:
            await self.timed_choice("re-colour by gene", "Gene", gene)

    async def knockouts(self, name: str, genes: list[str], max_cells: int | None = None) -> None:
        """On the Knockout page: time each gene's knockout (all cells, at most ``max_cells``) to its result (its
        heading, which names the gene, shown with the script stopped: the arrows' pictures are drawn in the same
        run)."""
        await self.nav("Knockout")
        await self.page.get_by_role("button", name="Run knockout").wait_for(timeout=self.timeout_ms)
        await self.idle()
        if max_cells is not None:
            box = self.page.locator('[data-testid="stNumberInput"]', has_text="Max cells").first.locator("input")
            await box.fill(str(max_cells), timeout=self.timeout_ms)
            await box.press("Enter")
            await self.idle()
        for gene in genes:
            box = self.page.locator('[data-testid="stTextInput"]', has_text="type a gene name").locator("input").first
            await box.fill(gene, timeout=self.timeout_ms)
            await box.press("Enter")
            await self.idle()
            heading = self.page.get_by_role("heading", name=re.compile(rf"^Delete {re.escape(gene)} in all cells"))
            start = await self.counters()
            await self.page.get_by_role("button", name="Run knockout").click(timeout=self.timeout_ms)
            await heading.first.wait_for(timeout=self.timeout_ms)  # the result's heading names the gene
            await self.idle()
            await self.record(name, start)
            await self.check_errors(name)

    async def searches(self, repeats: int) -> None:
        """Time the first visit to the Search & transfer page (from the click on its link to its plot, the first
        cell's neighbours marked), then ``repeats`` searches with another number of neighbours each, to their
        result (the table's caption names the number) with the plot redrawn."""
        before = await self.images()
        start = await self.counters()
        await self.nav("Search & transfer")
        await self.page.get_by_role("heading", name="Similar cells").wait_for(timeout=self.timeout_ms)
        await self.new_picture(before)
        await self.record("Search & transfer page: first visit", start)
        await self.check_errors("Search & transfer page: first visit")
        box = self.page.locator('[data-testid="stNumberInput"]', has_text="Neighbours (k)").first.locator("input")
        for k in range(16, 16 + repeats):
            await self.idle()
            await box.fill(str(k), timeout=self.timeout_ms)
            await self.page.evaluate(WATCH_RERUN_JS)
            start = await self.counters()
            await box.press("Enter")
            await self.page.get_by_text(f"{k} nearest cells").first.wait_for(timeout=self.timeout_ms)
            await self.new_picture([])
            await self.record("search a cell's neighbours (new k)", start)
            await self.check_errors("search a cell's neighbours (new k)")


def run_version(label: str, root: Path, data: Path, args: argparse.Namespace, workdir: Path) -> Timings:
    """Every measurement on one version of the app (``root``: its checkout)."""
    from playwright.async_api import async_playwright

    folder = workdir / label
    for name in ("cache", "uploads", "data"):
        (folder / name).mkdir(parents=True)
    shutil.copy(data, folder / "data" / data.name)
    env = dict(os.environ, SCCORE_CACHE_DIR=str(folder / "cache"), SCCORE_UPLOAD_DIR=str(folder / "uploads"),
               SCCORE_DATA_DIRS=str(folder / "data"), SCCORE_SETTINGS="/dev/null", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(root))
    timings = Timings()
    timeout = args.step_timeout

    async def measure(base: str, first_server: bool, server: int) -> None:
        async with async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                if not first_server:
                    async with Browser(browser, base, timings, timeout, server, args.shots) as user:
                        await user.open_file_to_umap("open 10k: after server restart (cached)")
                    return
                async with Browser(browser, base, timings, timeout, server, args.shots) as user:
                    await user.open_file_to_umap("open 10k: first time")
                    if not args.knockouts_only:
                        await user.recolour(args.repeats)
                    await user.knockouts("knockout, 1,000 cells, both baselines", GENES[:args.repeats], 1000)
                if args.knockouts_only:
                    return
                async with Browser(browser, base, timings, timeout, server, args.shots) as user:
                    await user.open_file_to_umap("open 10k: new session (cached)")
                    await user.searches(args.repeats)
                async with Browser(browser, base, timings, timeout, server, args.shots) as user:
                    await user.open_home()
                    await user.nav("Knockout")  # the demo with its encoder: computed here, untimed
                    await user.knockouts("knockout, 700 demo cells, small encoder + baselines",
                                         GENES[args.repeats:2 * args.repeats])
            finally:
                await browser.close()

    for first_server in (True, False)[:1 if args.knockouts_only else 2]:
        port = free_port()
        log = folder / f"streamlit-{'first' if first_server else 'restarted'}.log"
        print(f"{label}: serving {root} on port {port}", flush=True)
        server = start_server(port, env, log, root=root)
        load = OtherLoad()
        try:
            asyncio.run(measure(f"http://127.0.0.1:{port}", first_server, server.pid))
        except BaseException:
            print(f"--- {label} server log ---\n{log_tail(log)}", file=sys.stderr)
            raise
        finally:
            timings.other_load.append(load.stop())
            stop_process(server)
    return timings


def baseline_checkout(commit: str, folder: Path) -> Path:
    """A ``git worktree`` of ``commit`` in ``folder`` (detached; removed by :func:`remove_checkout`)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True,
                   stdout=subprocess.DEVNULL)
    return folder


def remove_checkout(folder: Path) -> None:
    """Remove a worktree made by :func:`baseline_checkout`."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)


def head_commit() -> str:
    """This checkout's commit (short), with ``+changes`` when its tracked files differ from it."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", ".", ":!benchmarks/RESULTS.md"])
    return commit + ("+changes" if changed.returncode else "")


def summary(current: Timings, baseline: Timings | None) -> tuple[list[str], list[list]]:
    """The table: per wait, the median (and max) seconds of this checkout and of the baseline, their ratio and the
    target."""
    headers = ["wait (click to picture)", "n", "this checkout: median s (max)", "baseline: median s (max)",
               "this / baseline", "target s", "this: CPU s of Chromium / the server (medians)", "baseline: the same"]
    rows = []
    median = lambda values: f"{statistics.median(values):.2f}" if values else "—"  # noqa: E731
    untargeted = [name for name in current.seconds if name not in TARGETS]  # typing into a box; the Search page
    for name in [*TARGETS, *untargeted]:
        mine = current.seconds.get(name, [])
        theirs = baseline.seconds.get(name, []) if baseline else []
        cell = lambda values: f"{statistics.median(values):.2f} ({max(values):.2f})" if values else "—"  # noqa: E731
        ratio = (f"{statistics.median(mine) / statistics.median(theirs):.2f}x" if mine and theirs else "—")
        cpu = [f"{median(t.browser_cpu.get(name, []))} / {median(t.server_cpu.get(name, []))}" if t else "—"
                for t in (current, baseline)]
        target = f"{TARGETS[name]:g}" if name in TARGETS else "—"
        rows.append([name, len(mine), cell(mine), cell(theirs), ratio, target, *cpu])
    return headers, rows


def main() -> None:
    """Measure both versions, print the table; with ``--write-results`` update benchmarks/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="cd526f9", help="the commit to compare with ('' : none)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a 10,000-cell .h5ad (benchmarks/make_large_dataset.py --cells 10000 -o ...)")
    parser.add_argument("--repeats", type=int, default=3, help="re-colours and knockouts timed of each kind")
    parser.add_argument("--step-timeout", type=float, default=600, help="seconds one wait may take")
    parser.add_argument("--knockouts-only", action="store_true",
                        help="open the 10k file (timed), then only its knockouts: no re-colour, demo or restart")
    parser.add_argument("--shots", type=Path, help="a folder for a screenshot after each measured wait")
    parser.add_argument("--write-results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.knockouts_only and args.write_results:
        parser.error("--write-results writes every wait: leave out --knockouts-only")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # stop the servers and the worktree on the way out
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: this benchmark drives Debian's Chromium")
    if not args.data.exists():
        sys.exit(f"{args.data} not found: python benchmarks/make_large_dataset.py --cells 10000 -o {args.data}")
    facts = machine_facts(["streamlit", "playwright", "umap-learn", "numba", "torch"])
    with tempfile.TemporaryDirectory(prefix="sccore-latency-") as folder:
        workdir = Path(folder)
        baseline = None
        if args.baseline:
            checkout = baseline_checkout(args.baseline, workdir / "baseline-checkout")
            try:
                baseline = run_version("baseline", checkout, args.data, args, workdir)
            finally:
                remove_checkout(checkout)
        current = run_version("current", ROOT, args.data, args, workdir)
    headers, rows = summary(current, baseline)
    errors = current.errors + (baseline.errors if baseline else [])
    loads = ", ".join(f"{x:.2f}" for x in current.other_load + (baseline.other_load if baseline else []))
    body = "\n".join([md_table(headers, rows), "",
                      f"- errors shown (exception blocks, error boxes, page errors): **{len(errors)}**",
                      f"- cores used by other processes during each server's run (this checkout first, restarted; "
                      f"then the baseline's): {loads}"] + [f"  - {e}" for e in errors])
    print(body)
    if args.write_results:
        text = "\n".join([
            "Headless Chromium, one server at a time on 127.0.0.1, private cache folders; each wait from the click to "
            "a new image shown with the app's script stopped. The 10k file: `benchmarks/make_large_dataset.py --cells "
            f"10000` (resampled Kang 2018 cells). This checkout: {head_commit()}; baseline: `git worktree` of "
            f"{args.baseline or '(none)'}, measured in the same run, before this checkout.", "",
            f"Command: `{command_line()}`", "", body, "", "Machine:", "",
            md_table(["", ""], [[key, value] for key, value in facts.items()])])
        write_section(HEADING, text)
        print("wrote the section into benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

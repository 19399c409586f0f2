"""Ten concurrent real-browser users on one dashboard server while a screen job runs (issue 6).

Starts one ``streamlit run app.py`` on 127.0.0.1 (private cache, upload and data folders), warms it with one
untimed demo flow, then drives headless Chromium (Debian's, through Playwright) through the demo flow: open the
app, go to Explore, colour the UMAP by louvain then by cell_type, knock a gene out on the Knockout page, search a
cell's neighbours on the Search & transfer page. Phase 1: one user alone. Phase 2: N users at once (one browser
context each) while ``python -m sccore submit screen ... --wait`` runs an encoder screen on the same machine.
Each step is timed from the action to the moment its result is visible and the script has stopped running.
Errors counted: exception blocks, error alerts, timeouts, page crashes and browser console errors. Where the CPU goes
(psutil): each process group's CPU seconds (the server, the screen job, Chromium's browser, renderer and GPU
processes, this script) per step of the single user and over each phase.

With ``--attackers`` (issue 16) the phases are instead, on the same server: (A) N users doing the demo flow; (B) N-2
users doing it while "attacker 1" uploads a memory-bomb .h5ad on the Home page again and again (a few kB declaring
40 % of the machine's memory, which the server must refuse) and "attacker 2" submits, on the Jobs page, a valid heavy
screen (every gene of every demo cell with the encoder; the users start once it is submitted, so it runs beside them),
then unbounded jobs (refused by their bounds), then more heavy screens until the per-user job limit refuses one.
Reported: the normal users' p50/p95 per step in A and B and their ratio (target <= 1.5x), their errors (target 0),
whether the server is alive and serves a new session at the end, its peak memory, and what each attacker saw.

With ``--floor`` both phases are then run again on ``benchmarks/floor_app`` (the same pages, widgets and layout viewer
with no work behind any step), and its ratios are reported beside the dashboard's: the part of the slow-down that
Streamlit, the viewer and the ten browsers on this machine's cores give whatever the app computes.

    python benchmarks/bench_concurrent_users.py [--users 10] [--attackers] [--floor] [--quick] [--write-results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from results import TreeLoad, command_line, machine_facts, md_table, write_section  # noqa: E402
from serving import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, SCRIPT_IDLE_JS, SERVER_START_S, WATCH_RERUN_JS, free_port, log_tail, start_server,
    stop_process,
)
VIEWPORT = {"width": 1400, "height": 2000}
HEADING = "## Ten concurrent browser users (issue 6)"
HEADING_ATTACKERS = "## Server hardening: ten users beside two attackers (issue 16)"
RATIO_TARGET = 1.5  # the normal users' p50 per step beside the attackers / without them
BOMB_REFUSAL = "Build a chunked atlas of it"  # in the memory budget's refusal (sccore.io)
BOMB_PAUSE_S = 1.0  # between two memory-bomb uploads
ENTRY_TIMEOUT_MS = 60_000  # for the Jobs page's parameters box to show a choice of kind or the text typed
FLOOR_SCRIPT = "benchmarks/floor_app/app.py"  # the demo flow's pages with no work behind them (see its docstring)
MAX_HEAVY_JOBS = 8  # heavy screens attacker 2 tries at most; the per-user job limit (default 4) should refuse one
STEPS = ["open the app", "Explore: UMAP shown", "colour by louvain", "colour by cell_type", "Knockout page",
         "knock out a gene", "Search & transfer page", "search a cell's neighbours"]
MARKERS = ["LYZ", "CST3", "NKG7", "MS4A1", "GNLY", "CD3E", "FCGR3A", "S100A8", "S100A9", "HLA-DRA", "CD79A", "PPBP",
           "GZMB", "IL7R"]
CHROMIUM_GROUPS = {"browser": "browser process", "renderer": "renderers (pages)", "zygote": "renderers (pages)",
                   "gpu-process": "GPU process"}  # Chromium's --type= of each process -> its group in the report
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'
ANSWER_SELECTOR = ERROR_SELECTOR + ', [data-testid="stAlertContentSuccess"]'
PARAMETERS_HOLD_JS = """(text) => {
    const box = document.querySelector('[data-testid="stTextArea"] textarea');
    return box !== null && box.value === text;
}"""
# A layout viewer (dashboard/viewer.js) whose picture on screen is titled with the colour column and is loaded.
UMAP_SHOWN_JS = """(column) => Array.from(document.querySelectorAll('.scv-root')).some(root => {
    const image = root.querySelector('.scv-image');
    return (root.dataset.shownTitle || '').endsWith(' · ' + column) && image !== null && image.complete
        && (image.getAttribute('src') || '').length > 0;
})"""


@dataclass
class UserRun:
    """One user's flow: seconds per completed step and the errors seen."""

    name: str
    gene: str
    cell: str
    seconds: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> process group -> CPU seconds


class ProcessCPU:
    """CPU seconds used by this benchmark's processes, by group, between two :meth:`snapshot` calls: the server (and
    the Dask cluster it starts), the screen job (and its workers), Chromium's processes by type (its browser process;
    the renderers, which draw the pages, with the zygote that forks and reaps them, so closed pages count too; the
    GPU process; the rest) and this script with Playwright's driver. A process counts its exited children's CPU once
    it has waited for them; processes that exit with it unwaited are missed."""

    def __init__(self, roots: dict[int, str]) -> None:
        self.roots = roots  # pid -> the group of that process and its descendants

    def group_of(self, process) -> str:
        """The group a process belongs to (``psutil.Error`` when it is gone)."""
        for ancestor in [process] + process.parents():
            if ancestor.pid in self.roots:
                return self.roots[ancestor.pid]
        if "chrom" in process.name() or "headless_shell" in process.name():
            kind = next((arg.split("=", 1)[1] for arg in process.cmdline() if arg.startswith("--type=")), "browser")
            return f"chromium: {CHROMIUM_GROUPS.get(kind, 'other')}"
        return "benchmark script + Playwright driver"

    def snapshot(self) -> dict[tuple[int, float], tuple[str, float]]:
        """Every process of this benchmark now: (pid, start time) -> (group, CPU seconds with its waited children)."""
        import psutil

        me = psutil.Process()
        seen = {}
        for process in [me] + me.children(recursive=True):
            try:
                times = process.cpu_times()
                seen[(process.pid, process.create_time())] = (self.group_of(process), times.user + times.system
                                                              + times.children_user + times.children_system)
            except psutil.Error:  # exited between listing and reading
                continue
        return seen

    @staticmethod
    def used(before: dict, after: dict) -> dict[str, float]:
        """CPU seconds per group between the snapshots ``before`` and ``after``."""
        totals: dict[str, float] = {}
        for key, (group, seconds) in after.items():
            totals[group] = totals.get(group, 0.0) + seconds - before.get(key, (group, 0.0))[1]
        return totals


def demo_genes_and_cells(count: int, data_dir: Path) -> tuple[Path, list[str], list[str]]:
    """Write the demo to ``data_dir/demo.h5ad``; return its path, ``count`` distinct genes worth knocking out
    (demo markers first, then the genes detected in most cells) and ``count`` distinct cell ids."""
    from sccore.io import load_demo

    demo = load_demo()
    path = data_dir / "demo.h5ad"
    demo.write_h5ad(path)
    counts = demo.layers["counts"] if "counts" in demo.layers else demo.X
    most_detected = demo.var_names[np.argsort(-np.asarray((counts > 0).sum(0)).ravel())]
    genes = list(dict.fromkeys([g for g in MARKERS if g in demo.var_names] + list(most_detected)))[:count]
    cells = [str(c) for c in demo.obs_names[1:count + 1]]
    return path, genes, cells


async def wait_idle(page, timeout_ms: float) -> None:
    """Until the app's script has stopped running (Streamlit's running indicator is gone)."""
    await page.wait_for_function(SCRIPT_IDLE_JS, timeout=timeout_ms, polling=100)


async def nav(page, title: str, timeout_ms: float) -> None:
    """Click the sidebar link of the page titled ``title``."""
    # the title as written (case-sensitive): a fresh server first lists the pages/ files ("explore"), which skip app.py
    await page.locator('[data-testid="stSidebarNavLink"]',
                       has_text=re.compile(rf"{re.escape(title)}\s*$")).first.click(timeout=timeout_ms)


async def select(page, label: str, option: str, timeout_ms: float) -> None:
    """Choose ``option`` in the select box labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"]', has_text=label).first
    await box.click(timeout=timeout_ms)
    await page.get_by_role("option", name=option, exact=True).click(timeout=timeout_ms)


def text_box(page, label: str):
    """The input of the text box labelled ``label``."""
    return page.locator('[data-testid="stTextInput"]', has_text=label).locator("input").first


async def visible(locator, timeout_ms: float) -> None:
    """Until the first element of ``locator`` is visible."""
    await locator.first.wait_for(state="visible", timeout=timeout_ms)


async def open_app(page, base: str, timeout_ms: float) -> None:
    """Open the app and wait for the Home page's summary of the demo."""
    await page.goto(f"{base}/", wait_until="domcontentloaded")
    await visible(page.get_by_text("Categorical annotations"), timeout_ms)


async def new_page(browser, errors: list[str]):
    """A new browser context and page whose console errors, page errors and crashes are appended to ``errors``."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.on("console", lambda message: errors.append(
        f"console: {message.text} ({message.location.get('url') or 'no url'})") if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("crash", lambda _: errors.append("page crashed"))
    return context, page


async def run_flow(browser, base: str, user: UserRun, timeout_ms: float, shots: Path,
                   cpu: ProcessCPU | None = None) -> UserRun:
    """Drive one browser context through the demo flow, timing each step (and with ``cpu``, the CPU seconds each
    process group used in it); stops at the first failed step."""
    context, page = await new_page(browser, user.errors)

    async def umap_coloured_by(column: str) -> None:
        await page.wait_for_function(UMAP_SHOWN_JS, arg=column, timeout=timeout_ms, polling=100)

    async def type_gene_and_run() -> None:
        box = text_box(page, "…or type a gene name")
        await box.fill(user.gene, timeout=timeout_ms)
        await box.press("Enter")
        await page.get_by_role("button", name="Run knockout").click(timeout=timeout_ms)

    async def type_cell() -> None:
        box = text_box(page, "Cell id")
        await box.fill(user.cell, timeout=timeout_ms)
        await box.press("Enter")

    def appears(locator):
        return lambda: visible(locator, timeout_ms)

    flow = [
        (lambda: page.goto(f"{base}/", wait_until="domcontentloaded"),
         appears(page.get_by_text("Categorical annotations"))),
        (lambda: nav(page, "Explore", timeout_ms), lambda: umap_coloured_by("cell_type")),
        (lambda: select(page, "Annotation", "louvain", timeout_ms), lambda: umap_coloured_by("louvain")),
        (lambda: select(page, "Annotation", "cell_type", timeout_ms), lambda: umap_coloured_by("cell_type")),
        (lambda: nav(page, "Knockout", timeout_ms), appears(page.get_by_role("button", name="Run knockout"))),
        (type_gene_and_run, appears(page.get_by_role("heading", name=f"Delete {user.gene} in all cells"))),
        (lambda: nav(page, "Search & transfer", timeout_ms), appears(text_box(page, "Cell id"))),
        (type_cell, appears(page.get_by_text(f"to cell {user.cell} in"))),
    ]
    try:
        for step, (act, shown) in zip(STEPS, flow):
            before = cpu.snapshot() if cpu else None
            start = time.perf_counter()
            try:
                await act()
                await shown()
                await wait_idle(page, timeout_ms)
            except Exception as error:  # noqa: BLE001 - a timeout or a crash is a counted error, not the end
                user.errors.append(f"{step}: {type(error).__name__}: {str(error).splitlines()[0]}")
                await screenshot(page, shots / f"{user.name}-failed.png", user)
                break
            user.seconds[step] = time.perf_counter() - start
            if cpu:
                user.cpu[step] = cpu.used(before, cpu.snapshot())
            shown_errors = page.locator(ERROR_SELECTOR)
            texts = [await shown_errors.nth(i).inner_text() for i in range(await shown_errors.count())]
            if texts:
                user.errors += [f"{step}: shown error: {text[:300]}" for text in texts]
                await screenshot(page, shots / f"{user.name}-{STEPS.index(step)}-error.png", user)
    finally:
        await context.close()
    return user


async def screenshot(page, path: Path, user: UserRun | AttackerRun) -> None:
    """Keep a screenshot of a failure and print where it is."""
    try:
        await page.screenshot(path=str(path), full_page=True)
        print(f"{user.name}: screenshot of the failure: {path}", flush=True)
    except Exception as error:  # noqa: BLE001 - a screenshot is only a diagnostic
        print(f"{user.name}: no screenshot ({error})", flush=True)


@dataclass
class AttackerRun:
    """What one attacker tried: per attempt, what it did, its seconds and what the page said; and what went
    otherwise than the server should answer (a crash, a timeout, a bomb or an unbounded job let through)."""

    name: str
    attempts: list[tuple[str, float, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def write_memory_bomb(demo: Path, folder: Path) -> Path:
    """A few-kB .h5ad (60 demo cells) with a gzip-compressed, never-written float32 ``obsm`` array declaring 40 % of
    the machine's memory, as ``memory_bomb`` in tests/test_hostile_inputs.py; returns its path."""
    import anndata as ad
    import h5py

    from sccore.io import machine_memory_bytes

    path = folder / "memory-bomb.h5ad"
    ad.read_h5ad(demo)[:60].copy().write_h5ad(path)
    with h5py.File(path, "r+") as file:
        file["obsm"].create_dataset("X_bomb", shape=(60, int(0.4 * machine_memory_bytes() / 4 / 60)),
                                    dtype="float32", chunks=(1, 65536), compression="gzip")
    return path


async def answer_to(page, act, timeout_ms: float) -> str:
    """Do ``act()``, wait for the rerun it causes to end, and return the last alert then shown (error, success or
    exception: the answer to a button at the bottom of its form); a timeout is returned as its text."""
    await page.evaluate(WATCH_RERUN_JS)
    await act()
    try:
        await page.wait_for_function("() => window.sccoreRerunStarted === true", timeout=timeout_ms, polling=100)
        await wait_idle(page, timeout_ms)
    except Exception as error:  # noqa: BLE001 - no answer is what the attacker saw
        return f"no answer ({type(error).__name__}: {str(error).splitlines()[0]})"
    answers = page.locator(ANSWER_SELECTOR)
    count = await answers.count()
    return (await answers.nth(count - 1).inner_text()).strip() if count else "no message"


async def parameters_hold(page, text: str, timeout_ms: float) -> None:
    """Until the Jobs page's parameters box holds ``text``."""
    await page.wait_for_function(PARAMETERS_HOLD_JS, arg=text, timeout=timeout_ms, polling=100)


async def after_rerun(page, act, timeout_ms: float) -> None:
    """Do ``act()`` and wait for the rerun it causes (if one starts within :data:`ENTRY_TIMEOUT_MS`) to end."""
    await page.evaluate(WATCH_RERUN_JS)
    await act()
    try:
        await page.wait_for_function("() => window.sccoreRerunStarted === true", timeout=ENTRY_TIMEOUT_MS,
                                     polling=100)
    except Exception:  # noqa: BLE001 - no rerun: nothing to wait for
        pass
    await wait_idle(page, timeout_ms)


async def enter_job(page, kind: str, shown_kind: str, parameters: dict, timeout_ms: float, tries: int = 3) -> None:
    """On the Jobs page, choose ``kind`` (when ``shown_kind`` is another: its defaults then replace the parameters
    box) and type ``parameters`` into the box, committed (Ctrl+Enter) and its rerun over; tried again (``tries`` in
    all) where a rerun under load lost the choice or the text."""
    from sccore import jobs

    text = json.dumps({**jobs.default_parameters(kind), **parameters})
    box = page.locator('[data-testid="stTextArea"] textarea').first
    for attempt in range(tries):
        try:
            if kind != shown_kind:
                await after_rerun(page, lambda: select(page, "Kind", kind, timeout_ms), timeout_ms)
                await parameters_hold(page, json.dumps(jobs.default_parameters(kind), indent=1), ENTRY_TIMEOUT_MS)
                shown_kind = kind
            await box.fill(text, timeout=timeout_ms)
            await after_rerun(page, lambda: box.press("Control+Enter"), timeout_ms)
            await parameters_hold(page, text, ENTRY_TIMEOUT_MS)
            return
        except Exception:  # noqa: BLE001 - tried again; the last failure is raised
            if attempt == tries - 1:
                shown = await box.input_value(timeout=timeout_ms)
                raise RuntimeError(f"the Jobs page's parameters show {shown[:80]!r}… after {tries} tries to enter a "
                                   f"{kind} job")
            await wait_idle(page, timeout_ms)


async def upload_memory_bombs(browser, base: str, attacker: AttackerRun, bomb: Path, timeout_ms: float,
                              others_done: asyncio.Event, max_rounds: int) -> AttackerRun:
    """Attacker 1: open the app, then upload the memory bomb on the Home page and press Open, again until the other
    users are done (at least once, at most ``max_rounds``); each must be refused with the budget's message and leave
    the demo open."""
    errors: list[str] = []
    context, page = await new_page(browser, errors)
    try:
        await open_app(page, base, timeout_ms)
        await wait_idle(page, timeout_ms)
        await page.locator('[data-testid="stRadio"] label', has_text="Upload a .h5ad file").click(timeout=timeout_ms)
        for round_ in range(max_rounds):
            if round_ and others_done.is_set():
                break
            start = time.perf_counter()
            uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            await after_rerun(page, lambda: uploader.set_input_files(str(bomb), timeout=timeout_ms), timeout_ms)
            upload = page.get_by_role("button", name="Open upload")
            await visible(upload, timeout_ms)
            said = await answer_to(page, lambda: upload.click(timeout=timeout_ms), timeout_ms)
            attacker.attempts.append((f"upload {bomb.name} ({bomb.stat().st_size / 1e3:.0f} kB), Open",
                                      time.perf_counter() - start, said))
            if BOMB_REFUSAL not in said:
                attacker.unexpected.append(f"upload {round_ + 1} not refused with the budget's message: {said[:300]}")
            if not await page.get_by_text("Categorical annotations").count():
                attacker.unexpected.append(f"upload {round_ + 1}: the demo's summary is gone from the Home page")
            await asyncio.sleep(BOMB_PAUSE_S)
    except Exception as error:  # noqa: BLE001 - recorded, the other users go on
        attacker.unexpected.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        await context.close()
    attacker.unexpected += errors
    return attacker


def job_attacks(max_heavy: int) -> list[tuple[str, str, dict, str]]:
    """Attacker 2's submissions: (what, kind, parameters over the kind's defaults, what the answer should say). A
    heavy valid screen first (every expressed gene of every demo cell with the encoder), so that it runs beside the
    users for most of phase B; then the unbounded ones, which must be refused by their bounds; then more heavy
    screens (a different seed each so none is a cached or running duplicate) until the per-user job limit refuses
    one."""
    model = str(ROOT / "assets" / "demo_model")
    unbounded = [("screen top=10^8 (unbounded)", "screen", {"model": model, "top": 10**8}, "top must lie between"),
                 ("train epochs=1e9 (unbounded)", "train", {"epochs": 1e9}, "epochs must lie between"),
                 ("screen max_cells=10^9 (unbounded)", "screen", {"max_cells": 10**9}, "max_cells must lie between")]
    heavy = [(f"screen of every gene x every cell, encoder, seed {seed}", "screen",
              {"model": model, "top": None, "max_cells": 0, "seed": seed}, "Submitted|queued or running")
             for seed in range(max_heavy)]
    return heavy[:1] + unbounded + heavy[1:]


async def submit_unbounded_jobs(browser, base: str, attacker: AttackerRun, timeout_ms: float,
                                shots: Path, first_answered: asyncio.Event) -> AttackerRun:
    """Attacker 2: on the Jobs page, submit :func:`job_attacks` one after the other (the heavy screens until the
    per-user limit answers), recording each answer; ``first_answered`` is set once the first has been answered (or the
    attacker failed)."""
    from sccore import jobs

    errors: list[str] = []
    context, page = await new_page(browser, errors)
    shown_kind = jobs.KINDS[0]  # the Kind box's first choice
    try:
        await open_app(page, base, timeout_ms)
        await nav(page, "Jobs", timeout_ms)
        await visible(page.get_by_role("button", name="Submit"), timeout_ms)
        await wait_idle(page, timeout_ms)
        for what, kind, overrides, expected in job_attacks(MAX_HEAVY_JOBS):
            start = time.perf_counter()
            await enter_job(page, kind, shown_kind, overrides, timeout_ms)
            shown_kind = kind
            submit = page.get_by_role("button", name="Submit", exact=True)
            said = await answer_to(page, lambda: submit.click(timeout=timeout_ms), timeout_ms)
            attacker.attempts.append((what, time.perf_counter() - start, said))
            first_answered.set()
            if not re.search(expected, said):
                attacker.unexpected.append(f"{what}: {said[:300]}")
            if "queued or running" in said:
                break
    except Exception as error:  # noqa: BLE001 - recorded, the other users go on
        attacker.unexpected.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        await screenshot(page, shots / "attacker2-failed.png", attacker)
    finally:
        first_answered.set()
        await context.close()
    attacker.unexpected += errors
    return attacker


class PeakMemory:
    """Peak resident memory (bytes) of a process alone and with its children (the Dask cluster the server starts),
    sampled every half second from :meth:`start` until :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.peak = self.peak_tree = 0
        self._task = None

    def sample(self) -> None:
        """Read the resident memory now and keep the peaks."""
        import psutil

        try:
            own = self.process.memory_info().rss
            children = self.process.children(recursive=True)
        except psutil.Error:  # the server is gone: nothing more to sample
            return
        tree = own
        for child in children:
            try:
                tree += child.memory_info().rss
            except psutil.Error:
                continue
        self.peak, self.peak_tree = max(self.peak, own), max(self.peak_tree, tree)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)

    def start(self) -> "PeakMemory":
        """Start sampling in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> tuple[float, float]:
        """Stop sampling; the peaks in GiB (the server alone, with its children)."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.sample()
        return self.peak / 2**30, self.peak_tree / 2**30


async def server_serves_the_demo(browser, base: str, server: subprocess.Popen, timeout_ms: float) -> dict:
    """After the attacks: whether the server process is alive, answers its health check, and opens the demo for a
    new browser session (and in how many seconds)."""
    health = ""
    try:
        with urllib.request.urlopen(f"{base}/_stcore/health", timeout=10) as response:
            health = response.read().decode().strip()
    except (urllib.error.URLError, OSError) as error:
        health = f"no answer ({error})"
    errors: list[str] = []
    context, page = await new_page(browser, errors)
    start = time.perf_counter()
    try:
        await open_app(page, base, timeout_ms)
        await wait_idle(page, timeout_ms)
        opened = f"a new session opened the demo in {time.perf_counter() - start:.1f} s"
    except Exception as error:  # noqa: BLE001 - what a new user would see
        opened = f"a new session could not open the demo ({type(error).__name__})"
    finally:
        await context.close()
    return {"alive": server.poll() is None, "exit_code": server.returncode, "health": health, "opened": opened,
            "errors": errors}


async def cancel_jobs(store, user: str, wait_s: float) -> list:
    """Cancel ``user``'s unfinished jobs and wait up to ``wait_s`` for the running ones to stop; their records."""
    from sccore import jobs

    for record in jobs.list_jobs(store, user):
        if not record.done:
            jobs.cancel(store, user, record.id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(r.done for r in jobs.list_jobs(store, user)):
        await asyncio.sleep(1)
    return jobs.list_jobs(store, user)


async def start_screen_job(h5ad: Path, args: argparse.Namespace, env: dict, log: Path):
    """``python -m sccore submit screen`` (encoder, ``--wait``) as a subprocess; returns once its job is running."""
    from sccore.jobs import JobStore
    from sccore.settings import LOCAL_USER

    command = [sys.executable, "-m", "sccore", "submit", "screen", str(h5ad), "--param",
               f"model={ROOT / 'assets' / 'demo_model'}", "--param", f"top={args.screen_top}",
               "--param", f"max_cells={args.screen_cells}", "--wait"]
    with log.open("wb") as handle:
        job = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env, stdout=handle,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    store = JobStore(env["SCCORE_CACHE_DIR"])
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline and job.returncode is None:
        records = store.list_jobs(LOCAL_USER)
        if records and records[0].status == "running":
            return job, store, records[0].id
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the screen job never started running\n{log_tail(log)}")


async def measure(args: argparse.Namespace, server: subprocess.Popen, env: dict, base: str, workdir: Path, h5ad: Path,
                  genes: list[str], cells: list[str]) -> dict:
    """Warm-up, then phase 1 (one user) and phase 2 (``args.users`` users beside the screen job), with the CPU seconds
    of each process group (:class:`ProcessCPU`) per step of the single user and over each phase."""
    from playwright.async_api import async_playwright

    from sccore.settings import LOCAL_USER

    shots = workdir / "screenshots"
    shots.mkdir()
    timeout_ms = args.step_timeout * 1000
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        job = None
        try:
            warm = await run_flow(browser, base, UserRun("warm-up", genes[0], cells[0]), args.warm_timeout * 1000,
                                  shots)
            print(f"warm-up flow: {sum(warm.seconds.values()):.1f} s, errors: {warm.errors or 'none'}", flush=True)
            cpu = ProcessCPU({server.pid: "server"})
            single_load, single_start, single_wall = TreeLoad(), cpu.snapshot(), time.perf_counter()
            single = await run_flow(browser, base, UserRun("single", genes[1], cells[1]), timeout_ms, shots, cpu)
            single_cpu = {"seconds": time.perf_counter() - single_wall, "used": cpu.used(single_start, cpu.snapshot())}
            single_other_load = single_load.stop()
            print(f"single user: {sum(single.seconds.values()):.1f} s, errors: {single.errors or 'none'}", flush=True)

            job, store, job_id = await start_screen_job(h5ad, args, env, workdir / "screen_job.log")
            cpu.roots[job.pid] = "screen job"
            concurrent_load, concurrent_start = TreeLoad(), cpu.snapshot()
            started = time.time()
            users = await asyncio.gather(*[
                run_flow(browser, base, UserRun(f"user{i + 1}", genes[2 + i], cells[2 + i]), timeout_ms, shots)
                for i in range(args.users)])
            ended = time.time()
            concurrent_cpu = {"seconds": ended - started, "used": cpu.used(concurrent_start, cpu.snapshot())}
            concurrent_other_load = concurrent_load.stop()
            status_at_end = store.read(LOCAL_USER, job_id).status
            return_code = await asyncio.wait_for(job.wait(), timeout=args.job_timeout)
            job = None
            record = store.read(LOCAL_USER, job_id)
        finally:
            if job is not None and job.returncode is None:
                job.terminate()
                await job.wait()
            await browser.close()
    job_end = record.finished or ended
    overlap = max(0.0, min(ended, job_end) - max(started, record.started or job_end)) / (ended - started)
    return {"warm": warm, "single": single, "users": users, "single_other_load": single_other_load,
            "concurrent_other_load": concurrent_other_load, "phase_seconds": ended - started,
            "cpu": {"single": single_cpu, "concurrent": concurrent_cpu},
            "job": {"id": job_id, "status_at_end_of_phase": status_at_end, "return_code": return_code,
                    "status": record.status, "error": record.error, "overlap": overlap,
                    "seconds": (record.finished or ended) - (record.started or started),
                    "log": str(workdir / "screen_job.log")}}


async def measure_attackers(args: argparse.Namespace, server: subprocess.Popen, base: str, workdir: Path, h5ad: Path,
                            genes: list[str], cells: list[str]) -> dict:
    """Warm-up, then phase A (``args.users`` users) and phase B (``args.users - 2`` users beside the two attackers)
    on the same server; then what the server does for a new session, and the attacker's jobs, cancelled."""
    from playwright.async_api import async_playwright

    from sccore.jobs import JobStore, list_jobs
    from sccore.settings import LOCAL_USER

    shots = workdir / "screenshots"
    shots.mkdir()
    timeout_ms = args.step_timeout * 1000
    bomb = write_memory_bomb(h5ad, workdir)
    store = JobStore(workdir / "cache")
    normal_b = args.users - 2
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            warm = await run_flow(browser, base, UserRun("warm-up", genes[0], cells[0]), args.warm_timeout * 1000,
                                  shots)
            print(f"warm-up flow: {sum(warm.seconds.values()):.1f} s, errors: {warm.errors or 'none'}", flush=True)
            phases = {}
            for phase, count, first in (("A", args.users, 1), ("B", normal_b, 1 + args.users)):
                load, memory, others_done = TreeLoad(), PeakMemory(server.pid).start(), asyncio.Event()
                attackers = []
                if phase == "B":  # the users start once attacker 2's heavy screen is submitted: it runs beside them
                    heavy_submitted = asyncio.Event()
                    attackers = [
                        asyncio.ensure_future(upload_memory_bombs(browser, base, AttackerRun("attacker 1"), bomb,
                                                                  timeout_ms, others_done, args.bomb_rounds)),
                        asyncio.ensure_future(submit_unbounded_jobs(browser, base, AttackerRun("attacker 2"),
                                                                    timeout_ms, shots, heavy_submitted))]
                    await heavy_submitted.wait()
                started = time.time()
                users = asyncio.gather(*[run_flow(browser, base, UserRun(f"{phase}-user{i + 1}", genes[first + i],
                                                                         cells[first + i]), timeout_ms, shots)
                                         for i in range(count)])
                users = await users
                ended = time.time()
                others_done.set()
                attackers = [await attacker for attacker in attackers]
                phases[phase] = {"users": users, "attackers": attackers, "seconds": ended - started,
                                 "started": started, "ended": ended, "other_load": load.stop(),
                                 "peak_gib": await memory.stop(), "jobs": list_jobs(store, LOCAL_USER)}
                print(f"phase {phase}: {count} users in {ended - started:.1f} s, errors: "
                      f"{sum(len(u.errors) for u in users)}", flush=True)
            after = await server_serves_the_demo(browser, base, server, timeout_ms)
        finally:
            await browser.close()
    cancelled = await cancel_jobs(store, LOCAL_USER, args.cancel_wait)
    return {"warm": warm, "phases": phases, "after": after, "cancelled": cancelled, "bomb": bomb,
            "bomb_declared_gib": bomb_declared_gib(bomb)}


def bomb_declared_gib(bomb: Path) -> float:
    """The GiB the memory bomb's never-written array declares."""
    import h5py

    with h5py.File(bomb, "r") as file:
        data = file["obsm"]["X_bomb"]
        return int(np.prod(data.shape)) * data.dtype.itemsize / 2**30


def summary_table(single: UserRun, users: list[UserRun]) -> tuple[list[str], list[list]]:
    """Per step: the single user's seconds, p50/p95 over the concurrent users, and their ratios to the single."""
    headers = ["step", "1 user (s)", f"{len(users)} users p50 (s)", f"{len(users)} users p95 (s)", "p50 / 1 user",
               "p95 / 1 user", "users done"]
    rows = []
    for step in STEPS:
        times = [u.seconds[step] for u in users if step in u.seconds]
        alone = single.seconds.get(step, np.nan)
        p50, p95 = np.percentile(times, [50, 95]) if times else (np.nan, np.nan)
        rows.append([step, seconds_text(alone), seconds_text(p50), seconds_text(p95), ratio_text(p50 / alone),
                     ratio_text(p95 / alone), f"{len(times)}/{len(users)}"])
    return headers, rows


def cpu_groups(used: list[dict[str, float]]) -> list[str]:
    """The process groups in ``used`` (dicts of group -> CPU seconds), the server first, then by name."""
    groups = {group for seconds in used for group in seconds}
    return sorted(groups, key=lambda group: (group != "server", group != "screen job", group))


def cpu_table(cpu: dict, n_users: int) -> tuple[list[str], list[list]]:
    """Per process group: its CPU seconds in the single user's flow and in phase 2 (in all, per user, and as cores
    busy on average); a last row sums them."""
    single, concurrent = cpu["single"], cpu["concurrent"]
    headers = ["process group", "1 user: CPU s", f"phase 2: CPU s ({n_users} users)", "phase 2: CPU s per user",
               "phase 2: cores busy"]
    rows = []
    for group in cpu_groups([single["used"], concurrent["used"]]) + ["all"]:
        alone, together = [sum(phase["used"].values()) if group == "all" else phase["used"].get(group, 0.0)
                           for phase in (single, concurrent)]
        rows.append([group, f"{alone:.1f}", f"{together:.1f}", f"{together / n_users:.1f}",
                     f"{together / concurrent['seconds']:.2f}"])
    return headers, rows


def step_cpu_table(single: UserRun) -> tuple[list[str], list[list]]:
    """Per step of the single user: its wall seconds and each process group's CPU seconds in it."""
    groups = cpu_groups(list(single.cpu.values()))
    rows = [[step, f"{single.seconds[step]:.2f}"] + [f"{single.cpu[step].get(group, 0.0):.2f}" for group in groups]
            for step in STEPS if step in single.cpu]
    return ["step", "wall s"] + [f"{group} CPU s" for group in groups], rows


def seconds_text(value: float) -> str:
    """Seconds with two decimals, or a dash for a step that never finished."""
    return f"{value:.2f}" if np.isfinite(value) else "–"


def ratio_text(value: float, digits: int = 1) -> str:
    """A slow-down factor such as ``2.3x``, or a dash where a step never finished."""
    return f"{value:.{digits}f}x" if np.isfinite(value) else "–"


def attackers_table(phase_a: list[UserRun], phase_b: list[UserRun]) -> tuple[list[str], list[list], float]:
    """Per step and for the whole flow: p50/p95 of the normal users in phase A and in phase B, their ratios B/A and
    how many finished; and the largest p50 ratio B/A (NaN when a step never finished)."""
    a, b = len(phase_a), len(phase_b)
    headers = ["step", f"A: {a} users p50 (s)", "A p95 (s)", f"B: {b} users p50 (s)", "B p95 (s)", "B/A p50",
               "B/A p95", "done A / B"]
    rows, ratios = [], []
    for step in STEPS + ["whole flow"]:
        def times(users: list[UserRun]) -> list[float]:
            if step == "whole flow":
                return [sum(u.seconds.values()) for u in users if len(u.seconds) == len(STEPS)]
            return [u.seconds[step] for u in users if step in u.seconds]

        (a50, a95), (b50, b95) = [np.percentile(times(users), [50, 95]) if times(users) else (np.nan, np.nan)
                                  for users in (phase_a, phase_b)]
        ratios.append(b50 / a50)
        rows.append([step, seconds_text(a50), seconds_text(a95), seconds_text(b50), seconds_text(b95),
                     ratio_text(b50 / a50, 2), ratio_text(b95 / a95, 2),
                     f"{len(times(phase_a))}/{a} / {len(times(phase_b))}/{b}"])
    return headers, rows, float(np.max(ratios)) if np.all(np.isfinite(ratios)) else float("nan")


def cell(text: str, chars: int = 240) -> str:
    """A page's answer as one markdown table cell: one line, pipes escaped, at most ``chars`` characters."""
    flat = " ".join(text.split())
    return (flat[:chars] + "…" if len(flat) > chars else flat).replace("|", "\\|")


def attempt_rows(attacker: AttackerRun) -> list[list]:
    """The attacker's attempts as table rows, the repeats of one attempt in one row: how many, their p50 and
    largest seconds, and the first answer (any other answer is listed as unexpected)."""
    repeats: dict[str, list[tuple[float, str]]] = {}
    for what, seconds, said in attacker.attempts:
        repeats.setdefault(what, []).append((seconds, said))
    rows = []
    for what, tries in repeats.items():
        seconds = [s for s, _ in tries]
        if len(tries) == 1:
            rows.append([attacker.name, what, f"{seconds[0]:.2f}", cell(tries[0][1])])
        else:
            rows.append([attacker.name, f"{what} ×{len(tries)}", f"{np.median(seconds):.2f}, {max(seconds):.2f}",
                         cell(tries[0][1])])
    return rows


def job_line(record, phase: dict) -> str:
    """One job record: kind, status, progress, and the share of phase B it was running."""
    end = record.finished or phase["ended"]
    running = max(0.0, min(end, phase["ended"]) - max(record.started or end, phase["started"]))
    return (f"`{record.id}` {record.kind} (seed {record.params.get('seed')}): {record.status}, progress "
            f"{record.progress:.0%}, running {100 * running / phase['seconds']:.0f} % of phase B")


def report_attackers(args: argparse.Namespace, outcome: dict, facts: dict) -> None:
    """Print the attackers run's results (and write them into RESULTS.md with ``--write-results``)."""
    phase_a, phase_b, after = outcome["phases"]["A"], outcome["phases"]["B"], outcome["after"]
    headers, rows, worst = attackers_table(phase_a["users"], phase_b["users"])
    errors_a = [e for u in phase_a["users"] for e in u.errors]
    errors_b = [e for u in phase_b["users"] for e in u.errors]
    unexpected = [f"{a.name}: {text}" for a in phase_b["attackers"] for text in a.unexpected]
    server = "alive" if after["alive"] else f"dead (exit code {after['exit_code']})"
    passed = (not errors_b and after["alive"] and after["health"] == "ok" and worst <= RATIO_TARGET)
    lines = [
        md_table(headers, rows),
        "",
        f"- **{'PASS' if passed else 'FAIL'}**: the normal users' errors in phase B **{len(errors_b)}** (target 0; "
        f"{len(errors_a)} in phase A, {len(outcome['warm'].errors)} in the warm-up); largest p50 ratio B/A "
        f"**{ratio_text(worst, 2)}** (target <= {RATIO_TARGET}x); server process "
        f"**{server}**, health check "
        f"'{after['health']}', {after['opened']}",
        f"- server's peak resident memory: {phase_a['peak_gib'][0]:.2f} GiB in phase A, {phase_b['peak_gib'][0]:.2f} "
        f"GiB in phase B (with its children, the Dask cluster it starts for jobs: {phase_a['peak_gib'][1]:.2f} / "
        f"{phase_b['peak_gib'][1]:.2f} GiB); the memory bomb declares {outcome['bomb_declared_gib']:.1f} GiB "
        f"({outcome['bomb'].stat().st_size / 1e3:.0f} kB on disk)",
        f"- phase A: {len(phase_a['users'])} users at once for {phase_a['seconds']:.1f} s; phase B: "
        f"{len(phase_b['users'])} users beside the two attackers for {phase_b['seconds']:.1f} s",
        f"- OtherLoad (cores used by processes other than this benchmark's own server, browser, Dask cluster): "
        f"{phase_a['other_load']:.2f} in phase A, {phase_b['other_load']:.2f} in phase B",
        f"- unexpected answers to the attackers: {len(unexpected)}",
    ]
    lines += [f"  - {text}" for text in unexpected]
    lines += [f"  - {count}× {text}" for text, count in Counter(errors_a + errors_b).most_common()]
    lines += ["", "What each attacker did and saw (phase B):", ""]
    attempts = [row for attacker in phase_b["attackers"] for row in attempt_rows(attacker)]
    lines.append(md_table(["attacker", "attempt", "seconds (repeated: p50, max)", "what the page said (first)"],
                          attempts))
    lines += ["", "Attacker 2's jobs at the end of phase B, then cancelled by the benchmark:", ""]
    final = {record.id: record for record in outcome["cancelled"]}
    lines += [f"- {job_line(record, phase_b)}; after cancelling: {final[record.id].status}"
              for record in phase_b["jobs"]] or ["- none"]
    body = "\n".join(lines)
    print(body)
    if args.write_results:
        text = "\n".join([
            "One server (`streamlit run app.py` on 127.0.0.1, demo data, login off so every browser is the user "
            "`local`, warmed by one untimed flow), one headless Chromium, one browser context per user. Phase A: N "
            "users do the demo flow at once (as in the issue 6 section). Phase B, on the same server right after: "
            "N-2 users do it with other genes and cells (so nothing is served from phase A's caches) while "
            "attacker 1 uploads the memory-bomb .h5ad on the Home page and presses Open, again until the users are "
            "done, and attacker 2 submits on the Jobs page a valid heavy screen (the users start once it is "
            "submitted, so it runs beside them), then unbounded jobs, then more heavy screens until the per-user job "
            "limit refuses one. Each step timed from the action to its result shown with the app's script stopped. "
            "Errors: exception blocks, error alerts, timeouts, page crashes and console errors of the normal users. "
            "The machine is shared (2 cores) with other engineers' test suites and benchmarks: OtherLoad below says "
            "how much of it ran beside this run.",
            "", f"Command: `{command_line()}`", "", body, "", "Machine:", "",
            md_table(["", ""], [[key, value] for key, value in facts.items()])])
        write_section(HEADING_ATTACKERS, text)
        print("wrote the section into benchmarks/RESULTS.md")


def stop_server_and_cluster(server: subprocess.Popen) -> None:
    """Stop the server, then whatever it started that outlived it (the local Dask cluster's processes), saying so."""
    import psutil

    try:
        started = psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:  # the server is gone already
        started = []
    stop_process(server)
    _, outlived = psutil.wait_procs(started, timeout=10)
    for process in outlived:
        print(f"process {process.pid} started by the server outlived it: terminated", flush=True)
        process.terminate()
    _, still = psutil.wait_procs(outlived, timeout=10)
    for process in still:
        process.kill()


def main() -> None:
    """Run the benchmark, print the table; with ``--write-results`` update benchmarks/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10, help="concurrent browser users in phase 2 (or phase A)")
    parser.add_argument("--quick", action="store_true", help="2 users and a small screen job (a smoke test; with "
                                                             "--attackers: 3 users, so one beside the attackers)")
    parser.add_argument("--attackers", action="store_true", help="phase A: N users; phase B: N-2 users beside an "
                                                                 "attacker uploading a memory bomb and one submitting "
                                                                 "unbounded and heavy jobs (issue 16)")
    parser.add_argument("--bomb-rounds", type=int, default=500, help="memory-bomb uploads attacker 1 makes at most")
    parser.add_argument("--cancel-wait", type=float, default=120, help="seconds to wait for attacker 2's jobs to "
                                                                       "stop once cancelled")
    parser.add_argument("--screen-top", type=int, default=60, help="genes the background screen job deletes")
    parser.add_argument("--screen-cells", type=int, default=200, help="cells the background screen job uses")
    parser.add_argument("--step-timeout", type=float, default=300, help="seconds one step may take")
    parser.add_argument("--warm-timeout", type=float, default=300, help="seconds a warm-up step may take")
    parser.add_argument("--job-timeout", type=float, default=900, help="seconds to wait for the screen job after")
    parser.add_argument("--floor", action="store_true", help="then the same two phases on benchmarks/floor_app (the "
                                                              "flow's pages with no work behind them), for comparison")
    parser.add_argument("--write-results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.users, args.screen_top, args.screen_cells, args.step_timeout = 3 if args.attackers else 2, 10, 60, 120
    if args.attackers and args.users < 3:
        sys.exit("--attackers needs --users 3 or more: two of them are the attackers")
    if args.attackers and args.floor:
        sys.exit("--floor compares the ten users' run with the floor app; it does not go with --attackers")
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: this benchmark drives Debian's Chromium")

    facts = machine_facts(["streamlit", "playwright", "torch", "dask", "distributed"])
    with tempfile.TemporaryDirectory(prefix="sccore-users-") as folder:
        workdir = Path(folder)
        (workdir / "data").mkdir()
        h5ad, genes, cells = demo_genes_and_cells(2 * args.users if args.attackers else args.users + 2,
                                                  workdir / "data")
        outcome = serve_and_measure(args, workdir / "app", h5ad, genes, cells)
        if args.attackers:
            report_attackers(args, outcome, facts)
            return
        floor = serve_and_measure(args, workdir / "floor", h5ad, genes, cells, FLOOR_SCRIPT) if args.floor else None
        report(args, outcome, facts, floor)


def serve_and_measure(args: argparse.Namespace, folder: Path, h5ad: Path, genes: list[str], cells: list[str],
                      script: str = "app.py") -> dict:
    """Serve ``script`` (the dashboard, or the floor app) with its own cache and upload folders under ``folder`` and
    the demo's data folder; measure it (:func:`measure`, or :func:`measure_attackers` with ``--attackers``); stop
    it, printing the server's log where it failed, an attacker got an unexpected answer or the screen job failed."""
    for name in ("cache", "uploads"):
        (folder / name).mkdir(parents=True)
    env = dict(os.environ, SCCORE_CACHE_DIR=str(folder / "cache"), SCCORE_UPLOAD_DIR=str(folder / "uploads"),
               SCCORE_DATA_DIRS=str(h5ad.parent), SCCORE_SETTINGS="/dev/null", PYTHONUNBUFFERED="1")
    port = free_port()
    server_log = folder / "streamlit.log"
    server = start_server(port, env, server_log, script=script)
    base = f"http://127.0.0.1:{port}"
    try:
        if args.attackers:
            outcome = asyncio.run(measure_attackers(args, server, base, folder, h5ad, genes, cells))
        else:
            outcome = asyncio.run(measure(args, server, env, base, folder, h5ad, genes, cells))
    except BaseException:
        print(f"--- server log ---\n{log_tail(server_log)}", file=sys.stderr)
        raise
    finally:
        stop_server_and_cluster(server)
    if args.attackers and any(attacker.unexpected for attacker in outcome["phases"]["B"]["attackers"]):
        print(f"--- server log (an attacker got an unexpected answer) ---\n{log_tail(server_log)}", file=sys.stderr)
    if not args.attackers and outcome["job"]["return_code"] != 0:
        print(f"--- screen job log ---\n{log_tail(Path(outcome['job']['log']))}", file=sys.stderr)
    return outcome


def floor_table(app: dict, floor: dict) -> tuple[list[str], list[list]]:
    """Per step: the single user's seconds and the concurrent users' p50 and p95 ratios to it, on the dashboard and
    on the floor app, measured in the same run."""
    headers = ["step"] + [f"{name}: {column}" for name in ("dashboard", "floor") for column in
                          ("1 user (s)", "p50 / 1 user", "p95 / 1 user")]
    rows = []
    for step in STEPS:
        row = [step]
        for outcome in (app, floor):
            times = [u.seconds[step] for u in outcome["users"] if step in u.seconds]
            alone = outcome["single"].seconds.get(step, np.nan)
            p50, p95 = np.percentile(times, [50, 95]) if times else (np.nan, np.nan)
            row += [seconds_text(alone), ratio_text(p50 / alone), ratio_text(p95 / alone)]
        rows.append(row)
    return headers, rows


def floor_lines(app: dict, floor: dict) -> list[str]:
    """The floor app's part of the report: its errors, its CPU, and its ratios beside the dashboard's."""
    errors = floor["warm"].errors + floor["single"].errors + [e for u in floor["users"] for e in u.errors]
    return ["", f"The same flow on the floor app ({FLOOR_SCRIPT}: the same pages, widgets, labels and layout viewer "
                "with no work behind any step, a fixed picture on Explore), served and measured after the dashboard "
                f"in the same run; errors {len(errors)}, phase 2 {floor['phase_seconds']:.1f} s:", "",
            md_table(*floor_table(app, floor)), "", "Where the floor's CPU went:", "",
            md_table(*cpu_table(floor["cpu"], len(floor["users"])))]


def report(args: argparse.Namespace, outcome: dict, facts: dict, floor: dict | None = None) -> None:
    """Print the results, with the floor app's beside them where it was measured (and write them into RESULTS.md with
    ``--write-results``)."""
    single, users, job = outcome["single"], outcome["users"], outcome["job"]
    headers, rows = summary_table(single, users)
    errors = outcome["warm"].errors + single.errors + [e for u in users for e in u.errors]
    job_ok = job["return_code"] == 0 and job["status"] == "finished"
    if not job_ok:
        errors.append(f"screen job {job['id']}: {job['status']} (exit code {job['return_code']}) {job['error'] or ''}")
    lines = [
        md_table(headers, rows),
        "",
        f"- errors: **{len(errors)}** (target 0; exception blocks, error alerts, timeouts, page crashes, console "
        "errors, in the warm-up, the single user, every concurrent user and the screen job)",
        f"- phase 2: {len(users)} users at once for {outcome['phase_seconds']:.1f} s beside a screen job (encoder "
        f"`assets/demo_model`, top={args.screen_top}, max_cells={args.screen_cells}, `python -m sccore submit screen "
        f"... --wait`): {job['status_at_end_of_phase']} when the users finished, running {100 * job['overlap']:.0f} % "
        f"of the phase, {job['status']} after {job['seconds']:.1f} s (exit code {job['return_code']})",
        f"- OtherLoad (cores used by processes other than this benchmark's own server, browser and job): "
        f"{outcome['single_other_load']:.2f} during the single user, {outcome['concurrent_other_load']:.2f} "
        "during phase 2",
    ]
    lines += [f"  - {count}× {text}" for text, count in Counter(errors).most_common()]
    lines += ["", "Where the CPU went (psutil: each process group's user + system seconds, with the children it "
                  "waited for; the machine has " + f"{os.cpu_count()} cores):", ""]
    lines += [md_table(*cpu_table(outcome["cpu"], len(users))), "",
              "The single user's steps (wall seconds; CPU seconds of each group in the step):", "",
              md_table(*step_cpu_table(single))]
    if floor is not None:
        lines += floor_lines(outcome, floor)
    body = "\n".join(lines)
    print(body)
    if args.write_results:
        text = "\n".join([
            "Each step timed from the action (click, choice, typed value) to its result shown with the app's script "
            "stopped: the UMAP image titled with the colour column, the knockout's result heading, the neighbour "
            "table's caption. One server (`streamlit run app.py` on 127.0.0.1, demo data, warmed by one untimed "
            "flow), one headless Chromium, one browser context per user; every user knocks out a different gene and "
            "searches a different cell, so knockouts and searches are computed, not cached.",
            "", f"Command: `{command_line()}`", "", body, "", "Machine:", "",
            md_table(["", ""], [[key, value] for key, value in facts.items()])])
        write_section(HEADING, text)
        print("wrote the section into benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

"""Ten concurrent real-browser users on one dashboard server while a screen job runs (issue 6).

Starts one ``streamlit run app.py`` on 127.0.0.1 (private cache, upload and data folders), warms it with one
untimed demo flow, then drives headless Chromium (Debian's, through Playwright) through the demo flow: open the
app, go to Explore, colour the UMAP by louvain then by cell_type, knock a gene out on the Knockout page, search a
cell's neighbours on the Search & transfer page. Phase 1: one user alone. Phase 2: N users at once (one browser
context each) while ``python -m sccore submit screen ... --wait`` runs an encoder screen on the same machine.
Each step is timed from the action to the moment its result is visible and the script has stopped running.
Errors counted: exception blocks, error alerts, timeouts, page crashes and browser console errors.

    python benchmarks/bench_concurrent_users.py [--users 10] [--quick] [--write-results]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from results import TreeLoad, command_line, machine_facts, md_table, write_section  # noqa: E402
from serving import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, SERVER_START_S, free_port, log_tail, start_server, stop_process,
)
VIEWPORT = {"width": 1400, "height": 2000}
HEADING = "## Ten concurrent browser users (issue 6)"
STEPS = ["open the app", "Explore: UMAP shown", "colour by louvain", "colour by cell_type", "Knockout page",
         "knock out a gene", "Search & transfer page", "search a cell's neighbours"]
MARKERS = ["LYZ", "CST3", "NKG7", "MS4A1", "GNLY", "CD3E", "FCGR3A", "S100A8", "S100A9", "HLA-DRA", "CD79A", "PPBP",
           "GZMB", "IL7R"]
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'
# A plotly chart whose title names the colour column and whose layout image (the datashaded cells) is drawn.
UMAP_SHOWN_JS = """(column) => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).some(chart => {
    const title = chart.querySelector('.gtitle');
    const image = chart.querySelector('image');
    const href = image ? (image.getAttribute('href') || image.getAttribute('xlink:href') || '') : '';
    return title !== null && title.textContent.includes('· ' + column) && href.startsWith('data:image/png');
})"""
SCRIPT_IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app !== null && app.getAttribute('data-test-script-state') === 'notRunning';
}"""


@dataclass
class UserRun:
    """One user's flow: seconds per completed step and the errors seen."""

    name: str
    gene: str
    cell: str
    seconds: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


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


async def run_flow(browser, base: str, user: UserRun, timeout_ms: float, shots: Path) -> UserRun:
    """Drive one browser context through the demo flow, timing each step; stops at the first failed step."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.on("console", lambda message: user.errors.append(
        f"console: {message.text} ({message.location.get('url') or 'no url'})") if message.type == "error" else None)
    page.on("pageerror", lambda error: user.errors.append(f"page error: {error}"))
    page.on("crash", lambda _: user.errors.append("page crashed"))

    async def nav(title: str) -> None:
        # the title as written (case-sensitive): a fresh server first lists the pages/ files ("explore"), which skip app.py
        await page.locator('[data-testid="stSidebarNavLink"]',
                           has_text=re.compile(rf"{re.escape(title)}\s*$")).first.click(timeout=timeout_ms)

    async def select(label: str, option: str) -> None:
        box = page.locator('[data-testid="stSelectbox"]', has_text=label).first
        await box.click(timeout=timeout_ms)
        await page.get_by_role("option", name=option, exact=True).click(timeout=timeout_ms)

    def text_box(label: str):
        return page.locator('[data-testid="stTextInput"]', has_text=label).locator("input").first

    async def visible(locator) -> None:
        await locator.first.wait_for(state="visible", timeout=timeout_ms)

    async def umap_coloured_by(column: str) -> None:
        await page.wait_for_function(UMAP_SHOWN_JS, arg=column, timeout=timeout_ms, polling=100)

    async def type_gene_and_run() -> None:
        box = text_box("…or type a gene name")
        await box.fill(user.gene, timeout=timeout_ms)
        await box.press("Enter")
        await page.get_by_role("button", name="Run knockout").click(timeout=timeout_ms)

    async def type_cell() -> None:
        box = text_box("Cell id")
        await box.fill(user.cell, timeout=timeout_ms)
        await box.press("Enter")

    flow = [
        (lambda: page.goto(f"{base}/", wait_until="domcontentloaded"),
         lambda: visible(page.get_by_text("Categorical annotations"))),
        (lambda: nav("Explore"), lambda: umap_coloured_by("cell_type")),
        (lambda: select("Annotation", "louvain"), lambda: umap_coloured_by("louvain")),
        (lambda: select("Annotation", "cell_type"), lambda: umap_coloured_by("cell_type")),
        (lambda: nav("Knockout"), lambda: visible(page.get_by_role("button", name="Run knockout"))),
        (type_gene_and_run, lambda: visible(page.get_by_role("heading", name=f"Delete {user.gene} in all cells"))),
        (lambda: nav("Search & transfer"), lambda: visible(text_box("Cell id"))),
        (type_cell, lambda: visible(page.get_by_text(f"to cell {user.cell} in"))),
    ]
    try:
        for step, (act, shown) in zip(STEPS, flow):
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
            shown_errors = page.locator(ERROR_SELECTOR)
            texts = [await shown_errors.nth(i).inner_text() for i in range(await shown_errors.count())]
            if texts:
                user.errors += [f"{step}: shown error: {text[:300]}" for text in texts]
                await screenshot(page, shots / f"{user.name}-{STEPS.index(step)}-error.png", user)
    finally:
        await context.close()
    return user


async def screenshot(page, path: Path, user: UserRun) -> None:
    """Keep a screenshot of a failure and print where it is."""
    try:
        await page.screenshot(path=str(path), full_page=True)
        print(f"{user.name}: screenshot of the failure: {path}", flush=True)
    except Exception as error:  # noqa: BLE001 - a screenshot is only a diagnostic
        print(f"{user.name}: no screenshot ({error})", flush=True)


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


async def measure(args: argparse.Namespace, env: dict, base: str, workdir: Path, h5ad: Path, genes: list[str],
                  cells: list[str]) -> dict:
    """Warm-up, then phase 1 (one user) and phase 2 (``args.users`` users beside the screen job)."""
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
            single_load = TreeLoad()
            single = await run_flow(browser, base, UserRun("single", genes[1], cells[1]), timeout_ms, shots)
            single_other_load = single_load.stop()
            print(f"single user: {sum(single.seconds.values()):.1f} s, errors: {single.errors or 'none'}", flush=True)

            job, store, job_id = await start_screen_job(h5ad, args, env, workdir / "screen_job.log")
            concurrent_load = TreeLoad()
            started = time.time()
            users = await asyncio.gather(*[
                run_flow(browser, base, UserRun(f"user{i + 1}", genes[2 + i], cells[2 + i]), timeout_ms, shots)
                for i in range(args.users)])
            ended = time.time()
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
            "job": {"id": job_id, "status_at_end_of_phase": status_at_end, "return_code": return_code,
                    "status": record.status, "error": record.error, "overlap": overlap,
                    "seconds": (record.finished or ended) - (record.started or started),
                    "log": str(workdir / "screen_job.log")}}


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


def seconds_text(value: float) -> str:
    """Seconds with two decimals, or a dash for a step that never finished."""
    return f"{value:.2f}" if np.isfinite(value) else "–"


def ratio_text(value: float) -> str:
    """A slow-down factor such as ``2.3x``, or a dash where a step never finished."""
    return f"{value:.1f}x" if np.isfinite(value) else "–"


def main() -> None:
    """Run the benchmark, print the table; with ``--write-results`` update benchmarks/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10, help="concurrent browser users in phase 2")
    parser.add_argument("--quick", action="store_true", help="2 users and a small screen job (a smoke test)")
    parser.add_argument("--screen-top", type=int, default=60, help="genes the background screen job deletes")
    parser.add_argument("--screen-cells", type=int, default=200, help="cells the background screen job uses")
    parser.add_argument("--step-timeout", type=float, default=300, help="seconds one step may take")
    parser.add_argument("--warm-timeout", type=float, default=300, help="seconds a warm-up step may take")
    parser.add_argument("--job-timeout", type=float, default=900, help="seconds to wait for the screen job after")
    parser.add_argument("--write-results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.users, args.screen_top, args.screen_cells, args.step_timeout = 2, 10, 60, 120
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: this benchmark drives Debian's Chromium")

    facts = machine_facts(["streamlit", "playwright", "torch", "dask", "distributed"])
    with tempfile.TemporaryDirectory(prefix="sccore-users-") as folder:
        workdir = Path(folder)
        for name in ("cache", "uploads", "data"):
            (workdir / name).mkdir()
        h5ad, genes, cells = demo_genes_and_cells(args.users + 2, workdir / "data")
        env = dict(os.environ, SCCORE_CACHE_DIR=str(workdir / "cache"), SCCORE_UPLOAD_DIR=str(workdir / "uploads"),
                   SCCORE_DATA_DIRS=str(workdir / "data"), SCCORE_SETTINGS="/dev/null", PYTHONUNBUFFERED="1")
        port = free_port()
        server_log = workdir / "streamlit.log"
        server = start_server(port, env, server_log)
        try:
            outcome = asyncio.run(measure(args, env, f"http://127.0.0.1:{port}", workdir, h5ad, genes, cells))
        except BaseException:
            print(f"--- server log ---\n{log_tail(server_log)}", file=sys.stderr)
            raise
        finally:
            stop_process(server)
        if outcome["job"]["return_code"] != 0:
            print(f"--- screen job log ---\n{log_tail(Path(outcome['job']['log']))}", file=sys.stderr)
        report(args, outcome, facts)


def report(args: argparse.Namespace, outcome: dict, facts: dict) -> None:
    """Print the results (and write them into RESULTS.md with ``--write-results``)."""
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

"""Shared by the benchmark scripts: markdown tables, machine facts, and updating one section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
RESULTS_HEADER = ("# Benchmark results\n\nEvery figure below lists the command that produced it (run from the "
                  "repository root) and the machine it ran on.\n")


def md_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table from a header row and rows of already formatted cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A pandas table as a markdown table, floats rounded to ``digits``."""
    def cell(value) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    return md_table(list(map(str, table.columns)), [[cell(v) for v in row] for row in table.itertuples(index=False)])


class OtherLoad:
    """Average number of cores used by *other* processes between ``start()`` and ``stop()``.

    Busy CPU time of the whole machine (/proc/stat) minus this process's CPU time, over wall time.
    The machine is shared; this says how much a figure may be inflated by contention (0 = quiet).
    """

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(x) for x in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def start(self) -> "OtherLoad":
        """Start (or restart) measuring."""
        self._busy, self._own, self._wall = self._busy_seconds(), self._own_seconds(), time.perf_counter()
        return self

    def stop(self) -> float:
        """Cores used by other processes since ``start()`` (NaN where /proc/stat is unavailable)."""
        busy = self._busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return float("nan")
        return max(0.0, ((busy - self._busy) - (self._own_seconds() - self._own)) / wall)


class TreeLoad(OtherLoad):
    """:class:`OtherLoad` that counts this process's children (servers, browsers, workers, child runs) as its own."""

    @staticmethod
    def _own_seconds() -> float:
        import psutil

        me = psutil.Process()
        total = 0.0
        for process in [me] + me.children(recursive=True):
            try:
                times = process.cpu_times()
            except psutil.Error:  # exited between listing and reading
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. ``"1.15/1.22/0.59"``."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_and_ram() -> tuple[str, float]:
    """The CPU model name and the machine's memory in GiB."""
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        ram = float("nan")
    return cpu_model, ram


def machine_facts(packages: list[str]) -> dict:
    """CPU, usable cores, RAM, Python and the installed versions of ``packages`` (distribution names), as the
    rows of a results table's machine section."""
    from importlib.metadata import PackageNotFoundError, version

    cpu_model, ram = cpu_and_ram()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return {"cpu": cpu_model, "os.cpu_count()": os.cpu_count(), "usable cores (affinity)": usable,
            "RAM (GiB)": f"{ram:.1f}", "python": platform.python_version(), "versions": ", ".join(versions),
            "platform": platform.platform(), "load average at start (1/5/15 min)": load_average()}


def command_line() -> str:
    """The running command as typed from the repository root (``<python> benchmarks/...``)."""
    exe = Path(sys.executable)
    try:
        exe_text = os.path.relpath(exe, REPO_ROOT)
        if exe_text.startswith(".."):
            exe_text = "python"
    except ValueError:
        exe_text = "python"
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO_ROOT)
    return " ".join([exe_text, script] + [shlex.quote(a) for a in sys.argv[1:]])


def replace_section(section: str, path: Path = RESULTS) -> None:
    """Replace the section whose first line (``## ...``) matches ``section``'s, or append it; other sections
    stay as they are. Written to a temporary file and renamed, so a reader never sees half a file."""
    heading = section.splitlines()[0].strip()
    text = path.read_text() if path.exists() else ""
    if not text.strip():
        text = RESULTS_HEADER
    pattern = re.compile(r"^" + re.escape(heading) + r"[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
    block = section.rstrip("\n") + "\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``heading`` with ``body``."""
    replace_section(f"{heading}\n\n{body.strip()}\n", path)

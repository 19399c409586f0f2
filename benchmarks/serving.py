"""Serve the dashboard for real-browser checks: ``streamlit run app.py`` on a free 127.0.0.1 port, and the
Chromium flags they use. Shared by tests/test_browser.py and bench_concurrent_users.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SERVER_START_S = 90


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file (or a note that there is none)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def start_server(port: int, env: dict, log: Path, root: Path = ROOT, script: str = "app.py") -> subprocess.Popen:
    """``streamlit run <script>`` (the dashboard's ``app.py`` by default) of the checkout at ``root`` (this one by
    default) headless on 127.0.0.1:``port``, its output in ``log``; returns once healthy."""
    command = [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
    with log.open("wb") as handle:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    stop_process(server)
    raise RuntimeError(f"streamlit not healthy after {SERVER_START_S} s\n{log_tail(log)}")


def stop_process(process: subprocess.Popen | None) -> None:
    """Terminate a process this script started (kill it if it does not stop within 10 s)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# The app's script has stopped running.
SCRIPT_IDLE_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app !== null && app.getAttribute('data-test-script-state') === 'notRunning';
}"""
# window.sccoreRerunStarted turns true at the next change of the app's script state: called while the script is idle,
# any change is a run starting (a short run's two changes may reach the observer together, after both happened)
WATCH_RERUN_JS = """() => {
    window.sccoreRerunStarted = false;
    const app = document.querySelector('[data-testid="stApp"]');
    new MutationObserver((changes, observer) => {
        window.sccoreRerunStarted = true;
        observer.disconnect();
    }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""

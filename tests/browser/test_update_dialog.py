"""End to end in a real browser: the demo's Home Assistant shows a device's update dialog.

Starts `scripts/demo.py` (Mosquitto, console stand-in, one simulated device and a real Home
Assistant) on a free port with a run dir of its own, logs in with Debian's headless Chromium driven
by Selenium and Debian's ChromeDriver (no browser download), opens Settings -> Updates -> the
device, and checks the dialog shows the installed and latest versions and the Update button. The
screenshot is kept as artifacts/browser/update-dialog.png.

Chromium missing is a failure, not a skip: `scripts/setup` installs it (as root on Debian).
"""

from collections.abc import Generator, Iterator
import contextlib
import os
from pathlib import Path
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from simulator.identities import INITIAL_SW_BRANCH, INITIAL_SW_COMMIT

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.py"
ARTIFACTS = REPO / "artifacts" / "browser"
HA_USER = "demo"
HA_PASSWORD = "demo-insighio"
LATEST_VERSION = "1.1.0"  # scripts/demo.py's PACKAGE_VERSION
RELEASE_NOTES_TITLE = "insighioNode application 1.1.0 (demo)"  # in its PACKAGE_NOTES
DEMO_READY_TIMEOUT = 90.0
DEMO_STOP_TIMEOUT = 60.0
UI_TIMEOUT = 30.0
# The frontend's service worker takes control ~9-15 s after the first load of a new profile and
# the page reloads then; clicking before that loses the click.
SERVICE_WORKER_TIMEOUT = 40.0

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,800",
]

# Every element of the page, through open shadow roots (Home Assistant's frontend is Lit).
DEEP = """
function* walk(root) {
  for (const el of root.querySelectorAll('*')) {
    yield el;
    if (el.shadowRoot) yield* walk(el.shadowRoot);
  }
}
function visible(el) {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0;
}
"""

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def find_binary(name: str) -> str | None:
    """Return Debian's binary, from PATH or /usr/bin."""
    found = shutil.which(name)
    if found:
        return found
    path = Path("/usr/bin") / name
    return str(path) if path.exists() else None


def free_port() -> int:
    """Return a loopback port nobody listens on right now (never 8123)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port != 8123:
            return port


class Demo:
    """scripts/demo.py as a child process; its output is collected by a reader thread."""

    def __init__(self, port: int, run_dir: Path) -> None:
        """Start the demo: one device, Home Assistant on `port`, everything under `run_dir`."""
        self.port = port
        self.run_dir = run_dir
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(DEMO),
                "--port",
                str(port),
                "--devices",
                "1",
                "--run-dir",
                str(run_dir),
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="demo-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        """Return what the demo printed so far."""
        return "\n".join(self.lines)

    def wait_ready(self) -> tuple[str, str]:
        """Wait for the demo's instructions; return (device name, update entity id)."""
        deadline = time.monotonic() + DEMO_READY_TIMEOUT
        while time.monotonic() < deadline:
            text = self.output
            device = re.search(r"Settings -> Updates -> (.+?) \(or", text)
            entity = re.search(r"Entity: (update\.\w+)", text)
            if device and entity:
                return device.group(1), entity.group(1)
            if self.process.poll() is not None:
                pytest.fail(f"the demo exited with code {self.process.returncode}:\n{text}")
            time.sleep(0.2)
        pytest.fail(f"the demo was not ready within {DEMO_READY_TIMEOUT:.0f} s:\n{self.output}")

    def stop(self) -> None:
        """Stop it like a user (Ctrl-C), then check nothing it started is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(DEMO_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the demo ignored SIGINT for {DEMO_STOP_TIMEOUT:.0f} s")
        self._reader.join(5)
        assert self.process.returncode == 0, f"the demo exited with code {self.process.returncode}"
        assert "everything stopped" in self.output, self.output
        leftovers = list(self.leftover_pids())
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"processes of the demo still ran after it stopped: {leftovers}"

    def leftover_pids(self) -> Iterator[int]:
        """Yield processes whose command line names this run's dir (Linux /proc)."""
        marker = str(self.run_dir).encode()
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    yield int(entry.name)


@pytest.fixture
def demo(tmp_path: Path, socket_enabled: None) -> Generator[Demo]:
    """Run the demo for the test; stop it (SIGINT) and check it stopped everything."""
    STARTED[0] = time.monotonic()
    running = Demo(free_port(), tmp_path / "demo")
    try:
        yield running
    finally:
        running.stop()
        step("demo stopped")


@pytest.fixture
def browser(tmp_path: Path, socket_enabled: None) -> Generator[Any]:
    """Debian's Chromium, headless, with a fresh profile, driven through Debian's ChromeDriver."""
    chromium = find_binary("chromium")
    chromedriver = find_binary("chromedriver")
    if chromium is None or chromedriver is None:
        missing = " and ".join(
            name
            for name, path in (("chromium", chromium), ("chromedriver", chromedriver))
            if path is None
        )
        pytest.fail(
            f"the browser test needs Debian's Chromium: {missing} not found. Run scripts/setup "
            "as root on Debian (it installs chromium and chromium-driver), or: "
            "apt-get install chromium chromium-driver. Deselect it with -m 'not browser'."
        )
    webdriver = _selenium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(
        options=options,
        service=webdriver.ChromeService(executable_path=chromedriver, log_output=os.devnull),
    )
    try:
        yield driver
    finally:
        driver.quit()


def _selenium() -> Any:
    """Import Selenium, failing with the fix when it is missing."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    try:
        from selenium import webdriver  # noqa: PLC0415 - only this test needs it
    except ImportError:
        pytest.fail("Selenium is missing from .venv: run scripts/setup (requirements_test.txt)")
    return webdriver


def wait_for(driver: Any, script: str, what: str, *args: Any, timeout: float = UI_TIMEOUT) -> Any:
    """Run `script` (with DEEP) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the page may be between two loads
            result = driver.execute_script(DEEP + script, *args)
            if result:
                return result
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what} ({driver.current_url})"
    )


STARTED = [time.monotonic()]  # reset when the demo starts


def step(what: str) -> None:
    """Print a step with the time since the demo started (shown with -s or on failure)."""
    print(f"[{time.monotonic() - STARTED[0]:5.1f} s] {what}")


def log_in(driver: Any, base: str) -> None:
    """Log in through the login page, then wait for the frontend's one reload."""
    driver.get(f"{base}/")
    for name, value in (("username", HA_USER), ("password", HA_PASSWORD)):
        field = wait_for(
            driver,
            "for (const e of walk(document)) if (e.matches(arguments[0])) return e;",
            f"the login field {name}",
            f"input[name={name}]",
        )
        field.send_keys(value)
    step("login page shown")
    wait_for(
        driver,
        "for (const e of walk(document))"
        "  if (e.tagName === 'HA-BUTTON' && e.textContent.trim() === 'Log in') {"
        "    e.click(); return true; }",
        "the Log in button",
    )
    wait_for(
        driver,
        "return !location.pathname.startsWith('/auth')"
        " && !location.search.includes('auth_callback')"
        " && document.querySelector('home-assistant') !== null",
        "the frontend after logging in",
    )
    step("logged in")
    # Mark this page; once the service worker controls a page, no further reload comes.
    driver.execute_script("window.__browserTest = navigator.serviceWorker?.controller ? 2 : 1")
    wait_for(
        driver,
        "return window.__browserTest !== 1 && navigator.serviceWorker?.controller != null;",
        "the frontend's reload once its service worker took control",
        timeout=SERVICE_WORKER_TIMEOUT,
    )
    step("frontend reloaded under its service worker")


DIALOG_STATE = """
const dialog = Array.from(walk(document)).find(e => e.tagName === 'HA-MORE-INFO-DIALOG');
if (!dialog || !dialog.shadowRoot) return null;
const inside = Array.from(walk(dialog.shadowRoot));
const row = label => {
  const el = inside.find(e => e.children.length === 0 && e.textContent.trim() === label
                             && visible(e));
  return el ? el.parentElement.textContent.replace(label, '').trim() : null;
};
const buttons = inside.filter(e => e.tagName === 'HA-BUTTON' && visible(e))
                      .map(e => ({text: e.textContent.trim(), disabled: !!e.disabled}));
const installed = row('Installed version');
const latest = row('Latest version');
const loading = inside.some(e => /SPINNER|CIRCULAR-PROGRESS/.test(e.tagName) && visible(e));
if (!installed || !latest || installed === 'Unknown' || loading) return null;
const notes = inside.some(e => e.children.length === 0 && e.textContent.includes(arguments[0]));
return {installed, latest, buttons, notes};
"""


def test_update_dialog_in_chromium(browser: Any, demo: Demo) -> None:
    """The device's update dialog shows both versions and the Update (install) button."""
    device, entity_id = demo.wait_ready()
    step(f"demo ready: {device}, {entity_id}")
    base = f"http://localhost:{demo.port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "update-dialog.png"
    screenshot.unlink(missing_ok=True)
    try:
        log_in(browser, base)
        browser.get(f"{base}/config/updates")
        row = wait_for(
            browser,
            "for (const e of walk(document))"
            "  if (e.children.length === 0 && e.textContent.trim() === arguments[0] && visible(e))"
            "    return e;",
            f"{device} in Settings -> Updates",
            device,
        )
        row.click()
        state = wait_for(
            browser,
            DIALOG_STATE,
            f"the update dialog of {device} ({entity_id}) with versions",
            RELEASE_NOTES_TITLE,
        )
        step("dialog shown")
        browser.save_screenshot(str(screenshot))
    except BaseException:
        with contextlib.suppress(Exception):
            browser.save_screenshot(str(ARTIFACTS / "failure.png"))
        print(f"demo output:\n{demo.output}")
        raise
    assert state["installed"] == f"{INITIAL_SW_BRANCH}@{INITIAL_SW_COMMIT}", state
    assert state["latest"] == LATEST_VERSION, state
    texts = [button["text"] for button in state["buttons"]]
    assert "Update" in texts, f"no Update button in the dialog: {state}"
    assert not next(b for b in state["buttons"] if b["text"] == "Update")["disabled"], state
    assert "Skip" in texts, state
    assert state["notes"], f"the release notes are not shown: {state}"
    assert screenshot.stat().st_size > 10_000

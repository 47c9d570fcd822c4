"""Orchestrate the insighio_ota demo (run by scripts/demo with the project's .venv).

Starts, in order: Mosquitto on a free loopback port, the simulator's console stand-in, a real
Home Assistant (fresh config in .demo/config, user demo / demo-insighio, onboarding done), sets up
HA's MQTT integration and insighio_ota through their real config flows over REST, starts the
simulated devices, and registers the demo package so an update is offered.

Interactive mode waits for Ctrl-C / SIGTERM; --smoke installs the update on the first device and
exits 0 once HA shows it applied. Everything started here is stopped on every exit path.

Only the standard library and aiohttp are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import sys
import time
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".demo"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
HASS = REPO / ".venv" / "bin" / "hass"
INTEGRATION = REPO / "custom_components" / "insighio_ota"

HA_USER = "demo"
HA_PASSWORD = "demo-insighio"  # noqa: S105 - the demo's published login, fine to print
HA_NAME = "Demo"
SEED = "insighio-demo"

PACKAGE_FILE_ID = "4f1c2a9e"
PACKAGE_FILE_TYPE = ".tar"
PACKAGE_VERSION = "1.1.0"
PACKAGE_NOTES = (
    "## insighioNode application 1.1.0 (demo)\n\n"
    "- Ships the demo application module with `sw_commit` **4f1c2a9**.\n"
    "- Plain ustar package, applied by the firmware's own OTA path.\n"
)

SMOKE_BUDGET = 180.0  # seconds, whole run
HA_BOOT_TIMEOUT = 150.0
READY_TIMEOUT = 60.0


class DemoError(Exception):
    """A failure with a message meant for the user."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        """Keep the log whose tail explains the failure."""
        super().__init__(message)
        self.log = log


def say(*parts: object) -> None:
    """Print a progress line to stdout."""
    print(*parts, flush=True)


def warn(*parts: object) -> None:
    """Print a line to stderr."""
    print(*parts, file=sys.stderr, flush=True)


def tail(path: Path | None, lines: int = 40) -> str:
    """Return the last lines of a log file ("" if there is none)."""
    if path is None or not path.exists():
        return ""
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
    return ""


def shown(path: Path) -> Path:
    """Return a path relative to the repository when it lies inside it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Tell whether something listens on the port (loopback or any address)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def ipv6_loopback() -> bool:
    """Tell whether ::1 can be bound (so HA can also answer on it)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the orchestrator dies (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def redact_ready(line: str) -> str:
    """Hide the password the READY line carries, to keep it out of log files."""
    if not line.startswith("READY "):
        return line
    try:
        info = json.loads(line[len("READY ") :])
    except ValueError:
        return "READY <unparsable>"
    for key in ("password", "key", "api_key", "token"):
        if key in info:
            info[key] = "***"
    return "READY " + json.dumps(info)


def initial_form_data(schema: list[dict[str, Any]]) -> dict[str, Any]:
    """Return what the frontend pre-fills for a serialized data_schema (defaults, sections)."""
    data: dict[str, Any] = {}
    for field in schema:
        if field.get("type") == "expandable":
            data[field["name"]] = initial_form_data(field.get("schema", []))
        elif "default" in field:
            data[field["name"]] = field["default"]
        elif (suggested := (field.get("description") or {}).get("suggested_value")) is not None:
            data[field["name"]] = suggested
        elif field.get("required"):
            selector = field.get("selector") or {}
            if "boolean" in selector or field.get("type") == "boolean":
                data[field["name"]] = False
            elif options := (selector.get("select") or {}).get("options"):
                first = options[0]
                data[field["name"]] = first.get("value") if isinstance(first, dict) else first
    return data


class Child:
    """A process started by the demo, in its own process group, logging to a file."""

    def __init__(self, name: str, log: Path, stop_timeout: float = 10.0) -> None:
        """Describe the process; `start` runs it."""
        self.name = name
        self.log = log
        self.stop_timeout = stop_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: asyncio.Future[dict[str, Any]] | None = None
        self.stopping = False
        self.restart_code: int | None = None
        self.report_log: Path | None = None  # the log worth showing when it fails
        self.argv: list[str] = []
        self._pump: asyncio.Task[None] | None = None

    async def start(
        self, argv: list[str], *, ready_line: bool = False, env: dict[str, str] | None = None
    ) -> None:
        """Start the process in its own session, output to the log (or piped, for READY)."""
        self.argv = argv
        self.log.parent.mkdir(parents=True, exist_ok=True)
        logf = self.log.open("ab", buffering=0)
        loop = asyncio.get_running_loop()
        if ready_line:
            self.ready = loop.create_future()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if ready_line else logf,
                stderr=logf,
                cwd=REPO,
                env=env,
                start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
                preexec_fn=_die_with_parent,
            )
        finally:
            logf.close()
        if ready_line:
            self._pump = asyncio.create_task(self._pump_stdout())

    async def _pump_stdout(self) -> None:
        """Copy the child's stdout to its log (redacted) and resolve READY."""
        if self.proc is None or self.proc.stdout is None or self.ready is None:
            return
        with self.log.open("a", buffering=1) as logf:
            while line_b := await self.proc.stdout.readline():
                line = line_b.decode(errors="replace").rstrip("\n")
                logf.write(redact_ready(line) + "\n")
                if line.startswith("READY ") and not self.ready.done():
                    try:
                        self.ready.set_result(json.loads(line[len("READY ") :]))
                    except ValueError as err:
                        self.ready.set_exception(
                            DemoError(f"{self.name}: bad READY line ({err})", self.log)
                        )
        if not self.ready.done():
            self.ready.set_exception(
                DemoError(f"{self.name} closed its output before READY", self.log)
            )

    async def wait_ready(self, limit: float) -> dict[str, Any]:
        """Return the READY line's JSON, or fail after `limit` seconds."""
        if self.ready is None:
            raise DemoError(f"{self.name} was not started with a READY line")
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(self.ready)
        except TimeoutError:
            raise DemoError(
                f"{self.name} did not print READY within {limit:.0f} s", self.log
            ) from None

    @property
    def running(self) -> bool:
        """Tell whether the process is alive."""
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after the grace time."""
        self.stopping = True
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await proc.wait()
            except TimeoutError:
                warn(f"demo: {self.name} ignored SIGTERM for {self.stop_timeout:.0f} s, killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:
            # It exited by itself; its group may still hold helpers it spawned.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        if self._pump is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._pump


class HomeAssistantApi:
    """The few REST calls the demo makes against the real Home Assistant."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        """Talk to HA at `base` (http://127.0.0.1:<port>)."""
        self.session = session
        self.base = base
        self.client_id = f"{base}/"
        self.token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(
        self, method: str, path: str, *, json_body: Any = None, ok: tuple[int, ...] = (200, 201)
    ) -> Any:
        """Call the REST API; return the JSON body, fail on a status outside `ok`."""
        async with self.session.request(
            method, self.base + path, json=json_body, headers=self._headers()
        ) as resp:
            text = await resp.text()
            if resp.status not in ok:
                raise DemoError(
                    f"Home Assistant {method} {path} answered {resp.status}: {text[:500]}"
                )
            if not text:
                return None
            try:
                return json.loads(text)
            except ValueError:
                return text

    async def onboarding_status(self) -> list[dict[str, Any]] | None:
        """Return /api/onboarding's steps, or None while HA does not answer yet."""
        try:
            async with self.session.get(
                self.base + "/api/onboarding", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json()
                return data if isinstance(data, list) else None
        except aiohttp.ClientError, TimeoutError, ValueError:
            return None

    async def onboard_user(self) -> None:
        """Create the owner through the real onboarding step (the only step left open)."""
        await self.request(
            "POST",
            "/api/onboarding/users",
            json_body={
                "client_id": self.client_id,
                "name": HA_NAME,
                "username": HA_USER,
                "password": HA_PASSWORD,
                "language": "en",
            },
        )

    async def login(self) -> None:
        """Log in like the frontend: login flow -> authorization code -> /auth/token."""
        flow = await self.request(
            "POST",
            "/auth/login_flow",
            json_body={
                "client_id": self.client_id,
                "handler": ["homeassistant", None],
                "redirect_uri": f"{self.base}/?auth_callback=1",
            },
        )
        result = await self.request(
            "POST",
            f"/auth/login_flow/{flow['flow_id']}",
            json_body={"client_id": self.client_id, "username": HA_USER, "password": HA_PASSWORD},
        )
        if result.get("type") != "create_entry":
            raise DemoError(
                f"login as {HA_USER} failed: {result.get('errors') or result.get('type')}"
            )
        async with self.session.post(
            self.base + "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": result["result"],
                "client_id": self.client_id,
            },
        ) as resp:
            if resp.status != 200:
                raise DemoError(f"/auth/token answered {resp.status}")
            self.token = (await resp.json())["access_token"]

    async def wait_running(self, limit: float) -> None:
        """Wait until HA's core state is RUNNING."""
        deadline = time.monotonic() + limit
        state = None
        while time.monotonic() < deadline:
            config = await self.request("GET", "/api/config")
            state = config.get("state")
            if state == "RUNNING":
                return
            await asyncio.sleep(0.5)
        raise DemoError(f"Home Assistant stayed in state {state} for {limit:.0f} s")

    async def config_flow(
        self, handler: str, answers: dict[str, Any], menu_choice: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Run a config flow as the UI would, answering each form from `answers`."""
        result = await self.request(
            "POST",
            "/api/config/config_entries/flow",
            json_body={"handler": handler, "show_advanced_options": False},
        )
        for _ in range(8):
            kind = result.get("type")
            if kind == "create_entry":
                return dict(result)
            if kind == "abort":
                raise DemoError(f"{handler} config flow aborted: {result.get('reason')}")
            flow_id = result["flow_id"]
            if kind == "menu":
                options = result.get("menu_options") or []
                if isinstance(options, dict):
                    options = list(options)
                choice = next((o for o in menu_choice if o in options), None)
                if choice is None:
                    raise DemoError(
                        f"{handler} config flow shows a menu {options} the demo cannot answer"
                    )
                body: dict[str, Any] = {"next_step_id": choice}
            elif kind == "form":
                if result.get("errors"):
                    raise DemoError(
                        f"{handler} config flow step {result.get('step_id')}: "
                        f"errors {result['errors']}"
                    )
                schema = result.get("data_schema", [])
                # Like the frontend: start from the form's defaults, then fill in our answers.
                body = initial_form_data(schema)
                body.update({f["name"]: answers[f["name"]] for f in schema if f["name"] in answers})
                missing = [
                    f["name"]
                    for f in result.get("data_schema", [])
                    if f.get("required") and f["name"] not in body and "default" not in f
                ]
                if missing:
                    raise DemoError(
                        f"{handler} config flow step {result.get('step_id')} needs {missing}"
                    )
            else:
                raise DemoError(
                    f"{handler} config flow returned {kind!r} at step {result.get('step_id')}"
                )
            result = await self.request(
                "POST", f"/api/config/config_entries/flow/{flow_id}", json_body=body
            )
        raise DemoError(f"{handler} config flow did not finish")

    async def entry_state(self, domain: str) -> list[dict[str, Any]]:
        """Return the config entries of a domain."""
        entries = await self.request("GET", f"/api/config/config_entries/entry?domain={domain}")
        return entries if isinstance(entries, list) else []

    async def template(self, template: str) -> str:
        """Render a template through /api/template."""
        return str(await self.request("POST", "/api/template", json_body={"template": template}))

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        """Return an entity's state object, or None."""
        return await self.request("GET", f"/api/states/{entity_id}", ok=(200, 404)) or None


class Demo:
    """The processes and steps of one demo run."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Take the parsed command line."""
        self.args = args
        self.smoke: bool = args.smoke
        self.port: int = args.port
        self.base = f"http://127.0.0.1:{self.port}"
        self.run_dir: Path = args.run_dir.resolve() if args.run_dir else RUN_DIR
        self.config_dir = self.run_dir / "config"
        self.children: list[Child] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self.died: asyncio.Future[Child] | None = None
        self.ha_log = self.run_dir / "home-assistant.log"
        self.ha_spawned = False
        self.mqtt_port = 0
        self.console: dict[str, Any] = {}
        self.devices: list[dict[str, Any]] = []
        self.wake_period = args.wake_period or (3 if self.smoke else 15)
        self.listen_window = args.listen_window or 5
        self.ha_only = args.until == "ha"

    # -- processes -------------------------------------------------------------------------------
    async def spawn(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> Child:
        """Start a child and watch it for unexpected exits."""
        child = Child(name, log, stop_timeout=kwargs.pop("stop_timeout", 10.0))
        child.restart_code = kwargs.pop("restart_code", None)
        self.children.append(child)
        await child.start(argv, **kwargs)
        self._watchers.add(asyncio.create_task(self._watch(child)))
        return child

    async def _watch(self, child: Child) -> None:
        """Report a child that exits while it should run (restart HA if it asked to)."""
        if child.proc is None:
            return
        while True:
            code = await child.proc.wait()
            if child.stopping:
                return
            if child.restart_code is not None and code == child.restart_code and child.argv:
                # Home Assistant exits with this code when a user asks it to restart.
                say(f"demo: {child.name} asked to restart; restarting it")
                await child.start(child.argv, ready_line=False)
                continue
            break
        if self.died is not None and not self.died.done():
            self.died.set_result(child)

    async def stop_all(self) -> None:
        """Stop every child, in the reverse order of their start."""
        for child in reversed(self.children):
            try:
                await child.stop()
            except Exception as err:  # keep stopping the others
                warn(f"demo: stopping {child.name} failed: {err}")

    # -- steps -----------------------------------------------------------------------------------
    def prepare_run_dir(self) -> None:
        """Check the port and the tree, then recreate .demo/."""
        if port_in_use(self.port):
            raise DemoError(
                f"port {self.port} is already in use (another Home Assistant?). "
                f"Stop it or pick another port with --port."
            )
        if not HASS.exists():
            raise DemoError(f"{HASS} is missing: run scripts/setup")
        if not self.ha_only and not (INTEGRATION / "manifest.json").exists():
            raise DemoError(
                f"{INTEGRATION}/manifest.json is missing: the integration is not in this tree"
            )
        run_dir = self.run_dir
        if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "packages").is_dir():
            raise DemoError(f"{run_dir} is not empty and is not a demo run dir: pick another")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "packages").mkdir()

    async def start_mosquitto(self) -> None:
        """Start a private Mosquitto on a free loopback port."""
        mosquitto = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
        if mosquitto is None:
            raise DemoError("Mosquitto is missing: run scripts/setup")
        self.mqtt_port = free_port()
        conf = self.run_dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
        )
        child = await self.spawn(
            "mosquitto", [mosquitto, "-c", str(conf)], self.run_dir / "mosquitto.log"
        )
        await self.wait_tcp(child, self.mqtt_port, 10)
        say(f"demo: Mosquitto on 127.0.0.1:{self.mqtt_port}")

    async def wait_tcp(self, child: Child, port: int, limit: float) -> None:
        """Wait until the child accepts TCP connections on `port`."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not child.running:
                raise DemoError(
                    f"{child.name} exited with code {child.proc.returncode if child.proc else '?'}",
                    child.log,
                )
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return
            await asyncio.sleep(0.1)
        raise DemoError(f"{child.name} does not accept connections on port {port}", child.log)

    async def start_console(self) -> None:
        """Start the console stand-in with the demo packages and read its READY line."""
        child = await self.spawn(
            "console stand-in",
            [
                str(VENV_PYTHON),
                "-m",
                "simulator",
                "console",
                "--seed",
                SEED,
                "--console-host",
                "127.0.0.1",
                "--console-port",
                "0",
                "--devices",
                str(self.args.devices),
                "--packages",
                str(self.run_dir / "packages"),
                "--demo-packages",
            ],
            self.run_dir / "console.log",
            ready_line=True,
        )
        self.console = await child.wait_ready(READY_TIMEOUT)
        say(f"demo: console stand-in at {self.console['console_url']}")

    def write_ha_config(self) -> None:
        """Write a fresh, minimal HA configuration with onboarding mostly done."""
        cfg = self.config_dir
        (cfg / "custom_components").mkdir(parents=True)
        if (INTEGRATION / "manifest.json").exists():
            (cfg / "custom_components" / "insighio_ota").symlink_to(
                INTEGRATION, target_is_directory=True
            )
        hosts = ["127.0.0.1"] + (["::1"] if ipv6_loopback() else [])
        (cfg / "configuration.yaml").write_text(
            "# Written by scripts/demo; recreated at every run.\n"
            "homeassistant:\n"
            "  name: insigh.io OTA demo\n"
            "  unit_system: metric\n"
            "  time_zone: UTC\n"
            "  currency: EUR\n"
            "  country: GR\n"
            "  language: en\n"
            "  latitude: 37.9838\n"
            "  longitude: 23.7275\n"
            "  elevation: 70\n"
            f"  internal_url: http://localhost:{self.port}\n"
            "frontend:\n"
            "config:\n"
            "api:\n"
            "logger:\n"
            "  default: info\n"
            "  logs:\n"
            "    custom_components.insighio_ota: debug\n"
        )
        # The user step is done for real through /api/onboarding/users once HA is up. The other
        # steps (location, analytics opt-in, discovered integrations) are marked done here: the
        # location is in configuration.yaml, and finishing core_config through the API would start
        # config flows for met, radio_browser, google_translate, ... (internet, pip installs).
        storage = cfg / ".storage"
        storage.mkdir()
        # HTTP settings live in HA's store since 2026: YAML `http:` would be migrated as an
        # unconfirmed trial that HA reverts (restarting itself) after five minutes. Write them
        # as the confirmed ("stable") config instead, bound to loopback only.
        (storage / "http").write_text(
            json.dumps(
                {
                    "version": 2,
                    "minor_version": 2,
                    "key": "http",
                    "data": {
                        "stable": {
                            "server_host": hosts,
                            "server_port": self.port,
                            "cors_allowed_origins": ["https://cast.home-assistant.io"],
                            "login_attempts_threshold": -1,
                            "ip_ban_enabled": True,
                            "ssl_profile": "modern",
                            "use_x_frame_options": True,
                            "created_at": "2026-01-01T00:00:00+00:00",
                            "error": None,
                            "error_message": None,
                        },
                        "pending": None,
                        "yaml_migration_done": True,
                    },
                },
                indent=2,
            )
        )
        (storage / "onboarding").write_text(
            json.dumps(
                {
                    "version": 4,
                    "minor_version": 1,
                    "key": "onboarding",
                    "data": {"done": ["core_config", "analytics", "integration"]},
                },
                indent=2,
            )
        )

    async def start_home_assistant(self, api: HomeAssistantApi) -> None:
        """Start HA, create the owner through onboarding, log in, wait until running."""
        self.ha_spawned = True
        child = await self.spawn(
            "Home Assistant",
            [
                str(HASS),
                "-c",
                str(self.config_dir),
                "--log-file",
                str(self.ha_log),
                "--log-no-color",
                "--skip-pip",
            ],
            self.run_dir / "home-assistant.stdout.log",
            stop_timeout=40.0,
            restart_code=100,  # homeassistant.const.RESTART_EXIT_CODE
        )
        child.report_log = self.ha_log
        say(f"demo: starting Home Assistant (log: {shown(self.ha_log)}) ...")
        started = time.monotonic()
        deadline = started + HA_BOOT_TIMEOUT
        status = None
        while time.monotonic() < deadline:
            if not child.running:
                raise DemoError("Home Assistant exited during start-up", self.ha_log)
            status = await api.onboarding_status()
            if status is not None:
                break
            await asyncio.sleep(0.5)
        if status is None:
            raise DemoError(
                f"Home Assistant did not answer on {self.base} within {HA_BOOT_TIMEOUT:.0f} s",
                self.ha_log,
            )
        if not any(step["step"] == "user" and step["done"] for step in status):
            await api.onboard_user()
        await api.login()
        await api.wait_running(max(10.0, deadline - time.monotonic()))
        say(
            f"demo: Home Assistant is up ({time.monotonic() - started:.0f} s), "
            f"user {HA_USER} created"
        )

    async def setup_integrations(self, api: HomeAssistantApi) -> None:
        """Set up HA's MQTT integration, then insighio_ota, through their config flows."""
        await api.config_flow("mqtt", {"broker": "127.0.0.1", "port": self.mqtt_port})
        say("demo: MQTT integration set up")
        answers = {
            "console_url": self.console["console_url"],
            "email": self.console.get("email", "demo@insigh.io"),
            "password": self.console.get("password", "console-demo"),
        }
        result = await api.config_flow(
            "insighio_ota", answers, menu_choice=("console", "user", "console_account")
        )
        entry_id = (
            (result.get("result") or {}).get("entry_id")
            if isinstance(result.get("result"), dict)
            else None
        )
        # Wait until the entry is loaded (entities created) before the devices boot.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            entries = await api.entry_state("insighio_ota")
            entry = next(
                (e for e in entries if entry_id is None or e.get("entry_id") == entry_id), None
            )
            if entry and entry.get("state") == "loaded":
                break
            if entry and entry.get("state") in (
                "setup_error",
                "setup_retry",
                "migration_error",
                "failed_unload",
            ):
                raise DemoError(
                    f"insighio_ota entry is in state {entry['state']}: {entry.get('reason') or ''}",
                    self.ha_log,
                )
            await asyncio.sleep(0.5)
        else:
            raise DemoError("insighio_ota entry did not load within 30 s", self.ha_log)
        say(f"demo: insighio_ota set up with the console stand-in ({result.get('title', '')})")

    async def start_devices(self) -> None:
        """Start the simulated devices (after the integration subscribed) and read READY."""
        child = await self.spawn(
            "simulated devices",
            [
                str(VENV_PYTHON),
                "-m",
                "simulator",
                "devices",
                "--seed",
                SEED,
                "--mqtt-host",
                "127.0.0.1",
                "--mqtt-port",
                str(self.mqtt_port),
                "--console-url",
                self.console["console_url"],
                "--devices",
                str(self.args.devices),
                "--wake-period",
                str(self.wake_period),
                "--listen-window",
                str(self.listen_window),
                "--state-dir",
                str(self.run_dir / "devices"),
            ],
            self.run_dir / "devices.log",
            ready_line=True,
        )
        ready = await child.wait_ready(READY_TIMEOUT)
        self.devices = ready.get("devices") or self.console.get("devices") or []
        if not self.devices:
            raise DemoError("the device simulator reported no devices", child.log)
        names = ", ".join(d.get("name", d.get("id", "?")) for d in self.devices)
        say(
            f"demo: {len(self.devices)} simulated devices awake every {self.wake_period} s: {names}"
        )

    async def register_package(self, api: HomeAssistantApi) -> None:
        """Register the demo package through the integration's action."""
        body = {
            "file_id": PACKAGE_FILE_ID,
            "file_type": PACKAGE_FILE_TYPE,
            "version": PACKAGE_VERSION,
            "release_notes": PACKAGE_NOTES,
        }
        try:
            await api.request("POST", "/api/services/insighio_ota/register_package", json_body=body)
        except DemoError as err:
            if "return_response" not in str(err):
                raise
            await api.request(
                "POST",
                "/api/services/insighio_ota/register_package?return_response",
                json_body=body,
            )
        say(
            f"demo: package {PACKAGE_FILE_ID}{PACKAGE_FILE_TYPE} registered "
            f"as version {PACKAGE_VERSION}"
        )

    async def update_entities(self, api: HomeAssistantApi) -> dict[str, dict[str, Any]]:
        """Map console device ids (and names) to update entities, via HA's device registry."""
        rows = await api.template(
            "{% for s in states.update %}"
            "{{ s.entity_id }}\t{{ device_attr(s.entity_id, 'name') }}\t"
            "{{ device_attr(s.entity_id, 'identifiers') | list | tojson }}\n"
            "{% endfor %}"
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows.splitlines():
            parts = row.split("\t")
            if len(parts) != 3:
                continue
            entity_id, name, identifiers = parts
            with contextlib.suppress(ValueError):
                for ident in json.loads(identifiers):
                    if isinstance(ident, list) and len(ident) == 2 and ident[0] == "insighio_ota":
                        found[str(ident[1])] = {"entity_id": entity_id, "name": name}
            found.setdefault(f"name:{name}", {"entity_id": entity_id, "name": name})
        return found

    async def entity_for(
        self, api: HomeAssistantApi, device: dict[str, Any], limit: float = 20
    ) -> str:
        """Return the update entity of a console device, waiting for it to appear."""
        deadline = time.monotonic() + limit
        while True:
            found = await self.update_entities(api)
            hit = found.get(str(device.get("id"))) or found.get(f"name:{device.get('name')}")
            if hit is None:
                hit = next((v for k, v in found.items() if str(device.get("id", "@")) in k), None)
            if hit:
                return str(hit["entity_id"])
            if time.monotonic() > deadline:
                raise DemoError(
                    f"no update entity for device {device.get('name')!r} (update entities: "
                    f"{sorted({v['entity_id'] for v in found.values()})})",
                    self.ha_log,
                )
            await asyncio.sleep(0.5)

    async def wait_offered(
        self, api: HomeAssistantApi, entity_id: str, limit: float = 30
    ) -> dict[str, Any]:
        """Wait until the entity offers the demo version."""
        deadline = time.monotonic() + limit
        state: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            state = await api.state(entity_id)
            if state and state["attributes"].get("latest_version") == PACKAGE_VERSION:
                return state
            await asyncio.sleep(0.5)
        attrs = (state or {}).get("attributes", {})
        raise DemoError(
            f"{entity_id} does not offer {PACKAGE_VERSION} (state {(state or {}).get('state')}, "
            f"latest_version {attrs.get('latest_version')!r})",
            self.ha_log,
        )

    async def wait_reported(self, api: HomeAssistantApi, entity_id: str) -> None:
        """Wait (briefly) until HA knows the device's version from its boot-time /stat."""
        deadline = time.monotonic() + self.wake_period + self.listen_window + 10
        while time.monotonic() < deadline:
            state = await api.state(entity_id)
            if state and state["attributes"].get("installed_version"):
                say(
                    f"demo: {entity_id} reports installed version "
                    f"{state['attributes']['installed_version']}"
                )
                return
            await asyncio.sleep(0.5)
        say(f"demo: note: {entity_id} shows no installed version yet; installing anyway")

    async def smoke_install(
        self, api: HomeAssistantApi, entity_id: str, device: dict[str, Any]
    ) -> None:
        """Call update.install and wait until the device applied the package."""
        await api.request(
            "POST", "/api/services/update/install", json_body={"entity_id": entity_id}
        )
        say(
            f"demo: update.install called on {entity_id}; "
            "waiting for the device to wake and apply it"
        )
        last = None
        while True:
            state = await api.state(entity_id)
            attrs = (state or {}).get("attributes", {})
            now = (
                (state or {}).get("state"),
                attrs.get("installed_version"),
                attrs.get("in_progress"),
            )
            if now != last:
                say(
                    f"demo:   {entity_id}: state={now[0]} "
                    f"installed_version={now[1]} in_progress={now[2]}"
                )
                last = now
            if attrs.get("installed_version") == PACKAGE_VERSION and not attrs.get("in_progress"):
                break
            await asyncio.sleep(0.5)
        say(f"OTA applied: {device.get('name')} {PACKAGE_VERSION}")

    def instructions(self, entity_id: str, device: dict[str, Any]) -> str:
        """Return what to open and click."""
        name = device.get("name", "Sensor 1")
        others = ", ".join(d.get("name", "?") for d in self.devices[1:])
        package = f"{PACKAGE_FILE_ID}{PACKAGE_FILE_TYPE}"
        within = self.wake_period + self.listen_window + 5
        bar = "=" * 80
        pad = " " * 15
        lines = [
            bar,
            " insigh.io OTA demo is running",
            f"   Open        http://localhost:{self.port}",
            f"   Log in      user {HA_USER}   password {HA_PASSWORD}",
            f"   Then        Settings -> Updates -> {name} (or Settings -> Devices & services ->",
            f"               insigh.io OTA -> {name} -> Firmware), then press Update",
            f"               (HA's install button). Entity: {entity_id}",
            f"   Offered     version {PACKAGE_VERSION} (package {package}, release notes in the",
            "               dialog) to every device"
            + (f"; {others} can be updated too." if others else "."),
            "   What next   The dialog shows Installing: HA has published a retained OTA request.",
            f"{pad}The device reads it at its next wake (every {self.wake_period} s, listening",
            f"{pad}{self.listen_window} s), downloads the package from the console stand-in,",
            f"{pad}applies it, reports success, reboots and reports its new version:",
            f"{pad}within about {within} s the installed version becomes {PACKAGE_VERSION}.",
            f"   Logs        {shown(self.run_dir)}/: home-assistant.log, console.log, "
            "devices.log, mosquitto.log",
            "   Stop        Ctrl-C stops Home Assistant, the simulators and Mosquitto",
            bar,
        ]
        return "\n" + "\n".join(lines) + "\n"

    async def scenario(self) -> int:
        """Run the demo's steps; in interactive mode, wait forever at the end."""
        self.prepare_run_dir()
        await self.start_mosquitto()
        if not self.ha_only:
            await self.start_console()
        self.write_ha_config()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            api = HomeAssistantApi(session, self.base)
            await self.start_home_assistant(api)
            if self.ha_only:
                await api.config_flow("mqtt", {"broker": "127.0.0.1", "port": self.mqtt_port})
                say("demo: MQTT integration set up (--until ha: stopping here)")
                if self.smoke:
                    return 0
                say(
                    f"demo: http://localhost:{self.port}  login {HA_USER} / {HA_PASSWORD}; "
                    "Ctrl-C stops"
                )
                await asyncio.Event().wait()
            await self.setup_integrations(api)
            await self.start_devices()
            await self.register_package(api)
            device = self.devices[0]
            entity_id = await self.entity_for(api, device)
            await self.wait_offered(api, entity_id)
            say(f"demo: {entity_id} offers version {PACKAGE_VERSION}")
            if self.smoke:
                await self.wait_reported(api, entity_id)
                await self.smoke_install(api, entity_id, device)
                return 0
            say(self.instructions(entity_id, device))
            await asyncio.Event().wait()  # until a signal or a child dies
        return 0

    def default_log(self) -> Path | None:
        """Return HA's log once HA was started in this run (older runs' logs mislead)."""
        return self.ha_log if self.ha_spawned else None

    def _outcome(
        self, main: asyncio.Task[int], done: set[asyncio.Future[Any]], signame: list[str]
    ) -> tuple[int, str | None, Path | None]:
        """Return (exit code, failure reason, log to show) for whatever ended the wait."""
        assert self.died is not None  # noqa: S101 - set by run() before
        if main in done:
            try:
                return main.result(), None, None
            except DemoError as err:
                return 1, str(err), err.log or self.default_log()
            except Exception as err:  # report anything to the user
                return 1, f"{type(err).__name__}: {err}", self.default_log()
        if self.died in done:
            child = self.died.result()
            rc = child.proc.returncode if child.proc else "?"
            return (
                1,
                f"{child.name} exited unexpectedly (exit code {rc})",
                (child.report_log or child.log),
            )
        received = signame[0] if signame else "signal"
        say(f"\ndemo: {received} received, stopping everything ...")
        if self.smoke:
            # An interrupted smoke run proved nothing: it must not look like a pass.
            return 1, f"smoke run interrupted by {received} before the update was applied", None
        return 0, None, None

    async def run(self) -> int:
        """Run the scenario, watch children and signals, and always stop everything."""
        loop = asyncio.get_running_loop()
        self.died = loop.create_future()
        stop = asyncio.Event()
        signame: list[str] = []

        def on_signal(sig: signal.Signals) -> None:
            signame.append(sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, on_signal, sig)
        started = time.monotonic()
        main = asyncio.create_task(self.scenario())
        stopper = asyncio.create_task(stop.wait())
        waiters: set[asyncio.Future[Any]] = {main, stopper, self.died}
        code = 1
        reason: str | None = None
        log: Path | None = None
        try:
            async with asyncio.timeout(SMOKE_BUDGET if self.smoke else None):
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            code, reason, log = self._outcome(main, done, signame)
        except TimeoutError:
            reason = f"smoke run did not finish within {SMOKE_BUDGET:.0f} s"
            log = self.default_log()
        finally:
            for task in (main, stopper):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            await self.stop_all()
        if reason is not None:
            warn(f"demo: FAILED: {reason}")
            text = tail(log)
            if text:
                warn(f"---- last lines of {log} ----\n{text}\n----")
            return 1
        if self.smoke:
            say(f"demo: smoke run passed in {time.monotonic() - started:.0f} s; everything stopped")
        else:
            say("demo: everything stopped")
        return code


def main() -> int:
    """Parse the command line and run the demo."""
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="unattended end-to-end run, exit 0 when an OTA applied"
    )
    parser.add_argument(
        "--port", type=int, default=8123, help="Home Assistant HTTP port (default 8123)"
    )
    parser.add_argument(
        "--devices", type=int, default=3, help="number of simulated devices (default 3)"
    )
    parser.add_argument(
        "--wake-period", type=int, default=0, help="device wake period in s (15; 3 with --smoke)"
    )
    parser.add_argument(
        "--listen-window", type=int, default=0, help="device listen window in s (default 5)"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="where config, logs and state go, recreated at every run (default .demo)",
    )
    parser.add_argument(
        "--until",
        choices=["ha"],
        help="developer aid: stop after HA and its MQTT integration are set up",
    )
    args = parser.parse_args()
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    return asyncio.run(Demo(args).run())


if __name__ == "__main__":
    sys.exit(main())

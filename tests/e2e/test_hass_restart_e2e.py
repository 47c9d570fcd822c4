"""A real `hass` process stopped mid-job and started again: the job resumes and ends verified.

Not the test harness's Home Assistant: the `hass` command of the project's virtualenv, with a
config folder of its own (the integration linked into `custom_components`), set up through the
same REST calls the demo makes (`scripts/demo.py`), and read through the REST API with a
long-lived token. Mosquitto and the simulator run as in the other end-to-end tests.

The device applies the package while Home Assistant is down, so its report is lost: the job is
settled by the /stat the device sends when it boots again, as protocol.md says it must be.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
import importlib.util
import json
from pathlib import Path
import signal
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from simulator.device import load_version
from simulator.packages import write_package

from .conftest import REPO, SecretWatch, Simulator, free_port, start_simulator, stop_process

HASS = Path(sys.executable).with_name("hass")
INTEGRATION = REPO / "custom_components" / "insighio_ota"
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
FILE_ID = "4f1c2a9e"
SW_COMMIT = "4f1c2a9"

pytestmark = pytest.mark.timeout(300)


def load_demo() -> ModuleType:
    """Import scripts/demo.py, whose REST client of Home Assistant this test reuses."""
    spec = importlib.util.spec_from_file_location("insighio_demo", REPO / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEMO = load_demo()


def write_config(config_dir: Path, port: int) -> None:
    """Write a minimal configuration: REST API, config flows, debug logs of ours and of MQTT."""
    (config_dir / "custom_components").mkdir(parents=True)
    (config_dir / "custom_components" / "insighio_ota").symlink_to(
        INTEGRATION, target_is_directory=True
    )
    (config_dir / "configuration.yaml").write_text(
        "homeassistant:\n"
        "  name: insighio_ota restart test\n"
        "  time_zone: UTC\n"
        "  unit_system: metric\n"
        "  country: GR\n"
        "  currency: EUR\n"
        "  latitude: 37.98\n"
        "  longitude: 23.73\n"
        "  elevation: 70\n"
        "api:\n"
        "config:\n"
        "logger:\n"
        "  default: warning\n"
        "  logs:\n"
        "    custom_components.insighio_ota: debug\n"
        "    homeassistant.components.mqtt: debug\n"
    )
    storage = config_dir / ".storage"
    storage.mkdir()
    # As scripts/demo.py does: HTTP settings live in HA's store, bound to loopback only, and
    # every onboarding step but the user is marked done.
    (storage / "http").write_text(
        json.dumps(
            {
                "version": 2,
                "minor_version": 2,
                "key": "http",
                "data": {
                    "stable": {
                        "server_host": ["127.0.0.1"],
                        "server_port": port,
                        "login_attempts_threshold": -1,
                        "ip_ban_enabled": False,
                        "ssl_profile": "modern",
                        "use_x_frame_options": True,
                        "cors_allowed_origins": [],
                        "created_at": "2026-01-01T00:00:00+00:00",
                        "error": None,
                        "error_message": None,
                    },
                    "pending": None,
                    "yaml_migration_done": True,
                },
            }
        )
    )
    (storage / "onboarding").write_text(
        json.dumps(
            {
                "version": 4,
                "minor_version": 1,
                "key": "onboarding",
                "data": {"done": ["core_config", "analytics", "integration"]},
            }
        )
    )


class RealHass:
    """One `hass` process at a time on a config folder; started, stopped and restarted."""

    def __init__(self, config_dir: Path, port: int) -> None:
        """Prepare; `start` runs the process."""
        self.config_dir = config_dir
        self.port = port
        self.log = config_dir / "home-assistant.log"
        self.process: asyncio.subprocess.Process | None = None
        self.exit_codes: list[int] = []

    @property
    def base(self) -> str:
        """Return the REST API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, api: Any) -> None:
        """Start `hass` and wait until its API answers and its core is running."""
        self.process = await asyncio.create_subprocess_exec(
            str(HASS),
            "-c",
            str(self.config_dir),
            "--log-file",
            str(self.log),
            "--log-no-color",
            "--skip-pip",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + BOOT_TIMEOUT
        # Once onboarded, HA no longer serves the onboarding API: ask the API itself then.
        answering = api.onboarding_status if api.token is None else self._api_answers(api)
        while await answering() is None:
            assert self.process.returncode is None, f"hass exited: {self.tail()}"
            assert time.monotonic() < deadline, f"hass did not answer: {self.tail()}"
            await asyncio.sleep(0.5)
        if api.token is None:
            await api.onboard_user()
            await api.login()
        await api.wait_running(max(10.0, deadline - time.monotonic()))

    @staticmethod
    def _api_answers(api: Any) -> Callable[[], Awaitable[bool | None]]:
        async def _answers() -> bool | None:
            try:
                async with api.session.get(
                    f"{api.base}/api/",
                    headers={"Authorization": f"Bearer {api.token}"},
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as response:
                    return True if response.status == 200 else None
            except aiohttp.ClientError, TimeoutError:
                return None

        return _answers

    async def stop(self) -> int:
        """Stop `hass` the way a supervisor does (SIGTERM) and return its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        self.exit_codes.append(code)
        return code

    async def kill(self) -> None:
        """Kill `hass` if it still runs (cleanup after a failure)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def tail(self, lines: int = 30) -> str:
        """Return the end of the log, for a failure message."""
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


async def long_lived_token(api: Any) -> str:
    """Create a long-lived access token over the websocket API, as a user's profile page does."""
    async with api.session.ws_connect(f"{api.base}/api/websocket") as socket:
        assert (await socket.receive_json())["type"] == "auth_required"
        await socket.send_json({"type": "auth", "access_token": api.token})
        assert (await socket.receive_json())["type"] == "auth_ok"
        await socket.send_json(
            {
                "id": 1,
                "type": "auth/long_lived_access_token",
                "client_name": "insighio_ota restart test",
                "lifespan": 1,
            }
        )
        answer = await socket.receive_json()
    assert answer["success"], answer
    return str(answer["result"])


async def poll(
    condition: Callable[[], Awaitable[bool]], within: float, what: str, real: RealHass
) -> None:
    """Wait until an asynchronous condition holds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}\n{real.tail()}")
        await asyncio.sleep(0.5)


@pytest.fixture
async def processes() -> AsyncGenerator[list[Any]]:
    """Collect what the test starts (simulators, `hass`); stop all of it, whatever happens."""
    started: list[Any] = []
    yield started
    for process in reversed(started):
        if isinstance(process, RealHass):
            await process.kill()
        else:
            await asyncio.to_thread(stop_process, process.process)


async def test_hass_stopped_and_started_again_mid_job(
    *,
    mosquitto: int,
    packages_dir: Path,
    tmp_path: Path,
    processes: list[Any],
    secret_watch: SecretWatch,
) -> None:
    """Install, stop HA, the device applies meanwhile, start HA, the device boots: verified."""
    write_package(packages_dir, FILE_ID, "ustar", sw_commit=SW_COMMIT)
    console: Simulator = await asyncio.to_thread(
        start_simulator, "console", "--devices", "1", "--packages", str(packages_dir)
    )
    processes.append(console)
    secret_watch.add_console(console, 1, "insighio-demo")
    device = console.devices[0]
    real = RealHass(tmp_path / "hass", free_port())
    write_config(real.config_dir, real.port)
    processes.append(real)
    device_state = tmp_path / "device-state"

    async def start_device() -> Simulator:
        simulator = await asyncio.to_thread(
            start_simulator,
            "devices",
            "--devices",
            "1",
            "--mqtt-port",
            str(mosquitto),
            "--console-url",
            console.console_url,
            "--state-dir",
            str(device_state),
            "--wake-period",
            "1",
            "--listen-window",
            "2",
        )
        processes.append(simulator)
        return simulator

    async with aiohttp.ClientSession() as session:
        api = DEMO.HomeAssistantApi(session, real.base)
        await real.start(api)
        api.token = await long_lived_token(api)
        await api.config_flow("mqtt", {"broker": "127.0.0.1", "port": mosquitto})
        answers = {
            "console_url": console.console_url,
            "email": console.ready["email"],
            "password": console.ready["password"],
        }
        await api.config_flow(
            "insighio_ota", answers, menu_choice=("console", "user", "console_account")
        )

        async def entry_loaded() -> bool:
            entries = await api.entry_state("insighio_ota")
            return bool(entries) and entries[0]["state"] == "loaded"

        await poll(entry_loaded, 30, "the entry to load", real)
        entity_id = await update_entity_of(api, device["name"])
        await api.request(
            "POST",
            "/api/services/insighio_ota/register_package",
            json_body={"file_id": FILE_ID, "file_type": ".tar", "version": "1.1.0"},
        )
        await api.request(
            "POST", "/api/services/update/install", json_body={"entity_id": entity_id}
        )
        state = await api.state(entity_id)
        assert state["attributes"]["ota_state"] == "queued"
        assert state["attributes"]["in_progress"] is True

        assert await real.stop() == 0
        # Home Assistant is down: the device wakes, applies the package, reports to nobody,
        # clears the request and reboots. Then it is switched off.
        devices = await start_device()
        deadline = time.monotonic() + 30
        while load_version(device_state, device["id"])[1] != SW_COMMIT:
            assert time.monotonic() < deadline, "the device did not apply the package"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(stop_process, devices.process)

        await real.start(api)
        state = await api.state(entity_id)
        # Restored from storage: the job still waits for the device.
        assert state["attributes"]["ota_state"] == "queued"
        # The broker replayed no request after the resubscription: HA notes it vanished.
        await poll(
            lambda: asyncio.to_thread(lambda: "vanished while Home Assistant" in real.tail(200)),
            30,
            "HA to notice the request is gone",
            real,
        )
        # Switched on again, the device sends /stat at boot, with the package's commit.
        await start_device()

        async def verified() -> bool:
            current = await api.state(entity_id)
            return bool(current) and current["attributes"].get("ota_state") == "verified"

        await poll(verified, 30, "the job to end verified after the restart", real)
        state = await api.state(entity_id)
        assert state["attributes"]["installed_version"] == "1.1.0"
        assert state["attributes"]["in_progress"] is False
        assert state["attributes"]["ota_reason"] == (
            "applied while Home Assistant was not listening"
        )
        assert await real.stop() == 0

    secret_watch.secrets.update(stored_api_keys(real.config_dir))
    log = real.log.read_text(errors="replace")
    secret_watch.check_text(log, "the log file of the real hass")
    ours = [line for line in log.splitlines() if "custom_components.insighio_ota" in line]
    assert any(" DEBUG " in line for line in ours), "debug logging did not run"
    assert not [line for line in ours if " ERROR " in line]
    assert real.exit_codes == [0, 0]


def stored_api_keys(config_dir: Path) -> set[str]:
    """Return the API keys of the entries HA stored, secrets the log must not show."""
    entries = json.loads((config_dir / ".storage" / "core.config_entries").read_text())
    return {
        entry["data"]["api_key"]
        for entry in entries["data"]["entries"]
        if entry["domain"] == "insighio_ota" and "api_key" in entry["data"]
    }


async def update_entity_of(api: Any, device_name: str) -> str:
    """Return the update entity HA made for a console device."""
    states = await api.request("GET", "/api/states")
    for state in states:
        if state["entity_id"].startswith("update.") and state["attributes"].get(
            "friendly_name", ""
        ).startswith(device_name):
            return str(state["entity_id"])
    raise AssertionError(f"no update entity for {device_name}")

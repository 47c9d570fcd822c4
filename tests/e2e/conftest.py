"""Real parts for the end-to-end tests: Mosquitto, the console stand-in and simulated devices.

Each piece runs as its own process on a free loopback port, started and stopped by a fixture, the
way a user's broker, the console and the devices are separate from Home Assistant.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
import getpass
import json
import logging
import os
from pathlib import Path
import select
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from homeassistant.components import mqtt
from homeassistant.components.mqtt.client import async_on_subscribe_done
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import CONF_API_KEY, DOMAIN
from simulator.identities import DEFAULT_SEED, device_identities

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT = 20.0


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Broker:
    """A Mosquitto broker of our own on a free loopback port, which a test may kill and restart.

    It persists what it holds (retained messages, sessions) in the test's temp folder after every
    change, like a broker configured for persistence that crashes: a restart on the same port
    finds the retained OTA requests again.
    """

    def __init__(self, folder: Path) -> None:
        """Write the configuration; `start` runs the broker."""
        self.port = free_port()
        self.database = folder / "mosquitto.db"
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Started as root, Mosquitto would switch to its own user, which may not write here.
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "persistence_file mosquitto.db\n"
            # Save after every change, not every 30 minutes: a kill loses nothing acknowledged.
            "autosave_on_changes true\n"
            "autosave_interval 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it listens."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.process, "mosquitto")

    def kill(self) -> None:
        """Kill the broker the hard way (SIGKILL): no goodbye to its clients, no final save."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the broker, if it runs."""
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture
def broker(tmp_path: Path, socket_enabled: None) -> Generator[Broker]:
    """Run a Mosquitto broker of our own with persistence; the test may kill and restart it."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("Mosquitto is not installed: run scripts/setup")
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    running = Broker(folder)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def mosquitto(broker: Broker) -> int:
    """Return the port of the test's own Mosquitto broker."""
    return broker.port


# Loggers turned to DEBUG for every end-to-end test: ours, and HA's MQTT integration, which logs
# every payload it receives or sends at that level.
DEBUG_LOGGERS = ("custom_components.insighio_ota", "homeassistant.components.mqtt")
# Part of every package download URL: the device key follows in its query string.
DOWNLOAD_PATH = "/packages/download"


class SecretWatch(logging.Handler):
    """Records every log record of a test and knows the secrets none of them may contain.

    The secrets are the ones a test's real parts hold: the device keys and the account password
    of the simulators it starts, and the API key of each config entry.
    """

    def __init__(self) -> None:
        """Record from DEBUG up."""
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.secrets: set[str] = set()
        # Set when a checked log file of another process had debug records.
        self.debug_elsewhere = False
        self._formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record, formatted now (with its traceback) so nothing is lazily lost."""
        record.full_text = self._formatter.format(record)
        self.records.append(record)

    def add_console(self, console: Simulator, devices: int, seed: str) -> None:
        """Learn the secrets of a simulator's account: its password and its devices' keys."""
        if password := console.ready.get("password"):
            self.secrets.add(str(password))
        self.secrets.update(identity.key for identity in device_identities(devices, seed))

    def leaks(self, text: str) -> list[str]:
        """Return what of the secrets (or a download URL) `text` contains, masked."""
        found = [f"{secret[:4]}..." for secret in self.secrets if secret and secret in text]
        if DOWNLOAD_PATH in text or "dk=" in text:
            found.append("a download URL")
        return found

    def check_text(self, text: str, what: str) -> None:
        """Fail the test if a text (the log file of another process) shows a secret."""
        leaking = [
            f"line {number}: {', '.join(leaks)}"
            for number, line in enumerate(text.splitlines(), 1)
            if (leaks := self.leaks(line))
        ]
        assert not leaking, f"secrets in {what}: {leaking[:10]}"
        self.debug_elsewhere = self.debug_elsewhere or " DEBUG " in text

    def check(self) -> None:
        """Fail the test if any record shows a secret."""
        leaking = [
            f"{record.name} {record.levelname}: {', '.join(leaks)}"
            for record in self.records
            if (leaks := self.leaks(record.full_text))
        ]
        assert not leaking, f"secrets in the log: {leaking[:10]}"


@pytest.fixture(autouse=True)
def secret_watch(hass: HomeAssistant) -> Generator[SecretWatch]:
    """Run every end-to-end test with debug logging and fail it if a record shows a secret."""
    watch = SecretWatch()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    for entry in hass.config_entries.async_entries(DOMAIN):
        if api_key := entry.data.get(CONF_API_KEY):
            watch.secrets.add(api_key)
    # Debug logging ran for real: a test that logged nothing here would prove nothing.
    assert watch.debug_elsewhere or any(record.levelno == logging.DEBUG for record in watch.records)
    watch.check()


@dataclass
class Simulator:
    """A running simulator process and what it said when it became ready."""

    process: subprocess.Popen[str]
    ready: dict[str, Any]

    @property
    def console_url(self) -> str:
        """Return the console stand-in's URL."""
        return str(self.ready["console_url"])

    @property
    def devices(self) -> list[dict[str, Any]]:
        """Return the devices (without keys)."""
        return list(self.ready["devices"])


def start_simulator(*arguments: str) -> Simulator:
    """Start `python -m simulator` and wait for its READY line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", *arguments, "--log-level", "INFO"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.2)
        if readable:
            line = process.stdout.readline()
            if line.startswith("READY "):
                return Simulator(process, json.loads(line.removeprefix("READY ")))
            if not line and process.poll() is not None:
                break
    stop_process(process)
    raise RuntimeError(f"the simulator did not become ready: {arguments}")


@pytest.fixture
def packages_dir(tmp_path: Path) -> Path:
    """Return the folder the console stand-in serves packages from."""
    path = tmp_path / "packages"
    path.mkdir()
    return path


StartSimulator = Callable[..., Awaitable[Simulator]]


def _option(arguments: tuple[str, ...], name: str, default: str) -> str:
    """Return the value of a command line option, or its default."""
    if name in arguments:
        return arguments[arguments.index(name) + 1]
    return default


@pytest.fixture
def simulators(hass: HomeAssistant, secret_watch: SecretWatch) -> Generator[StartSimulator]:
    """Start simulator processes on demand; all are stopped at the end of the test."""
    started: list[Simulator] = []

    async def _start(*arguments: str) -> Simulator:
        # Waiting for READY in an executor keeps HA's event loop (and its MQTT client) running.
        simulator = await hass.async_add_executor_job(start_simulator, *arguments)
        started.append(simulator)
        secret_watch.add_console(
            simulator,
            int(_option(arguments, "--devices", "3")),
            _option(arguments, "--seed", DEFAULT_SEED),
        )
        return simulator

    yield _start
    for simulator in started:
        stop_process(simulator.process)


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait in real time until `condition` holds: devices and brokers are real here."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def real_mqtt(
    hass: HomeAssistant, socket_enabled: None, mosquitto: int, tmp_path: Path
) -> AsyncGenerator[MockConfigEntry]:
    """Set up HA's real MQTT integration, connected to our Mosquitto."""
    # MQTT reads configuration.yaml at setup, as it does in a real installation; give it one.
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "configuration.yaml").write_text("")
    hass.config.config_dir = str(config_dir)
    entry = MockConfigEntry(
        domain=mqtt.DOMAIN, data={mqtt.CONF_BROKER: "127.0.0.1", "port": mosquitto}
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await wait_for(lambda: mqtt.is_connected(hass), 10, "HA's MQTT client to connect to Mosquitto")
    yield entry
    # Unloaded while the broker still runs: afterwards HA's MQTT client could not unsubscribe.
    for ours in hass.config_entries.async_entries(DOMAIN):
        if ours.state is ConfigEntryState.LOADED:
            await hass.config_entries.async_unload(ours.entry_id)
    if entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def wait_for_subscription(hass: HomeAssistant, topic: str, qos: int = 1) -> None:
    """Wait until the broker acknowledged HA's subscription to a topic."""
    done = asyncio.Event()
    stop = async_on_subscribe_done(hass, topic, qos, done.set)
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        stop()


async def wait_for_our_subscriptions(hass: HomeAssistant, console: Simulator) -> None:
    """Wait until the broker acknowledged the integration's /ota and /stat subscriptions."""
    channel = console.ready["control_channel"]
    for topic in (
        f"channels/{channel}/messages/+/ota",
        f"channels/{channel}/messages/+/stat",
    ):
        await wait_for_subscription(hass, topic)


async def retained_on(hass: HomeAssistant, topic: str) -> list[str]:
    """Subscribe afresh and return what the broker keeps retained on a topic."""
    received: list[str] = []

    def _collect(message: mqtt.ReceiveMessage) -> None:
        if message.retain and message.payload:
            received.append(str(message.payload))

    unsubscribe = await mqtt.async_subscribe(hass, topic, _collect, qos=1)
    try:
        # The broker sends retained messages right after the subscription is acknowledged.
        await wait_for_subscription(hass, topic)
        await asyncio.sleep(0.5)
    finally:
        unsubscribe()
    return received


SetupIntegration = Callable[[Simulator], Awaitable[MockConfigEntry]]


@pytest.fixture
def setup_through_config_flow(hass: HomeAssistant, real_mqtt: MockConfigEntry) -> SetupIntegration:
    """Add the integration through its real config flow, signed in to the console stand-in."""

    async def _setup(console: Simulator) -> MockConfigEntry:
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
        # The first step asks which way in: a console account or MQTT only.
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {"next_step_id": "console"}
        )
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"],
            {
                "console_url": console.console_url,
                "email": console.ready["email"],
                "password": console.ready["password"],
            },
        )
        assert result["type"] == "create_entry", result
        await hass.async_block_till_done()
        entry = hass.config_entries.async_get_entry(result["result"].entry_id)
        assert entry is not None
        assert entry.state is ConfigEntryState.LOADED
        # Devices publish /stat right after boot, and the broker does not keep it: wait until the
        # broker acknowledged our subscriptions before a test starts any device.
        await wait_for_our_subscriptions(hass, console)
        return entry  # type: ignore[return-value]

    return _setup

"""Real parts for the end-to-end tests: Mosquitto, the console stand-in and simulated devices.

Each piece runs as its own process on a free loopback port, started and stopped by a fixture, the
way a user's broker, the console and the devices are separate from Home Assistant.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
import json
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

from custom_components.insighio_ota.const import DOMAIN

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


@pytest.fixture
def mosquitto(tmp_path: Path, socket_enabled: None) -> Generator[int]:
    """Run a Mosquitto broker of our own on a free loopback port; return the port."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("Mosquitto is not installed: run scripts/setup")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, process, "mosquitto")
        yield port
    finally:
        stop_process(process)


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


@pytest.fixture
def simulators(hass: HomeAssistant) -> Generator[StartSimulator]:
    """Start simulator processes on demand; all are stopped at the end of the test."""
    started: list[Simulator] = []

    async def _start(*arguments: str) -> Simulator:
        # Waiting for READY in an executor keeps HA's event loop (and its MQTT client) running.
        simulator = await hass.async_add_executor_job(start_simulator, *arguments)
        started.append(simulator)
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

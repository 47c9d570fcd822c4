"""The real parts every figure runs on: Mosquitto, the console stand-in and Home Assistant.

Mosquitto runs as its own process on a free loopback port with its own configuration, the way a
user's broker is separate from Home Assistant. The console stand-in (`simulator.console`) runs in
the benchmark's own process on loopback: the device list is fetched over HTTP, in the real
format, but serving it costs the benchmark's process, not a second one the figures ignore.
Home Assistant is a real `HomeAssistant` instance from pytest-homeassistant-custom-component's
`async_test_home_assistant` (registries loaded, no mocks on our path) with HA's own MQTT
integration connected to that Mosquitto.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
import contextlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import os
from pathlib import Path
import shutil
import socket
import subprocess
import tempfile
import time
from typing import cast
import unittest.mock

from aiohttp.resolver import ThreadedResolver
from homeassistant import loader
from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import aiohttp_client, frame, translation
from pytest_homeassistant_custom_component.common import (  # type: ignore[import-untyped]
    MockConfigEntry,
    async_test_home_assistant,
)

from custom_components.insighio_ota.const import (
    CONF_API_KEY,
    CONF_API_KEY_ID,
    CONF_CONSOLE_URL,
    DOMAIN,
)
from simulator.console import ConsoleServer, ConsoleState
from simulator.identities import DeviceIdentity, device_identities, project_identity

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT = 20.0
API_KEY = "bench-api-key"


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def mosquitto(run_dir: Path) -> Iterator[int]:
    """Run a Mosquitto broker of our own on a free loopback port; yield the port."""
    if not os.path.exists(MOSQUITTO):
        raise RuntimeError("Mosquitto is not installed: run scripts/setup")
    port = free_port()
    config = run_dir / "mosquitto.conf"
    # A fleet of 1,000 swarm devices plus HA: lift the default queue limits so that a burst of
    # QoS 1 messages is not dropped, which would make the figures lie.
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\n"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with code {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on port {port}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class Console:
    """The console stand-in serving a project of `len(devices)` devices."""

    server: ConsoleServer
    url: str
    devices: list[DeviceIdentity]
    data_channel: str
    control_channel: str


@asynccontextmanager
async def console(run_dir: Path, devices: int) -> AsyncGenerator[Console]:
    """Serve `/device/list` with `devices` devices on loopback, with an API key for HA."""
    project = project_identity()
    state = ConsoleState(
        email="bench@insigh.io",
        password="bench",  # noqa: S106 - the stand-in's account, on loopback only.
        project=project,
        devices=device_identities(devices),
        packages_dir=run_dir,
    )
    state.api_keys[API_KEY] = datetime.now(UTC) + timedelta(days=1)
    server = ConsoleServer(state, "127.0.0.1", 0)
    url = await server.start()
    try:
        yield Console(server, url, state.devices, project.data_channel, project.control_channel)
    finally:
        await server.stop()


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait in real time until `condition()` holds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


class _LoopbackResolver(ThreadedResolver):
    """The system's resolver, closed the way HA closes the resolver it makes itself."""

    async def real_close(self) -> None:
        """Close the resolver (HA calls this name when its client session closes)."""
        await self.close()


@asynccontextmanager
async def home_assistant(run_dir: Path, broker_port: int) -> AsyncGenerator[HomeAssistant]:
    """Run a real Home Assistant with its MQTT integration connected to our broker."""
    config_dir = run_dir / "config"
    config_dir.mkdir()
    # MQTT reads configuration.yaml at setup, as in a real installation.
    (config_dir / "configuration.yaml").write_text("")
    # The console stand-in is on loopback: the system's resolver will do, and HA does not start
    # its zeroconf (mDNS) resolver, which would open multicast sockets for nothing.
    resolver = unittest.mock.patch.object(
        aiohttp_client, "_async_make_resolver", side_effect=_LoopbackResolver
    )
    async with async_test_home_assistant(config_dir=str(config_dir)) as hass:
        # The test helper blocks custom integrations; ours is the point of the benchmark.
        hass.data.pop(loader.DATA_CUSTOM_COMPONENTS, None)
        # What HA's bootstrap (and the test plugin's `hass` fixture) does before any setup.
        frame.async_setup(hass)
        await translation.async_load_integrations(hass, {"homeassistant"})
        try:
            resolver.start()
            entry = MockConfigEntry(
                domain=mqtt.DOMAIN, data={mqtt.CONF_BROKER: "127.0.0.1", "port": broker_port}
            )
            entry.add_to_hass(hass)
            if not await hass.config_entries.async_setup(entry.entry_id):
                raise RuntimeError("HA's MQTT integration did not set up")
            await hass.async_block_till_done()
            await wait_for(lambda: mqtt.is_connected(hass), 10, "HA's MQTT client to connect")
            yield hass
        finally:
            for ours in hass.config_entries.async_entries(DOMAIN):
                if ours.state is ConfigEntryState.LOADED:
                    await hass.config_entries.async_unload(ours.entry_id)
            await hass.async_block_till_done()
            await hass.async_stop(force=True)
            resolver.stop()
            frame.async_setup(None)  # type: ignore[arg-type]


def add_entry(hass: HomeAssistant, console_url: str) -> ConfigEntry:
    """Add (not set up) a config entry of the integration signed in to the stand-in."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="bench@insigh.io",
        unique_id=f"{console_url}|bench@insigh.io",
        data={
            CONF_CONSOLE_URL: console_url,
            "email": "bench@insigh.io",
            CONF_API_KEY: API_KEY,
            CONF_API_KEY_ID: "bench-key-id",
        },
    )
    entry.add_to_hass(hass)
    return cast(ConfigEntry, entry)


@contextlib.contextmanager
def run_dir() -> Iterator[Path]:
    """Return a temporary folder for the broker's and HA's files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="insighio-bench-") as path:
        yield Path(path)


def fresh(parent: Path, name: str) -> Path:
    """Return a new folder under `parent` for one Home Assistant instance."""
    path = parent / name
    path.mkdir()
    return path


async def set_up_and_wait_for_subscriptions(
    hass: HomeAssistant, entry: ConfigEntry, console: Console
) -> None:
    """Set the integration up and wait until the broker acknowledged its subscriptions."""
    if not await hass.config_entries.async_setup(entry.entry_id):
        raise RuntimeError(f"the integration did not set up: {entry.state}")
    await hass.async_block_till_done()
    channel = console.control_channel
    for topic in (f"channels/{channel}/messages/+/ota", f"channels/{channel}/messages/+/stat"):
        done = asyncio.Event()
        stop = mqtt.async_on_subscribe_done(hass, topic, 1, done.set)
        try:
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            stop()

"""What an entry leaves behind when it is removed, or unloaded while an install is publishing."""

import asyncio
import contextlib
from typing import Any
from unittest.mock import MagicMock, patch

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import DOMAIN

from .conftest import DEVICE_ID, ota_topic
from .helpers import fire, install, register, report, tracker_of


@pytest.mark.usefixtures("mqtt_mock", "mock_console")
async def test_removed_entry_leaves_no_storage(
    hass: HomeAssistant,
    mqtt_client_mock: Any,
    config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """Deleting the entry deletes its packages, jobs, facts and rollouts from `.storage`."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    await register(hass)
    await install(hass)
    await fire(hass, ota_topic(), report(2, reason="can not apply"))
    await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    prefix = f"{DOMAIN}.{config_entry.entry_id}."
    assert any(key.startswith(prefix) for key in hass_storage)

    assert await hass.config_entries.async_remove(config_entry.entry_id)
    await hass.async_block_till_done()

    assert [key for key in hass_storage if key.startswith(prefix)] == []
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))


@pytest.mark.usefixtures("mqtt_mock", "mock_console")
async def test_unload_while_an_install_publishes(
    hass: HomeAssistant,
    mqtt_client_mock: Any,
    config_entry: MockConfigEntry,
) -> None:
    """An install whose publish is still waiting when the entry unloads starts no timer.

    The broker may take seconds to acknowledge; a reload (reconfigure, options) meanwhile must
    not leave the old tracker's deadline running, nor a job the next load does not know.
    """
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    await register(hass)
    tracker = tracker_of(config_entry)
    release = asyncio.Event()
    started = asyncio.Event()
    real_publish = mqtt.async_publish

    async def slow_publish(*args: Any, **kwargs: Any) -> None:
        started.set()
        await release.wait()
        await real_publish(*args, **kwargs)

    with patch.object(mqtt, "async_publish", slow_publish):
        task = hass.async_create_task(install(hass))
        await started.wait()
        await hass.config_entries.async_unload(config_entry.entry_id)
        release.set()
        with contextlib.suppress(HomeAssistantError):
            await task
        await hass.async_block_till_done()

    assert tracker._deadline_timers == {}
    # The unload wrote the job: loaded again, it follows the request that went out.
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    job = tracker_of(config_entry).job(DEVICE_ID)
    assert job is not None
    assert job.state.value == "queued"
    await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))

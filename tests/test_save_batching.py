"""Batched writes of jobs and rollouts: a steady stream of changes must not postpone them.

HA's `Store.async_delay_save` moves a pending write to the latest due time asked for, so asking
for "one second from now" at each change of a burst that never pauses would never write at all.
"""

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import DOMAIN

from .conftest import DEVICE_ID, stat_payload, stat_topic
from .helpers import fire, install, register, telemetry_payload, telemetry_topic, tick


async def test_job_written_within_a_second_of_a_steady_stream(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A new job is on disk a second later although the device's /stat keeps coming."""
    key = f"{DOMAIN}.{setup_integration.entry_id}.jobs"
    await register(hass)
    await install(hass)

    for _ in range(6):
        await tick(hass, freezer, timedelta(seconds=0.4))
        await fire(hass, stat_topic(), stat_payload())

    assert hass_storage[key]["data"]["jobs"][DEVICE_ID]["state"] == "queued"


async def test_facts_written_although_telemetry_never_pauses(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """Telemetry every few seconds (a large fleet) still gets the facts written in batches."""
    key = f"{DOMAIN}.{setup_integration.entry_id}.jobs"

    for _ in range(20):
        await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3700))
        await tick(hass, freezer, timedelta(seconds=5))

    assert hass_storage[key]["data"]["devices"][DEVICE_ID]["battery_mv"] == 3700

"""Status events follow the job's moves in order, whatever arrives while the tracker publishes.

Found by the burst end-to-end test: the clear after `e=1` waits for the broker's acknowledgement,
and the /stat of the device's reboot can be handled meanwhile. The `applied` event must have fired
by then, or automations would see `verified` twice and never `applied`.
"""

import asyncio
from typing import Any

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_mqtt_message,
)

from custom_components.insighio_ota.const import EVENT_OTA_STATUS

from .conftest import ota_topic, stat_payload, stat_topic
from .helpers import BOOT_COMMIT, PACKAGE_COMMIT, fire, register, report, request_with_commit


async def test_stat_handled_while_the_clear_is_published(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The reboot's /stat arrives while the clear waits for its ack: applied, then verified."""
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    await request_with_commit(hass, setup_integration)
    events = async_capture_events(hass, EVENT_OTA_STATUS)

    async def publish_slowly(_topic: str, payload: str, *_: Any, **__: Any) -> None:
        if payload == "":
            # The broker is slow to acknowledge our clear; the device has rebooted meanwhile,
            # and its /stat is handled while we wait.
            async_fire_mqtt_message(hass, stat_topic(), stat_payload(PACKAGE_COMMIT))
            for _ in range(20):
                await asyncio.sleep(0)

    mqtt_mock.async_publish.side_effect = publish_slowly
    await fire(hass, ota_topic(), report(1))

    assert [event.data["state"] for event in events] == ["applied", "verified"]

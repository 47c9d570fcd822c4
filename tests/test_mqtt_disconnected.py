"""Installing while Home Assistant is not connected to the broker sends nothing, now or later.

A QoS 1 publish while disconnected fails, yet the MQTT client keeps the message and sends it after
the reconnect. So the tracker does not publish at all then: an install is refused with a clear
error, and a request held for the maintenance window waits a little longer.
"""

from datetime import datetime, timedelta
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockMqttReasonCode

from custom_components.insighio_ota.const import (
    CONF_WINDOW_END,
    CONF_WINDOW_START,
    DOMAIN,
    UNKNOWN_CADENCE_TIMEOUT,
)
from custom_components.insighio_ota.tracker import REPLAY_GRACE

from .conftest import ota_topic
from .helpers import attributes, fire, install, publishes, register, request_payload, tick

REQUEST = (ota_topic(), request_payload(), 1, True)


def disconnected() -> Any:
    """Make HA's MQTT client look disconnected from the broker."""
    return patch.object(mqtt, "is_connected", return_value=False)


async def test_install_while_disconnected_is_refused(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The user is told MQTT is not connected; no job opens and nothing is published."""
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    with disconnected(), pytest.raises(HomeAssistantError) as exc_info:
        await install(hass)

    assert exc_info.value.translation_domain == DOMAIN
    assert exc_info.value.translation_key == "mqtt_not_connected"
    assert publishes(mqtt_mock) == []
    attrs = attributes(hass)
    assert attrs["in_progress"] is False
    assert "ota_state" not in attrs

    # Connected again, the same install goes out.
    await install(hass)
    assert publishes(mqtt_mock) == [REQUEST]
    assert attributes(hass)["ota_state"] == "queued"


def _local(hour: int, days: int = 0) -> datetime:
    today = dt_util.now().replace(hour=hour, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days)


async def test_held_request_waits_for_the_broker(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """At the window's opening without a broker the request stays held; it goes once connected."""
    hass.config_entries.async_update_entry(
        setup_integration, options={CONF_WINDOW_START: "01:00", CONF_WINDOW_END: "05:00"}
    )
    freezer.move_to(_local(12))
    await hass.async_block_till_done()
    await register(hass)
    await install(hass)
    mqtt_mock.async_publish.reset_mock()

    with disconnected():
        await tick(hass, freezer, _local(1, days=1) - dt_util.now() + timedelta(seconds=1))
        assert publishes(mqtt_mock) == []
        attrs = attributes(hass)
        assert attrs["ota_state"] == "queued"
        assert attrs["in_progress"] is True
        assert datetime.fromisoformat(attrs["ota_held_until"]) > dt_util.now()
        # Still away a minute later: held again, nothing sent.
        await tick(hass, freezer, timedelta(minutes=1))
        assert publishes(mqtt_mock) == []

    await tick(hass, freezer, timedelta(minutes=1))
    assert publishes(mqtt_mock) == [REQUEST]
    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["ota_held_until"] is None


async def _reconnect(hass: HomeAssistant, mqtt_client_mock: Any) -> None:
    """Let HA's MQTT client lose the broker and connect again (a clean session)."""
    mqtt_client_mock.on_disconnect(mqtt_client_mock, None, None, MockMqttReasonCode())
    await hass.async_block_till_done()
    mqtt_client_mock.on_connect(mqtt_client_mock, None, 0, MockMqttReasonCode())
    await hass.async_block_till_done()


@pytest.mark.usefixtures("setup_integration")
async def test_request_gone_during_an_outage_is_not_a_timeout(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, mqtt_client_mock: Any
) -> None:
    """A request the broker no longer holds after a reconnect vanished unseen, as in a restart.

    The device may have applied it and cleared it while HA was away, its report lost with the
    session: the job must not end `timed_out` as if the device never answered.
    """
    await register(hass)
    await install(hass)

    await _reconnect(
        hass, mqtt_client_mock
    )  # No replay follows: the device cleared the request meanwhile.
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    assert attributes(hass)["ota_state"] == "queued"
    await tick(hass, freezer, UNKNOWN_CADENCE_TIMEOUT)

    assert attributes(hass)["ota_state"] == "unknown"


@pytest.mark.usefixtures("setup_integration")
async def test_request_replayed_after_a_reconnect_keeps_waiting(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, mqtt_client_mock: Any
) -> None:
    """The broker replays a request still waiting: the job waits on, and times out as usual."""
    await register(hass)
    await install(hass)

    await _reconnect(hass, mqtt_client_mock)
    await fire(hass, ota_topic(), request_payload(), retain=True)
    await tick(hass, freezer, REPLAY_GRACE + timedelta(seconds=1))
    await tick(hass, freezer, UNKNOWN_CADENCE_TIMEOUT)

    assert attributes(hass)["ota_state"] == "timed_out"

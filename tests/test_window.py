"""The maintenance window: requests asked outside it are held by HA and published when it opens."""

from datetime import datetime, time, timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import CONF_WINDOW_END, CONF_WINDOW_START
from custom_components.insighio_ota.jobs import TrackerSettings

from .conftest import ota_topic, stat_payload, stat_topic
from .helpers import (
    BOOT_COMMIT,
    attributes,
    fire,
    install,
    publishes,
    register,
    request_payload,
    restart,
    tick,
)

REQUEST = (ota_topic(), request_payload(), 1, True)


def local(hour: int, minute: int = 0, days: int = 0) -> datetime:
    """Return today's local time at hour:minute (plus days), as HA's time zone sees it."""
    today = dt_util.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
    return today + timedelta(days=days)


@pytest.fixture
def config_entry(config_entry: MockConfigEntry) -> MockConfigEntry:
    """Return the same entry, with a night-time maintenance window from 01:00 to 05:00."""
    return MockConfigEntry(
        domain=config_entry.domain,
        title=config_entry.title,
        unique_id=config_entry.unique_id,
        data=config_entry.data,
        options={CONF_WINDOW_START: "01:00", CONF_WINDOW_END: "05:00"},
    )


async def _midday(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> None:
    freezer.move_to(local(12))
    await hass.async_block_till_done()


async def test_install_outside_the_window_is_held_until_it_opens(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """At noon nothing is published; the entity shows queued with held_until; at 01:00 it goes."""
    await _midday(hass, freezer)
    await fire(hass, stat_topic(), stat_payload(BOOT_COMMIT))
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    await install(hass)

    attrs = attributes(hass)
    assert attrs["ota_state"] == "queued"
    assert attrs["in_progress"] is True
    opening = local(1, days=1)
    assert datetime.fromisoformat(attrs["ota_held_until"]) == opening
    assert publishes(mqtt_mock) == []

    await tick(hass, freezer, opening - dt_util.now() - timedelta(minutes=1))
    assert publishes(mqtt_mock) == []

    await tick(hass, freezer, timedelta(minutes=2))
    assert publishes(mqtt_mock) == [REQUEST]
    attrs = attributes(hass)
    assert attrs["ota_held_until"] is None
    # The device's time to answer counts from the publish, not from the click.
    assert datetime.fromisoformat(attrs["ota_deadline"]) > opening + timedelta(hours=23)


async def test_install_inside_the_window_is_published_at_once(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """At 02:00 the window is open: the request goes out right away."""
    freezer.move_to(local(2))
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    await install(hass)

    assert publishes(mqtt_mock) == [REQUEST]
    assert attributes(hass)["ota_held_until"] is None


async def test_held_request_survives_a_restart(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """HA restarts while a request is held; the window opens while it is down: published."""
    await _midday(hass, freezer)
    await register(hass)
    await install(hass)
    await hass.config_entries.async_unload(setup_integration.entry_id)
    freezer.move_to(local(2, days=1))
    mqtt_mock.async_publish.reset_mock()

    assert await hass.config_entries.async_setup(setup_integration.entry_id)
    await tick(hass, freezer, timedelta(seconds=1))

    assert publishes(mqtt_mock) == [REQUEST]
    assert attributes(hass)["ota_state"] == "queued"


async def test_cancel_a_held_request(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A held request cancelled before the window never reaches the broker."""
    await _midday(hass, freezer)
    await register(hass)
    await install(hass)
    await setup_integration.runtime_data.tracker.async_cancel(
        next(iter(setup_integration.runtime_data.coordinator.data))
    )
    await tick(hass, freezer, timedelta(days=1))

    assert attributes(hass)["ota_state"] == "cancelled"
    assert REQUEST not in publishes(mqtt_mock)
    await restart(hass, setup_integration)


@pytest.mark.parametrize(
    ("start", "end", "now", "held"),
    [
        ("01:00", "05:00", time(0, 30), time(1, 0)),
        ("01:00", "05:00", time(5, 0), time(1, 0)),
        ("01:00", "05:00", time(3, 0), None),
        ("22:00", "04:00", time(23, 0), None),
        ("22:00", "04:00", time(3, 59), None),
        ("22:00", "04:00", time(12, 0), time(22, 0)),
        ("03:00", "03:00", time(12, 0), None),
        (None, None, time(12, 0), None),
        ("not a time", "05:00", time(12, 0), None),
    ],
)
def test_window_arithmetic(
    start: str | None, end: str | None, now: time, held: time | None
) -> None:
    """Inside the window (or without one) requests go at once; else at the next opening."""
    settings = TrackerSettings.from_options({CONF_WINDOW_START: start, CONF_WINDOW_END: end})
    moment = datetime(2026, 12, 3, now.hour, now.minute, tzinfo=dt_util.UTC)
    result = settings.held_until(moment)
    if held is None:
        assert result is None
    else:
        assert result is not None
        assert result.time() == held
        assert result > moment


async def test_options_flow_saves_the_window(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Both ends are saved; one end alone is refused with a translated error."""
    flow = await hass.config_entries.options.async_init(setup_integration.entry_id)
    flow = await hass.config_entries.options.async_configure(
        flow["flow_id"], {"next_step_id": "settings"}
    )
    base = {
        "notify_failures": True,
        "retry_cap": 3,
        "timeout_wakes": 6,
        "seen_within_hours": 72,
        "min_battery_mv": 0,
    }
    flow = await hass.config_entries.options.async_configure(
        flow["flow_id"], {**base, CONF_WINDOW_START: "02:00:00"}
    )
    assert flow["type"] is FlowResultType.FORM
    assert flow["errors"] == {"base": "window_incomplete"}

    flow = await hass.config_entries.options.async_configure(
        flow["flow_id"], {**base, CONF_WINDOW_START: "02:00:00", CONF_WINDOW_END: "04:30:00"}
    )
    assert flow["type"] is FlowResultType.CREATE_ENTRY
    assert setup_integration.options[CONF_WINDOW_START] == "02:00:00"
    assert setup_integration.options[CONF_WINDOW_END] == "04:30:00"


async def test_held_request_that_cannot_be_published_fails(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """If MQTT cannot publish when the window opens, the job fails and says why."""
    await _midday(hass, freezer)
    await register(hass)
    await install(hass)
    mqtt_mock.async_publish.side_effect = HomeAssistantError("not connected")

    await tick(hass, freezer, local(1, days=1) - dt_util.now() + timedelta(minutes=1))

    attrs = attributes(hass)
    assert attrs["ota_state"] == "failed"
    assert "could not publish the request" in attrs["ota_reason"]
    assert attrs["in_progress"] is False

"""The account's sensors: devices outdated, jobs pending, jobs failed in 24 h, the rollout."""

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.sensor import (
    ATTR_OPTIONS,
    ATTR_STATE_CLASS,
    SensorDeviceClass,
    SensorStateClass,
)
from homeassistant.const import ATTR_DEVICE_CLASS, ATTR_UNIT_OF_MEASUREMENT
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker

from custom_components.insighio_ota.const import DEVICE_LIST_INTERVAL, DOMAIN
from custom_components.insighio_ota.sensor import (
    FAILED_WINDOW,
    FAILED_WINDOW_REFRESH,
    FLEET_COALESCE_ABOVE,
    FLEET_COALESCE_DELAY,
)

from .conftest import (
    API,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_BYTES,
    PACKAGE_ID,
    console_device,
    ota_topic,
    stat_payload,
    stat_topic,
)
from .helpers import PACKAGE_COMMIT, fire, install, report

OUTDATED_ID = "sensor.user_example_test_devices_outdated"
PENDING_ID = "sensor.user_example_test_jobs_pending"
FAILED_ID = "sensor.user_example_test_jobs_failed_last_24_h"
ROLLOUT_ID = "sensor.user_example_test_rollout"
NEWER_ID = "5a5a5a5a"
THIRD_DEVICE_ID = "33333333-3333-4333-8333-333333333333"


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """List two devices."""
    return [console_device(DEVICE_ID, "Sensor 1"), console_device(OTHER_DEVICE_ID, "Sensor 2")]


async def register(
    hass: HomeAssistant, version: str, file_id: str = PACKAGE_ID, **data: Any
) -> None:
    """Register a console package under a version label."""
    await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": file_id, "file_type": ".tar", "version": version, **data},
        blocking=True,
    )
    await hass.async_block_till_done()


async def edit_release_notes(hass: HomeAssistant, notes: str) -> None:
    """Change the package's notes: a catalogue change, after which the sensors count again."""
    await hass.services.async_call(
        DOMAIN, "update_package", {"file_id": PACKAGE_ID, "release_notes": notes}, blocking=True
    )
    await hass.async_block_till_done()


def value(hass: HomeAssistant, entity_id: str) -> tuple[int, list[str]]:
    """Return a fleet sensor's count and the device names it lists."""
    state = hass.states.get(entity_id)
    assert state is not None
    return int(state.state), state.attributes["devices"]


async def refresh_device_list(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    mock_console: AiohttpClientMocker,
    devices: list[dict[str, Any]],
) -> None:
    """Let the coordinator read a new console device list."""
    mock_console.clear_requests()
    mock_console.get(f"{API}/device/list", json=devices)
    mock_console.get(f"{API}/packages/download", content=PACKAGE_BYTES)
    freezer.tick(DEVICE_LIST_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


async def test_fleet_sensors_on_the_account_device(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Three counts on a service device named after the entry, measurements without a unit."""
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, setup_integration.entry_id), setup_integration.entry_id
    )
    assert device is not None
    assert device.entry_type is dr.DeviceEntryType.SERVICE
    assert device.name == "user@example.test"
    assert device.manufacturer == "insigh.io"

    for entity_id, key in (
        (OUTDATED_ID, "devices_outdated"),
        (PENDING_ID, "jobs_pending"),
        (FAILED_ID, "jobs_failed"),
    ):
        entry = entity_registry.async_get(entity_id)
        assert entry is not None, entity_id
        assert entry.unique_id == f"{setup_integration.entry_id}_{key}"
        assert entry.translation_key == key
        assert entry.device_id == device.id
        assert entry.entity_category is None
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.state == "0"
        assert state.attributes[ATTR_STATE_CLASS] == SensorStateClass.MEASUREMENT
        assert ATTR_UNIT_OF_MEASUREMENT not in state.attributes
        assert state.attributes["devices"] == []


async def test_outdated_follows_packages_and_stat(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Registering, adding and removing packages and each device's /stat move the count."""
    assert value(hass, OUTDATED_ID) == (0, [])  # No package: nothing to be behind.

    # A package for all hardware: devices whose software is unknown count as outdated.
    await register(hass, "1.1.0", sw_commit="4f1c2a9")
    assert value(hass, OUTDATED_ID) == (2, ["Sensor 1", "Sensor 2"])

    # Sensor 1 runs the commit the package installs: on the latest. A /stat is no job change.
    await fire(hass, stat_topic(DEVICE_ID), stat_payload("4f1c2a9"))
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 2"])
    # Sensor 2 runs software no package names.
    await fire(hass, stat_topic(OTHER_DEVICE_ID), stat_payload("0000000"))
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 2"])

    # A newer package for their hardware: both behind; removed again: Sensor 1 is current.
    await register(hass, "1.2.0", file_id=NEWER_ID, hardware=["esp32s3"])
    assert value(hass, OUTDATED_ID) == (2, ["Sensor 1", "Sensor 2"])
    await hass.services.async_call(DOMAIN, "remove_package", {"file_id": NEWER_ID}, blocking=True)
    await hass.async_block_till_done()
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 2"])

    # A newer package for other hardware changes nothing.
    await register(hass, "1.2.0-s2", file_id=NEWER_ID, hardware=["esp32s2"])
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 2"])


async def test_outdated_by_catalogue_order_not_label(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A device on a package later in order than its latest compatible one is not behind.

    Only a package of other hardware can be later; the device runs it when its commit says so.
    """
    await register(hass, "2.0.0", sw_commit="1111111")
    await register(hass, "1.0.0-s2", file_id=NEWER_ID, hardware=["esp32s2"], sw_commit="4f1c2a9")
    await fire(hass, stat_topic(DEVICE_ID), stat_payload("4f1c2a9"))  # esp32s3 on 1.0.0-s2
    await fire(hass, stat_topic(OTHER_DEVICE_ID), stat_payload("1111111"))  # on 2.0.0
    assert value(hass, OUTDATED_ID) == (0, [])


async def test_outdated_after_an_install(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A verified install takes the device off the count."""
    await register(hass, "1.1.0")
    await install(hass)
    await fire(hass, ota_topic(DEVICE_ID), report(1))
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 2"])


async def test_pending_follows_jobs(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Open jobs count from the request until the reboot's /stat, or the cancel."""
    await register(hass, "1.1.0")
    await install(hass)
    assert value(hass, PENDING_ID) == (1, ["Sensor 1"])
    await install(hass, entity_id="update.sensor_2_firmware")
    assert value(hass, PENDING_ID) == (2, ["Sensor 1", "Sensor 2"])

    await fire(hass, ota_topic(DEVICE_ID), report(1))
    assert value(hass, PENDING_ID) == (2, ["Sensor 1", "Sensor 2"])  # Applied, awaiting /stat.
    await fire(hass, stat_topic(DEVICE_ID), stat_payload("4f1c2a9"))
    assert value(hass, PENDING_ID) == (1, ["Sensor 2"])

    await hass.services.async_call(
        DOMAIN, "cancel", {"entity_id": "update.sensor_2_firmware"}, blocking=True
    )
    await hass.async_block_till_done()
    assert value(hass, PENDING_ID) == (0, [])
    assert value(hass, FAILED_ID) == (0, [])  # A cancel is no failure.


async def test_failed_in_the_last_24_hours(
    hass: HomeAssistant, setup_integration: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """Failed, timed out and unknown ends count for 24 h each; the timer drops them after."""
    await register(hass, "1.1.0")
    await install(hass)
    await fire(hass, ota_topic(DEVICE_ID), report(2, reason="can not apply"))
    assert value(hass, FAILED_ID) == (1, ["Sensor 1"])
    assert value(hass, PENDING_ID) == (0, [])

    # Twelve hours later Sensor 1 fails again and Sensor 2 times out (24 h with no cadence).
    freezer.tick(timedelta(hours=12))
    async_fire_time_changed(hass)
    await install(hass)
    await fire(hass, ota_topic(DEVICE_ID), report(2, reason="not enough space"))
    await install(hass, entity_id="update.sensor_2_firmware")
    assert value(hass, FAILED_ID) == (2, ["Sensor 1"])  # Each job counts, each device once.

    # The first failure leaves the window at the next refresh after it is 24 h old.
    freezer.tick(timedelta(hours=12) - FAILED_WINDOW_REFRESH / 2)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert value(hass, FAILED_ID) == (2, ["Sensor 1"])
    freezer.tick(FAILED_WINDOW_REFRESH)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert value(hass, FAILED_ID) == (1, ["Sensor 1"])

    # Sensor 2's job times out 24 h after its request, as Sensor 1's second failure leaves.
    freezer.tick(timedelta(hours=12))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert value(hass, FAILED_ID) == (1, ["Sensor 2"])
    assert value(hass, PENDING_ID) == (0, [])

    freezer.tick(FAILED_WINDOW + FAILED_WINDOW_REFRESH)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert value(hass, FAILED_ID) == (0, [])


async def test_device_list_changes(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    mock_console: AiohttpClientMocker,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Only listed devices count; a device listed later is followed like the others."""
    await register(hass, "1.1.0", sw_commit="4f1c2a9")
    await install(hass, entity_id="update.sensor_2_firmware")
    await fire(hass, ota_topic(OTHER_DEVICE_ID), report(2, reason="can not apply"))
    assert value(hass, OUTDATED_ID) == (2, ["Sensor 1", "Sensor 2"])
    assert value(hass, FAILED_ID) == (1, ["Sensor 2"])

    # Sensor 2 leaves the console, Sensor 3 joins it.
    await refresh_device_list(
        hass,
        freezer,
        mock_console,
        [console_device(DEVICE_ID, "Sensor 1"), console_device(THIRD_DEVICE_ID, "Sensor 3")],
    )
    assert value(hass, OUTDATED_ID) == (2, ["Sensor 1", "Sensor 3"])
    assert value(hass, FAILED_ID) == (0, [])

    # The new device's /stat moves the count at once; the departed one's is not followed.
    await fire(hass, stat_topic(THIRD_DEVICE_ID), stat_payload("4f1c2a9"))
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 1"])

    # Names are the ones the user gave in Home Assistant.
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, DEVICE_ID), setup_integration.entry_id
    )
    assert device is not None
    device_registry.async_update_device(device.id, name_by_user="Garden")
    await edit_release_notes(hass, "again")
    assert value(hass, OUTDATED_ID) == (1, ["Garden"])
    # A listed device Home Assistant has no device for (yet) goes by its console name.
    device_registry.async_remove_device(device.id)
    await edit_release_notes(hass, "once more")
    assert value(hass, OUTDATED_ID) == (1, ["Sensor 1"])


async def test_listed_names_are_capped(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    mock_console: AiohttpClientMocker,
) -> None:
    """The state counts every device; the attribute names the first 20 by name."""
    devices = [
        console_device(f"{index:08d}-0000-4000-8000-000000000000", f"Node {index:02d}")
        for index in range(25)
    ]
    await refresh_device_list(hass, freezer, mock_console, devices)
    await register(hass, "1.1.0")
    count, names = value(hass, OUTDATED_ID)
    assert count == 25
    assert names == [f"Node {index:02d}" for index in range(20)]


def rollout_sensor(hass: HomeAssistant) -> Any:
    """Return the rollout sensor's state object."""
    state = hass.states.get(ROLLOUT_ID)
    assert state is not None
    return state


async def start_rollout(
    hass: HomeAssistant, entry: MockConfigEntry, device_ids: list[str], **data: Any
) -> str:
    """Start a rollout of 1.1.0 to console devices, one device per wave; return its id."""
    registry = dr.async_get(hass)
    targets = []
    for device_id in device_ids:
        device = registry.async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)
        assert device is not None
        targets.append(device.id)
    response = await hass.services.async_call(
        DOMAIN,
        "start_rollout",
        {"device_id": targets, "version": "1.1.0", "canary_count": 1, "wave_size": 1, **data},
        blocking=True,
        return_response=True,
    )
    await hass.async_block_till_done()
    assert response is not None
    rollout_id = response["rollout_id"]
    assert isinstance(rollout_id, str)
    return rollout_id


async def rollout_action(hass: HomeAssistant, service: str, rollout_id: str) -> None:
    """Pause, resume or abort a rollout."""
    await hass.services.async_call(DOMAIN, service, {"rollout": rollout_id}, blocking=True)
    await hass.async_block_till_done()


async def succeed(hass: HomeAssistant, device_id: str) -> None:
    """Let a device apply the package and reboot."""
    await fire(hass, ota_topic(device_id), report(1))
    await fire(hass, stat_topic(device_id), stat_payload())


async def test_rollout_sensor_follows_a_rollout(
    hass: HomeAssistant, setup_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Idle, then running, paused, running again wave by wave, finished."""
    state = rollout_sensor(hass)
    assert state.state == "idle"
    assert state.attributes[ATTR_DEVICE_CLASS] == SensorDeviceClass.ENUM
    assert state.attributes[ATTR_OPTIONS] == ["idle", "running", "paused", "finished", "aborted"]
    assert "rollout_id" not in state.attributes
    entry = entity_registry.async_get(ROLLOUT_ID)
    assert entry is not None
    assert entry.unique_id == f"{setup_integration.entry_id}_rollout"
    assert entry.translation_key == "rollout"

    await register(hass, "1.1.0")
    rollout_id = await start_rollout(
        hass, setup_integration, [DEVICE_ID, OTHER_DEVICE_ID], name="night"
    )
    state = rollout_sensor(hass)
    assert state.state == "running"
    assert state.attributes == state.attributes | {
        "rollout_id": rollout_id,
        "name": "night",
        "version": "1.1.0",
        "file_id": PACKAGE_ID,
        "counts": {"pending": 1, "skipped": 0, "queued": 1, "succeeded": 0, "failed": 0},
        "current_wave": 1,
        "wave_count": 2,
        "pause_reason": None,
        "active_rollouts": 1,
    }
    assert value(hass, PENDING_ID) == (1, ["Sensor 1"])

    await rollout_action(hass, "pause_rollout", rollout_id)
    state = rollout_sensor(hass)
    assert state.state == "paused"
    assert state.attributes["pause_reason"] == "paused by the user"

    await rollout_action(hass, "resume_rollout", rollout_id)
    assert rollout_sensor(hass).state == "running"

    # The canary succeeds: the second wave starts.
    await succeed(hass, DEVICE_ID)
    state = rollout_sensor(hass)
    assert state.state == "running"
    assert state.attributes["current_wave"] == 2
    assert state.attributes["counts"] == {
        "pending": 0,
        "skipped": 0,
        "queued": 1,
        "succeeded": 1,
        "failed": 0,
    }

    await succeed(hass, OTHER_DEVICE_ID)
    state = rollout_sensor(hass)
    assert state.state == "finished"
    assert state.attributes["counts"]["succeeded"] == 2
    assert state.attributes["active_rollouts"] == 0
    assert value(hass, OUTDATED_ID) == (0, [])


async def test_rollout_under_way_wins_over_a_newer_ended_one(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A running rollout stays shown when a newer one is aborted; then the newest is shown."""
    await register(hass, "1.1.0")
    first = await start_rollout(hass, setup_integration, [DEVICE_ID], name="first")
    second = await start_rollout(hass, setup_integration, [OTHER_DEVICE_ID], name="second")
    assert rollout_sensor(hass).attributes["active_rollouts"] == 2
    assert rollout_sensor(hass).attributes["rollout_id"] == second

    await rollout_action(hass, "abort_rollout", second)
    state = rollout_sensor(hass)
    assert (state.state, state.attributes["rollout_id"]) == ("running", first)
    assert state.attributes["active_rollouts"] == 1

    await rollout_action(hass, "abort_rollout", first)
    state = rollout_sensor(hass)
    assert (state.state, state.attributes["rollout_id"]) == ("aborted", second)


LARGE_FLEET = [
    console_device(DEVICE_ID, "Sensor 1"),
    *(
        console_device(f"{index:08x}-0000-4000-8000-000000000000", f"Sensor {index}")
        for index in range(2, FLEET_COALESCE_ABOVE + 2)
    ),
]


async def _settle(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> None:
    freezer.tick(FLEET_COALESCE_DELAY)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


@pytest.mark.parametrize("console_devices", [LARGE_FLEET])
async def test_large_fleet_counts_are_written_together(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Above FLEET_COALESCE_ABOVE devices, the changes of a moment make one write of a count."""
    await register(hass, "1.1.0", sw_commit=PACKAGE_COMMIT)
    await _settle(hass, freezer)
    assert value(hass, OUTDATED_ID)[0] == len(LARGE_FLEET)
    writes = 0

    def _count(event: Any) -> None:
        nonlocal writes
        writes += event.data["entity_id"] == OUTDATED_ID

    hass.bus.async_listen("state_changed", _count)
    for device in LARGE_FLEET[1:4]:
        await fire(hass, stat_topic(device["id"]), stat_payload(PACKAGE_COMMIT))
    assert value(hass, OUTDATED_ID)[0] == len(LARGE_FLEET)
    assert writes == 0

    await _settle(hass, freezer)
    assert value(hass, OUTDATED_ID)[0] == len(LARGE_FLEET) - 3
    assert writes == 1

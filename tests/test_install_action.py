"""`insighio_ota.install`: one package to every targeted device, each refused or queued alone."""

from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import (
    area_registry as ar,
    device_registry as dr,
    entity_registry as er,
)
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.insighio_ota.const import CONF_MIN_BATTERY_MV, DOMAIN

from .conftest import PACKAGE_ID, console_device, ota_topic
from .helpers import (
    fire,
    publishes,
    register,
    request_payload,
    set_options,
    telemetry_payload,
    telemetry_topic,
)

IDS = [f"{index:08x}-aaaa-4aaa-8aaa-aaaaaaaaaaaa" for index in range(1, 5)]
NAMES = ["Sensor 1", "Sensor 2", "Sensor 3", "Sensor 4"]


@pytest.fixture
def console_devices() -> list[dict[str, Any]]:
    """Four devices."""
    return [console_device(device_id, name) for device_id, name in zip(IDS, NAMES, strict=True)]


def ha_device(hass: HomeAssistant, entry: MockConfigEntry, device_id: str) -> dr.DeviceEntry:
    """Return the HA device of a console device."""
    device = dr.async_get(hass).async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)
    assert device is not None
    return device


async def install(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call the action and return its response."""
    response = await hass.services.async_call(
        DOMAIN, "install", data, blocking=True, return_response=True
    )
    assert response is not None
    return response


def by_name(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the results by device name."""
    return {result["name"]: result for result in response["results"]}


async def test_mixed_results(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Queued where possible; a guard and a busy device are refused with their reasons."""
    entry = setup_integration
    await register(hass)
    await set_options(hass, entry, **{CONF_MIN_BATTERY_MV: 3500})
    await fire(hass, telemetry_topic(IDS[1]), telemetry_payload(vbatt=3100))
    await hass.services.async_call(
        "update", "install", {"entity_id": "update.sensor_3_firmware"}, blocking=True
    )
    mqtt_mock.async_publish.reset_mock()
    refusals = async_capture_events(hass, "insighio_ota_install_refused")

    response = await install(
        hass,
        device_id=[ha_device(hass, entry, device_id).id for device_id in IDS[:3]],
        entity_id="update.sensor_4_firmware",
        version="1.1.0",
    )

    results = by_name(response)
    assert [result["name"] for result in response["results"]] == NAMES
    assert results["Sensor 1"] == {
        "device_id": ha_device(hass, entry, IDS[0]).id,
        "insighio_device_id": IDS[0],
        "name": "Sensor 1",
        "result": "queued",
        "reason": None,
    }
    assert results["Sensor 2"]["result"] == "refused"
    assert "3100 mV" in results["Sensor 2"]["reason"]
    assert results["Sensor 3"]["result"] == "refused"
    assert "still waiting" in results["Sensor 3"]["reason"]
    assert results["Sensor 4"]["result"] == "queued"
    # Automations see every refusal as an event too.
    assert sorted(event.data["name"] for event in refusals) == ["Sensor 2", "Sensor 3"]
    assert sorted(call[0] for call in publishes(mqtt_mock)) == sorted(
        ota_topic(device_id) for device_id in (IDS[0], IDS[3])
    )
    assert publishes(mqtt_mock)[0][1] == request_payload()


async def test_by_area_and_file_id(
    hass: HomeAssistant,
    setup_integration: MockConfigEntry,
    area_registry: ar.AreaRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """An area targets its devices; a user-given device name is the one reported."""
    entry = setup_integration
    await register(hass)
    cellar = area_registry.async_create("Cellar")
    device = ha_device(hass, entry, IDS[1])
    device_registry.async_update_device(device.id, area_id=cellar.id, name_by_user="Pump")

    response = await install(hass, area_id=cellar.id, file_id=PACKAGE_ID)

    assert response["results"] == [
        {
            "device_id": device.id,
            "insighio_device_id": IDS[1],
            "name": "Pump",
            "result": "queued",
            "reason": None,
        }
    ]


async def test_nothing_queued_still_answers(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """An unknown package refuses every device, with the reason, and raises nothing."""
    await register(hass)
    mqtt_mock.async_publish.reset_mock()

    response = await install(hass, entity_id="update.sensor_1_firmware", version="9.9.9")
    unknown_file = await install(hass, entity_id="update.sensor_1_firmware", file_id="beefbeef")

    assert [r["result"] for r in response["results"]] == ["refused"]
    assert "9.9.9" in response["results"][0]["reason"]
    assert "beefbeef" in unknown_file["results"][0]["reason"]
    assert publishes(mqtt_mock) == []


async def test_incompatible_and_unlisted_devices_are_refused(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Hardware the package is not for, and a device the console no longer lists."""
    entry = setup_integration
    await register(hass, hardware=["esp32"])
    await register(hass, file_id="0a0a0a0a", version="1.2.0")
    coordinator = entry.runtime_data.coordinator
    coordinator.async_set_updated_data({k: v for k, v in coordinator.data.items() if k != IDS[1]})

    incompatible = await install(hass, entity_id="update.sensor_1_firmware", version="1.1.0")
    unlisted = await install(hass, device_id=ha_device(hass, entry, IDS[1]).id, version="1.2.0")

    assert incompatible["results"][0]["result"] == "refused"
    assert "esp32" in incompatible["results"][0]["reason"]
    assert unlisted["results"][0]["result"] == "refused"
    assert IDS[1] in unlisted["results"][0]["reason"]


async def test_publish_failure_refuses_that_device(
    hass: HomeAssistant, setup_integration: MockConfigEntry, mqtt_mock: Any
) -> None:
    """MQTT refusing the publish is a refusal like any other."""
    await register(hass)
    mqtt_mock.async_publish.side_effect = HomeAssistantError("broker gone")

    response = await install(hass, entity_id="update.sensor_1_firmware", version="1.1.0")

    assert response["results"][0]["result"] == "refused"
    assert "broker gone" in response["results"][0]["reason"]
    mqtt_mock.async_publish.side_effect = None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"entity_id": "update.sensor_1_firmware"}, "package_required"),
        (
            {"entity_id": "update.sensor_1_firmware", "version": "1.1.0", "file_id": PACKAGE_ID},
            "package_required",
        ),
        ({"device_id": "no-such-device", "version": "1.1.0"}, "no_target_devices"),
        (
            {
                "entity_id": "update.sensor_1_firmware",
                "version": "1.1.0",
                "config_entry_id": "another",
            },
            "no_target_devices",
        ),
    ],
)
async def test_translated_errors(
    hass: HomeAssistant, setup_integration: MockConfigEntry, data: dict[str, Any], key: str
) -> None:
    """No package, two packages or no device at all: a translated error, nothing sent."""
    await register(hass)
    with pytest.raises(ServiceValidationError) as exc_info:
        await install(hass, **data)
    assert exc_info.value.translation_key == key


async def test_foreign_entities_are_not_targets(
    hass: HomeAssistant, setup_integration: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Another integration's entity is no device of ours."""
    other = MockConfigEntry(domain="other")
    other.add_to_hass(hass)
    foreign = entity_registry.async_get_or_create("sensor", "other", "u1")
    with pytest.raises(ServiceValidationError) as exc_info:
        await install(hass, entity_id=foreign.entity_id, version="1.1.0")
    assert exc_info.value.translation_key == "no_target_devices"


async def test_without_response(hass: HomeAssistant, setup_integration: MockConfigEntry) -> None:
    """Automations may call it without asking for the results."""
    await register(hass)
    await hass.services.async_call(
        DOMAIN, "install", {"entity_id": "update.sensor_1_firmware", "version": "1.1.0"}
    )
    await hass.async_block_till_done()
    state = hass.states.get("update.sensor_1_firmware")
    assert state is not None
    assert state.attributes["ota_state"] == "queued"

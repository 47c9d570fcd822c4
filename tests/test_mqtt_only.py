"""An MQTT-only entry: devices found on the project's channels, packages described by the user."""

from collections.abc import AsyncGenerator
from datetime import timedelta
import json
import logging
from typing import Any
from unittest.mock import MagicMock, patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import (
    device_registry as dr,
    entity_registry as er,
    issue_registry as ir,
)
from homeassistant.helpers.entity import Entity
from homeassistant.setup import async_setup_component
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker
from pytest_homeassistant_custom_component.typing import (
    ClientSessionGenerator,
    WebSocketGenerator,
)

from custom_components.insighio_ota.const import (
    CONF_CONTROL_CHANNEL,
    CONF_DATA_CHANNEL,
    CONF_MODE,
    DOMAIN,
    MODE_MQTT,
)
from custom_components.insighio_ota.coordinator import MqttDeviceCoordinator
from custom_components.insighio_ota.repairs import PackageWatch

from .conftest import (
    CONTROL_CHANNEL,
    DATA_CHANNEL,
    DEVICE_ID,
    OTHER_DEVICE_ID,
    PACKAGE_ID,
    ota_topic,
    stat_payload,
    stat_topic,
)
from .helpers import (
    fire,
    publishes,
    report,
    restart,
    telemetry_payload,
    telemetry_topic,
    tick,
)

SERIAL = "240ac4542f45"
THIRD_DEVICE_ID = "33333333-3333-4333-8333-333333333333"
OTHER_DATA = "d1d1d1d1-0000-4000-8000-000000000011"
OTHER_CONTROL = "c1c1c1c1-0000-4000-8000-000000000012"


@pytest.fixture
def mqtt_only_entry() -> MockConfigEntry:
    """Return an MQTT-only entry of the test project."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="insigh.io project d0d0d0d0",
        unique_id=DATA_CHANNEL,
        data={
            CONF_MODE: MODE_MQTT,
            CONF_DATA_CHANNEL: DATA_CHANNEL,
            CONF_CONTROL_CHANNEL: CONTROL_CHANNEL,
        },
    )


@pytest.fixture
async def entry(
    hass: HomeAssistant,
    mqtt_mock: Any,
    mqtt_client_mock: Any,
    aioclient_mock: AiohttpClientMocker,
    mqtt_only_entry: MockConfigEntry,
) -> AsyncGenerator[MockConfigEntry]:
    """Load the MQTT-only entry with HA's MQTT mocked; no console is answered at all."""
    mqtt_only_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mqtt_only_entry.entry_id)
    await hass.async_block_till_done()
    yield mqtt_only_entry
    await hass.config_entries.async_unload(mqtt_only_entry.entry_id)
    await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))
    # Nothing of an MQTT-only entry ever talks to a console.
    assert aioclient_mock.call_count == 0


def devices_of(entry: MockConfigEntry) -> dict[str, Any]:
    """Return the entry's device list."""
    coordinator = entry.runtime_data.coordinator
    assert isinstance(coordinator, MqttDeviceCoordinator)
    return dict(coordinator.data)


def update_entity(hass: HomeAssistant, device_id: str = DEVICE_ID) -> str | None:
    """Return the update entity of a device, if it has one."""
    return er.async_get(hass).async_get_entity_id("update", DOMAIN, f"{device_id}_firmware")


def registry_device(hass: HomeAssistant, device_id: str = DEVICE_ID) -> dr.DeviceEntry | None:
    """Return the HA device of an insigh.io device (or of the entry, by its id)."""
    registry = dr.async_get(hass)
    (entry,) = hass.config_entries.async_entries(DOMAIN)
    return registry.async_get_device_by_identifier((DOMAIN, device_id), entry.entry_id)


async def test_both_channels_followed_with_no_device(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> None:
    """With no device known yet, the project's telemetry, /ota and /stat are subscribed."""
    subscribed = {call.args[0] for call in mqtt_mock.async_subscribe.call_args_list}

    assert devices_of(entry) == {}
    assert entry.runtime_data.client is None
    assert {
        f"channels/{DATA_CHANNEL}/messages/+",
        f"channels/{CONTROL_CHANNEL}/messages/+/ota",
        f"channels/{CONTROL_CHANNEL}/messages/+/stat",
    } <= subscribed


async def test_device_from_telemetry(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Telemetry of a new device adds it, named by its serial, and counts as its first wake."""
    await fire(hass, telemetry_topic(), telemetry_payload(vbatt=3900))

    device = devices_of(entry)[DEVICE_ID]
    assert device.name == f"insigh.io {SERIAL}"
    assert device.key == ""
    assert (device.data_channel, device.control_channel) == (DATA_CHANNEL, CONTROL_CHANNEL)
    entity_id = update_entity(hass)
    assert entity_id is not None
    assert hass.states.get(entity_id) is not None
    registered = registry_device(hass)
    assert registered is not None
    assert registered.name == f"insigh.io {SERIAL}"
    # The tracker read the same message: the device was seen, with its battery.
    facts = entry.runtime_data.tracker.facts(DEVICE_ID)
    assert facts is not None
    assert facts.last_seen is not None
    assert facts.battery_mv == 3900


async def test_device_from_stat(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """A /stat of a new device adds it, and its software shows at once."""
    await fire(hass, stat_topic(), stat_payload(serial="aabbccddeeff"))

    assert devices_of(entry)[DEVICE_ID].name == "insigh.io aabbccddeeff"
    entity_id = update_entity(hass)
    assert entity_id is not None
    assert hass.states.get(entity_id).attributes["installed_version"] == "master@1a2b3c4"


async def test_device_without_serial_is_named_by_its_id(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """A /stat without a readable serial names the device after the start of its id."""
    payload = json.dumps([{"vs": "1a2b3c4", "n": "sw_commit"}, {"vs": "a b/c", "n": "serial"}])
    await fire(hass, stat_topic(), payload)

    assert devices_of(entry)[DEVICE_ID].name == "insigh.io 11111111"


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        # OTA traffic proves nothing: anyone may publish there.
        (ota_topic(), report(1)),
        (ota_topic(), json.dumps([{"n": "e", "v": 0}, {"n": "i", "vs": PACKAGE_ID}])),
        # Telemetry that is not the firmware's, or not JSON.
        (telemetry_topic(), json.dumps([{"n": "temperature", "v": 21.5}])),
        (telemetry_topic(), json.dumps([{"bn": "kitchen-", "n": "t", "v": 1}])),
        (telemetry_topic(), json.dumps([{"bn": f"{SERIAL}-"}])),
        (telemetry_topic(), "not json"),
        # A /stat that is not one.
        (stat_topic(), "[]"),
        (stat_topic(), "{}"),
        # A device id that is no console id (upper case included: topics carry lower case).
        (telemetry_topic("kitchen"), telemetry_payload()),
        (telemetry_topic("AAAAAAAA-1111-4111-8111-111111111111"), telemetry_payload()),
        (stat_topic("kitchen"), stat_payload()),
    ],
)
async def test_no_device_from_ota_or_malformed_messages(
    hass: HomeAssistant, entry: MockConfigEntry, topic: str, payload: str
) -> None:
    """Only valid telemetry or /stat introduces a device."""
    await fire(hass, topic, payload)

    assert devices_of(entry) == {}
    assert registry_device(hass) is None


async def test_known_device_is_not_added_again(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Later messages of a known device keep its first name."""
    await fire(hass, telemetry_topic(), telemetry_payload())
    await fire(hass, stat_topic(), stat_payload(serial="aabbccddeeff"))
    await fire(hass, telemetry_topic(), telemetry_payload().replace(SERIAL, "aabbccddeeff"))

    assert devices_of(entry)[DEVICE_ID].name == f"insigh.io {SERIAL}"
    assert len(dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)) == 2


async def test_device_cap(
    hass: HomeAssistant, entry: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the cap no device is added, and that is logged once."""
    with patch("custom_components.insighio_ota.coordinator.MAX_DISCOVERED_DEVICES", 1):
        await fire(hass, telemetry_topic(DEVICE_ID), telemetry_payload())
        with caplog.at_level(logging.WARNING):
            await fire(hass, telemetry_topic(OTHER_DEVICE_ID), telemetry_payload())
            await fire(hass, stat_topic(THIRD_DEVICE_ID), stat_payload())

    assert list(devices_of(entry)) == [DEVICE_ID]
    assert update_entity(hass, OTHER_DEVICE_ID) is None
    warnings = [r for r in caplog.records if "the most it takes" in r.getMessage()]
    assert len(warnings) == 1


async def test_devices_survive_a_restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """The devices found are back at once after a restart, before they talk again."""
    await fire(hass, telemetry_topic(DEVICE_ID), telemetry_payload())
    await fire(hass, stat_topic(OTHER_DEVICE_ID), stat_payload())

    await restart(hass, entry)

    assert set(devices_of(entry)) == {DEVICE_ID, OTHER_DEVICE_ID}
    assert devices_of(entry)[DEVICE_ID].name == f"insigh.io {SERIAL}"
    entity_id = update_entity(hass, OTHER_DEVICE_ID)
    assert entity_id is not None
    assert hass.states.get(entity_id).state != "unavailable"


async def test_other_project_after_reconfigure_forgets_devices(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """Devices found on the old data channel are not the new project's: they leave HA.

    Only the entry's service device (with its fleet sensors) stays.
    """
    await fire(hass, telemetry_topic(), telemetry_payload())
    assert registry_device(hass) is not None
    assert await hass.config_entries.async_unload(entry.entry_id)
    hass.config_entries.async_update_entry(
        entry, unique_id=OTHER_DATA, data={**entry.data, CONF_DATA_CHANNEL: OTHER_DATA}
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    assert devices_of(entry) == {}
    assert registry_device(hass) is None
    assert update_entity(hass) is None
    registry = dr.async_get(hass)
    assert [
        device.identifiers for device in dr.async_entries_for_config_entry(registry, entry.entry_id)
    ] == [{(DOMAIN, entry.entry_id)}]


async def test_stored_devices_are_read_with_care(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    mqtt_mock: Any,
    mqtt_client_mock: Any,
    mqtt_only_entry: MockConfigEntry,
) -> None:
    """A damaged stored record is dropped; the others load."""
    hass_storage[f"{DOMAIN}.{mqtt_only_entry.entry_id}.devices"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{mqtt_only_entry.entry_id}.devices",
        "data": {
            CONF_DATA_CHANNEL: DATA_CHANNEL,
            "devices": {
                DEVICE_ID: {"name": f"insigh.io {SERIAL}"},
                OTHER_DEVICE_ID: {"name": 42},
                THIRD_DEVICE_ID: "garbage",
            },
        },
    }
    mqtt_only_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mqtt_only_entry.entry_id)
    await hass.async_block_till_done()

    assert list(devices_of(mqtt_only_entry)) == [DEVICE_ID]

    await hass.config_entries.async_unload(mqtt_only_entry.entry_id)
    await hass.async_block_till_done()
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, MagicMock(fileno=lambda: -1))


async def test_entity_update_keeps_the_devices(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Asking to refresh an entity keeps the devices found (nothing is polled)."""
    assert await async_setup_component(hass, "homeassistant", {})
    await fire(hass, telemetry_topic(), telemetry_payload())
    entity_id = update_entity(hass)

    await hass.services.async_call(
        "homeassistant", "update_entity", {"entity_id": entity_id}, blocking=True
    )
    await hass.async_block_till_done()

    assert list(devices_of(entry)) == [DEVICE_ID]
    assert hass.states.get(entity_id).state != "unavailable"


async def test_user_removes_device_and_it_comes_back(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, entry: MockConfigEntry
) -> None:
    """A removed device is forgotten (also after a restart) until it reports again."""
    assert await async_setup_component(hass, "config", {})
    await fire(hass, telemetry_topic(), telemetry_payload())
    device = registry_device(hass)
    assert device is not None
    client = await hass_ws_client(hass)

    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": entry.entry_id,
            "device_id": device.id,
        }
    )
    response = await client.receive_json()
    await hass.async_block_till_done()

    assert response["success"]
    assert registry_device(hass) is None
    assert devices_of(entry) == {}
    await restart(hass, entry)
    assert devices_of(entry) == {}

    await fire(hass, telemetry_topic(), telemetry_payload())
    assert DEVICE_ID in devices_of(entry)
    entity_id = update_entity(hass)
    assert entity_id is not None
    assert hass.states.get(entity_id).state != "unavailable"


async def test_entry_device_cannot_be_removed(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, entry: MockConfigEntry
) -> None:
    """The entry's own device (fleet sensors) stays."""
    assert await async_setup_component(hass, "config", {})
    account = registry_device(hass, entry.entry_id)
    assert account is not None
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": entry.entry_id,
            "device_id": account.id,
        }
    )
    response = await client.receive_json()

    assert not response["success"]
    assert registry_device(hass, entry.entry_id) is not None


async def register(hass: HomeAssistant, **data: Any) -> Any:
    """Call the register action; return its response."""
    return await hass.services.async_call(
        DOMAIN,
        "register_package",
        {"file_id": PACKAGE_ID, "version": "1.1.0", **data},
        blocking=True,
        return_response=True,
    )


async def test_reconfigure_is_refused_while_an_update_is_open(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> None:
    """An open update's request is on the current channel: the channels stay until it ends.

    Otherwise the device could apply the package unwatched, and the job would end in a false
    timeout about a device that is no longer shown.
    """
    await fire(hass, telemetry_topic(), telemetry_payload())
    await register(hass, file_type=".tar", size=5120)
    entity_id = update_entity(hass)
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    new_channels = {CONF_DATA_CHANNEL: OTHER_DATA, CONF_CONTROL_CHANNEL: OTHER_CONTROL}

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], new_channels)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "updates_open"}
    assert result["description_placeholders"] == {"devices": f"insigh.io {SERIAL}"}
    assert entry.data[CONF_DATA_CHANNEL] == DATA_CHANNEL

    # Unchanged channels are no change; after a cancel the new ones are taken.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DATA_CHANNEL: DATA_CHANNEL, CONF_CONTROL_CHANNEL: CONTROL_CHANNEL}
    )
    assert result["reason"] == "channels_changed"
    await hass.async_block_till_done()
    await hass.services.async_call(DOMAIN, "cancel", {"entity_id": entity_id}, blocking=True)
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], new_channels)
    assert result["reason"] == "channels_changed"
    await hass.async_block_till_done()
    assert entry.data[CONF_DATA_CHANNEL] == OTHER_DATA


async def test_register_package_by_type_and_size_then_install(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> None:
    """Nothing is downloaded; the request carries the size the user gave."""
    await fire(hass, telemetry_topic(), telemetry_payload())

    response = await register(hass, file_type=".tar.gz", size=5120, sw_commit="4f1c2a9")

    assert response["size"] == 5120
    assert response["file_type"] == ".tar.gz"
    assert response["sha256"] is None
    assert response["sw_commit"] == "4f1c2a9"
    entity_id = update_entity(hass)
    assert entity_id is not None
    assert hass.states.get(entity_id).attributes["latest_version"] == "1.1.0"
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    await hass.async_block_till_done()
    request = [p for p in publishes(mqtt_mock) if p[0] == ota_topic() and p[1]]
    assert json.loads(request[-1][1]) == [
        {"n": "e", "v": 0},
        {"n": "i", "vs": PACKAGE_ID},
        {"n": "t", "vs": ".tar.gz"},
        {"n": "s", "v": 5120},
    ]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"file_type": ".tar"}, "size_required"),
        ({"file_type": ".zip", "size": 100}, "invalid_file_type"),
        ({"file_id": "a/b", "size": 100}, "invalid_package"),
    ],
)
async def test_register_package_mqtt_only_errors(
    hass: HomeAssistant, entry: MockConfigEntry, data: dict[str, Any], key: str
) -> None:
    """A missing size or an unknown type is a translated error; nothing is stored."""
    with pytest.raises(ServiceValidationError) as err:
        await register(hass, **data)

    assert err.value.translation_key == key
    assert entry.runtime_data.catalogue.packages == []


@pytest.mark.parametrize(
    "size", [12345.5, "12345.5", True, "many", float("inf"), float("nan"), "²", "9" * 5000]
)
async def test_register_package_refuses_a_size_that_is_no_whole_number(
    hass: HomeAssistant, entry: MockConfigEntry, size: Any
) -> None:
    """A fraction is not truncated: the device would be asked for a size its file does not have."""
    with pytest.raises(probatio.Invalid, match="whole number"):
        await register(hass, file_type=".tar", size=size)

    assert entry.runtime_data.catalogue.packages == []


@pytest.mark.parametrize("size", [12345, 12345.0, "12345"])
async def test_register_package_takes_a_whole_size_in_any_form(
    hass: HomeAssistant, entry: MockConfigEntry, size: Any
) -> None:
    """A whole number given as an integer, a float or text is the same size."""
    response = await register(hass, file_type=".tar", size=size)

    assert response["size"] == 12345


async def test_register_package_size_refused_with_console(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """A console entry measures the size itself: a given size is a translated error."""
    with pytest.raises(ServiceValidationError) as err:
        await register(hass, size=100)

    assert err.value.translation_key == "size_measured"
    assert setup_integration.runtime_data.catalogue.packages == []


async def test_options_flow_registers_package_by_size(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """The options flow of an MQTT-only entry asks for the type and size."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["settings", "add_package_mqtt"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_package_mqtt"}
    )
    assert result["step_id"] == "add_package_mqtt"
    assert "size" in {str(key) for key in result["data_schema"].schema}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"file_id": PACKAGE_ID, "file_type": ".tar", "size": 3987.0, "version": "1.1.0"},
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    package = entry.runtime_data.catalogue.by_file_id(PACKAGE_ID)
    assert package is not None
    assert (package.size, package.file_type, package.sha256) == (3987, ".tar", None)


async def test_options_flow_refuses_a_fractional_size_and_a_registered_file_id(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """Both are errors on their field; the form keeps what was typed and nothing changes."""
    await register(hass, file_type=".tar", size=100)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_package_mqtt"}
    )
    typed = {"file_id": "0f0f0f0f", "file_type": ".tar", "size": 3987.5, "version": "1.2.0"}

    result = await hass.config_entries.options.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"size": "size_not_whole"}

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**typed, "file_id": PACKAGE_ID, "size": 3987}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"file_id": "package_registered"}
    assert result["description_placeholders"] == {"file_id": PACKAGE_ID, "version": "1.1.0"}
    assert [p.size for p in entry.runtime_data.catalogue.packages] == [100]


async def test_diagnostics_hide_serial_names(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, entry: MockConfigEntry
) -> None:
    """Device names made of serials are redacted; the channels and mode are shown."""
    assert await async_setup_component(hass, "diagnostics", {})
    await fire(hass, telemetry_topic(), telemetry_payload())

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    assert SERIAL not in json.dumps(diagnostics)
    assert diagnostics["entry"]["data"][CONF_MODE] == MODE_MQTT
    assert diagnostics["entry"]["data"][CONF_CONTROL_CHANNEL] == CONTROL_CHANNEL
    assert diagnostics["devices"][DEVICE_ID]["name"] == "**REDACTED**"


async def test_package_watch_has_nothing_to_ask(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """Without a console there is no download check, even when asked directly."""
    await fire(hass, telemetry_topic(), telemetry_payload())
    await register(hass, size=3987)

    await PackageWatch(hass, entry).async_check()

    assert ir.async_get(hass).issues == {}


async def test_entry_without_mode_is_a_console_account(
    hass: HomeAssistant, setup_integration: MockConfigEntry
) -> None:
    """Entries made before MQTT-only mode have no `mode`: they load as console accounts."""
    assert CONF_MODE not in setup_integration.data
    assert setup_integration.runtime_data.client is not None
    assert list(setup_integration.runtime_data.coordinator.data) == [DEVICE_ID]
    assert update_entity(hass) == "update.sensor_1_firmware"


async def test_new_device_leaves_known_devices_states_alone(
    hass: HomeAssistant, entry: MockConfigEntry, freezer: Any
) -> None:
    """A device introducing itself writes no state of the devices already known.

    Each write of every known device's entities would make a fleet introducing itself cost the
    square of its size.
    """
    await fire(hass, telemetry_topic(), telemetry_payload())
    known = [
        entity.entity_id
        for entity in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        if DEVICE_ID in entity.unique_id
    ]
    assert len(known) == 3
    before = {entity_id: hass.states.get(entity_id).last_reported for entity_id in known}

    freezer.tick(60)
    await fire(hass, telemetry_topic(OTHER_DEVICE_ID), telemetry_payload())

    assert update_entity(hass, OTHER_DEVICE_ID) is not None
    assert {entity_id: hass.states.get(entity_id).last_reported for entity_id in known} == before


async def test_devices_written_while_new_ones_keep_coming(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """The first device found is on disk soon, though new devices keep introducing themselves."""
    key = f"{DOMAIN}.{entry.entry_id}.devices"
    for index in range(8):
        await fire(
            hass, telemetry_topic(f"{index:08x}-cccc-4ccc-8ccc-cccccccccccc"), telemetry_payload()
        )
        await tick(hass, freezer, timedelta(seconds=3))

    assert "00000000-cccc-4ccc-8ccc-cccccccccccc" in hass_storage[key]["data"]["devices"]


async def test_devices_introducing_themselves_cost_linear_state_writes(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """Each new device writes its own entities and the fleet counts, not every entity again.

    A project's devices introduce themselves one message at a time; rewriting every entity of
    the entry at each made 5000 devices cost some 50 million state writes.
    """
    writes = 0
    write = Entity.async_write_ha_state

    def counting(self: Entity) -> None:
        nonlocal writes
        writes += 1
        write(self)

    count = 150
    with patch.object(Entity, "async_write_ha_state", counting):
        for index in range(count):
            topic = telemetry_topic(f"{index:08x}-dddd-4ddd-8ddd-dddddddddddd")
            await fire(hass, topic, telemetry_payload())

    assert len(devices_of(entry)) == count
    assert writes < 10 * count


async def test_console_account_leaves_out_a_project_followed_over_mqtt(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    mock_console: AiohttpClientMocker,
    config_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An account added later does not follow the MQTT-only entry's devices a second time.

    Two trackers on one device would each take the other's retained request for a stale one,
    offer to clear it, and show two update entities for one device.
    """
    await fire(hass, telemetry_topic(), telemetry_payload())
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()

    assert config_entry.runtime_data.coordinator.data == {}
    assert "an MQTT-only entry follows their project" in caplog.text
    registry = dr.async_get(hass)
    assert registry.async_get_device_by_identifier((DOMAIN, DEVICE_ID), entry.entry_id)
    assert not registry.async_get_device_by_identifier((DOMAIN, DEVICE_ID), config_entry.entry_id)
    await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    mock_console.mock_calls.clear()  # The fixture checks the MQTT-only entry asked nothing.


async def test_removed_device_takes_its_request_off_the_broker(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    mqtt_mock: Any,
    entry: MockConfigEntry,
) -> None:
    """Removing a device with an update waiting cancels it and clears its retained request."""
    assert await async_setup_component(hass, "config", {})
    await fire(hass, telemetry_topic(), telemetry_payload())
    await register(hass, file_type=".tar", size=5120)
    entity_id = update_entity(hass)
    assert entity_id is not None
    await hass.services.async_call("update", "install", {"entity_id": entity_id}, blocking=True)
    device = registry_device(hass)
    assert device is not None
    client = await hass_ws_client(hass)

    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": entry.entry_id,
            "device_id": device.id,
        }
    )
    response = await client.receive_json()
    await hass.async_block_till_done()

    assert response["success"]
    assert publishes(mqtt_mock)[-1][:2] == (ota_topic(), "")
    job = entry.runtime_data.tracker.job(DEVICE_ID)
    assert job is not None
    assert job.state == "cancelled"

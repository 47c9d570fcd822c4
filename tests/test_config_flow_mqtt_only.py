"""The MQTT-only way in: a project by its channels, found by MQTT discovery, reconfigured."""

from collections.abc import Generator
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

from homeassistant.config_entries import (
    SOURCE_IGNORE,
    SOURCE_MQTT,
    SOURCE_USER,
    ConfigEntryState,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.discovery_flow import DiscoveryKey
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.insighio_ota.const import (
    CONF_CONTROL_CHANNEL,
    CONF_DATA_CHANNEL,
    CONF_MODE,
    DOMAIN,
    MODE_MQTT,
)

from .conftest import CONTROL_CHANNEL, DATA_CHANNEL, DEVICE_ID, OTHER_DEVICE_ID
from .helpers import telemetry_payload

OTHER_DATA = "d1d1d1d1-0000-4000-8000-000000000011"
OTHER_CONTROL = "c1c1c1c1-0000-4000-8000-000000000012"
CHANNELS = {CONF_DATA_CHANNEL: DATA_CHANNEL, CONF_CONTROL_CHANNEL: CONTROL_CHANNEL}
CHANNELS_CONTROL = {CONF_CONTROL_CHANNEL: CONTROL_CHANNEL}


@pytest.fixture(autouse=True)
def mqtt_entry(hass: HomeAssistant) -> None:
    """Make HA's MQTT integration look configured (the flow only checks that it exists)."""
    MockConfigEntry(
        domain="mqtt", data={"broker": "localhost"}, state=ConfigEntryState.LOADED
    ).add_to_hass(hass)


@pytest.fixture(autouse=True)
def mock_setup_entry() -> Generator[AsyncMock]:
    """Keep created entries from loading: these tests are about the flow only."""
    with patch(
        "custom_components.insighio_ota.async_setup_entry", return_value=True
    ) as setup_entry:
        yield setup_entry


def mqtt_only_entry(data: str = DATA_CHANNEL, control: str = CONTROL_CHANNEL) -> MockConfigEntry:
    """Return an MQTT-only entry of a project."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"insigh.io project {data[:8]}",
        unique_id=data,
        data={CONF_MODE: MODE_MQTT, CONF_DATA_CHANNEL: data, CONF_CONTROL_CHANNEL: control},
    )


def loaded_console_entry(
    hass: HomeAssistant, data: str = DATA_CHANNEL, control: str = CONTROL_CHANNEL
) -> MockConfigEntry:
    """Add a loaded console entry whose listed devices are in a project with these channels."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="user@example.test",
        unique_id="https://console.example.test|user@example.test",
        data={"console_url": "https://console.example.test", "email": "user@example.test"},
        state=ConfigEntryState.LOADED,
    )
    entry.add_to_hass(hass)
    entry.runtime_data = MagicMock()
    entry.runtime_data.coordinator.data_channels = {data}
    entry.runtime_data.coordinator.control_channels = {control}
    return entry


async def open_mqtt_only_form(hass: HomeAssistant) -> str:
    """Choose "MQTT only" in the user menu; return the flow id."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "mqtt_only"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "mqtt_only"
    return result["flow_id"]


def discovery(
    device_id: str = DEVICE_ID, payload: str | bytes | None = None, channel: str = DATA_CHANNEL
) -> MqttServiceInfo:
    """Return what HA's MQTT discovery hands over for a telemetry message."""
    return MqttServiceInfo(
        topic=f"channels/{channel}/messages/{device_id}",
        payload=telemetry_payload() if payload is None else payload,
        qos=0,
        retain=False,
        subscribed_topic="channels/+/messages/+",
        timestamp=0,
    )


async def discover(hass: HomeAssistant, info: MqttServiceInfo) -> Any:
    """Start a discovery flow as HA's MQTT integration does (keyed by the topic)."""
    key = DiscoveryKey(domain="mqtt", key=info.topic, version=1)
    return await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT, "discovery_key": key}, data=info
    )


async def test_mqtt_only_entry_from_the_menu(hass: HomeAssistant) -> None:
    """Channels as pasted (any case, spaces) make an entry keyed by the data channel."""
    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id,
        {
            CONF_DATA_CHANNEL: f"  {DATA_CHANNEL.upper()} ",
            CONF_CONTROL_CHANNEL: CONTROL_CHANNEL,
        },
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"insigh.io project {DATA_CHANNEL[:8]}"
    assert result["data"] == {CONF_MODE: MODE_MQTT, **CHANNELS}
    assert result["result"].unique_id == DATA_CHANNEL


@pytest.mark.parametrize(
    ("user_input", "errors"),
    [
        (
            {CONF_DATA_CHANNEL: "my-project", CONF_CONTROL_CHANNEL: "1234"},
            {CONF_DATA_CHANNEL: "invalid_channel", CONF_CONTROL_CHANNEL: "invalid_channel"},
        ),
        (
            {CONF_DATA_CHANNEL: DATA_CHANNEL, CONF_CONTROL_CHANNEL: f"{CONTROL_CHANNEL}/#"},
            {CONF_CONTROL_CHANNEL: "invalid_channel"},
        ),
        (
            {CONF_DATA_CHANNEL: DATA_CHANNEL, CONF_CONTROL_CHANNEL: DATA_CHANNEL},
            {CONF_CONTROL_CHANNEL: "same_channel"},
        ),
    ],
)
async def test_mqtt_only_channel_errors(
    hass: HomeAssistant, user_input: dict[str, str], errors: dict[str, str]
) -> None:
    """A channel that is no console id, or one id for both, shows the form again; then it works."""
    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, user_input)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    result = await hass.config_entries.flow.async_configure(flow_id, CHANNELS)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_wins_over_discovery_of_same_project(hass: HomeAssistant) -> None:
    """Adding the project by hand while its discovery waits creates it and ends the discovery."""
    discovered = await discover(hass, discovery())
    assert discovered["type"] is FlowResultType.FORM

    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, CHANNELS)
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert hass.config_entries.flow.async_progress_by_handler(DOMAIN) == []


async def test_mqtt_only_project_already_followed_by_mqtt_entry(hass: HomeAssistant) -> None:
    """The same data channel cannot be added twice: an error on both fields, nothing lost."""
    mqtt_only_entry().add_to_hass(hass)
    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, CHANNELS)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        CONF_DATA_CHANNEL: "channel_followed",
        CONF_CONTROL_CHANNEL: "channel_followed",
    }


async def test_mqtt_only_takes_over_an_ignored_project(hass: HomeAssistant) -> None:
    """A project the user once ignored in discovery can still be added by hand."""
    MockConfigEntry(domain=DOMAIN, source=SOURCE_IGNORE, unique_id=DATA_CHANNEL).add_to_hass(hass)
    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, CHANNELS)

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == DATA_CHANNEL


@pytest.mark.parametrize(
    ("channels", "errors"),
    [
        (
            {CONF_DATA_CHANNEL: DATA_CHANNEL, CONF_CONTROL_CHANNEL: OTHER_CONTROL},
            {CONF_DATA_CHANNEL: "channel_followed"},
        ),
        (
            {CONF_DATA_CHANNEL: OTHER_DATA, CONF_CONTROL_CHANNEL: CONTROL_CHANNEL},
            {CONF_CONTROL_CHANNEL: "channel_followed"},
        ),
    ],
)
async def test_mqtt_only_channel_followed_by_console_entry(
    hass: HomeAssistant, channels: dict[str, str], errors: dict[str, str]
) -> None:
    """A channel a console entry follows is marked in the form, which the user can correct."""
    loaded_console_entry(hass)
    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, channels)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_DATA_CHANNEL: OTHER_DATA, CONF_CONTROL_CHANNEL: OTHER_CONTROL}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_console_entry_of_other_projects_or_not_loaded_does_not_block(
    hass: HomeAssistant,
) -> None:
    """Only a loaded console entry knows its projects; another project's entry does not count."""
    loaded_console_entry(hass, OTHER_DATA, OTHER_CONTROL)
    MockConfigEntry(
        domain=DOMAIN, unique_id="https://x.test|b@x.test", data={"email": "b@x.test"}
    ).add_to_hass(hass)
    flow_id = await open_mqtt_only_form(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, CHANNELS)

    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_discovery_shows_data_channel_and_asks_for_control_channel(
    hass: HomeAssistant,
) -> None:
    """Telemetry of an unknown project starts a flow; the confirm step creates the entry."""
    result = await discover(hass, discovery())

    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "mqtt_confirm"
    assert result["description_placeholders"] == {"data_channel": DATA_CHANNEL}
    assert [str(key) for key in result["data_schema"].schema] == [CONF_CONTROL_CHANNEL]
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert flows[0]["context"]["title_placeholders"] == {"project": DATA_CHANNEL[:8]}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONTROL_CHANNEL: "not a channel"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CONTROL_CHANNEL: "invalid_channel"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONTROL_CHANNEL: DATA_CHANNEL}
    )
    assert result["errors"] == {CONF_CONTROL_CHANNEL: "same_channel"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONTROL_CHANNEL: CONTROL_CHANNEL.upper()}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_MODE: MODE_MQTT, **CHANNELS}
    assert result["result"].unique_id == DATA_CHANNEL


async def test_discovery_confirm_with_a_followed_control_channel(hass: HomeAssistant) -> None:
    """A control channel another entry follows is a form error, not the end of the discovery."""
    mqtt_only_entry(OTHER_DATA, OTHER_CONTROL).add_to_hass(hass)
    result = await discover(hass, discovery())

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CONTROL_CHANNEL: OTHER_CONTROL}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CONTROL_CHANNEL: "channel_followed"}

    result = await hass.config_entries.flow.async_configure(result["flow_id"], CHANNELS_CONTROL)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_discovery_confirm_after_the_project_was_added_meanwhile(
    hass: HomeAssistant,
) -> None:
    """A console entry that starts listing the project while the form is open ends the flow."""
    result = await discover(hass, discovery())
    loaded_console_entry(hass)

    result = await hass.config_entries.flow.async_configure(result["flow_id"], CHANNELS_CONTROL)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_two_devices_of_one_project_give_one_flow(hass: HomeAssistant) -> None:
    """A second device of the same project does not start a second flow."""
    first = await discover(hass, discovery(DEVICE_ID))
    second = await discover(hass, discovery(OTHER_DEVICE_ID))

    assert first["type"] is FlowResultType.FORM
    assert second["type"] is FlowResultType.ABORT
    assert second["reason"] == "already_in_progress"
    assert len(hass.config_entries.flow.async_progress_by_handler(DOMAIN)) == 1


@pytest.mark.parametrize(
    "info",
    [
        # Not insigh.io telemetry: no base name, another base name, not JSON, not UTF-8.
        discovery(payload='[{"n":"temperature","v":21.5}]'),
        discovery(payload='[{"n":"t","bn":"sensor-","v":1}]'),
        discovery(payload='{"temperature": 21.5}'),
        discovery(payload=b"\xff\xfe"),
        discovery(payload=""),
        # Ids that are no console ids.
        discovery(device_id="kitchen"),
        discovery(channel="living-room"),
    ],
)
async def test_discovery_of_other_traffic_aborts(
    hass: HomeAssistant, info: MqttServiceInfo
) -> None:
    """Other traffic on matching topics aborts with its own reason (discovery keeps running)."""
    result = await discover(hass, info)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "not_insighio_device"


async def test_discovery_of_followed_project_aborts(hass: HomeAssistant) -> None:
    """Telemetry of a project an MQTT-only entry follows is already configured.

    The entry is left alone: telemetry arrives at every wake of every device.
    """
    entry = mqtt_only_entry()
    entry.add_to_hass(hass)

    result = await discover(hass, discovery())
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert dict(entry.discovery_keys) == {}


async def test_discovery_of_ignored_project_aborts(hass: HomeAssistant) -> None:
    """A project the user chose to ignore is not offered again."""
    MockConfigEntry(domain=DOMAIN, source=SOURCE_IGNORE, unique_id=DATA_CHANNEL).add_to_hass(hass)

    result = await discover(hass, discovery())

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_discovery_of_console_project_aborts(hass: HomeAssistant) -> None:
    """Telemetry of a project a console entry follows is already configured."""
    loaded_console_entry(hass)

    result = await discover(hass, discovery())

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reconfigure_changes_channels(
    hass: HomeAssistant, mock_setup_entry: AsyncMock
) -> None:
    """The form starts from the current channels; new ones reload the entry under a new id."""
    entry = mqtt_only_entry()
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)

    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure_channels"
    suggested = {
        str(key): key.description["suggested_value"] for key in result["data_schema"].schema
    }
    assert suggested == CHANNELS

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DATA_CHANNEL: "x", CONF_CONTROL_CHANNEL: CONTROL_CHANNEL}
    )
    assert result["errors"] == {CONF_DATA_CHANNEL: "invalid_channel"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DATA_CHANNEL: OTHER_DATA, CONF_CONTROL_CHANNEL: OTHER_CONTROL}
    )
    await hass.async_block_till_done()

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "channels_changed"
    assert entry.unique_id == OTHER_DATA
    assert entry.title == f"insigh.io project {OTHER_DATA[:8]}"
    assert entry.data == {
        CONF_MODE: MODE_MQTT,
        CONF_DATA_CHANNEL: OTHER_DATA,
        CONF_CONTROL_CHANNEL: OTHER_CONTROL,
    }


async def test_reconfigure_control_channel_only(hass: HomeAssistant) -> None:
    """Fixing the control channel keeps the entry's id (its data channel)."""
    entry = mqtt_only_entry(control=OTHER_CONTROL)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], CHANNELS)

    assert result["reason"] == "channels_changed"
    assert entry.unique_id == DATA_CHANNEL
    assert entry.data[CONF_CONTROL_CHANNEL] == CONTROL_CHANNEL


async def reconfigure(hass: HomeAssistant, entry: MockConfigEntry, data: str, control: str) -> Any:
    """Open the entry's reconfigure form and submit these channels; return the result."""
    result = await entry.start_reconfigure_flow(hass)
    return await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_DATA_CHANNEL: data, CONF_CONTROL_CHANNEL: control}
    )


@pytest.mark.parametrize(
    ("data", "control", "field"),
    [
        # The data channel of another MQTT-only entry...
        (OTHER_DATA, CONTROL_CHANNEL, CONF_DATA_CHANNEL),
        # ...or its control channel.
        (DATA_CHANNEL, OTHER_CONTROL, CONF_CONTROL_CHANNEL),
    ],
)
async def test_reconfigure_to_a_followed_channel(
    hass: HomeAssistant, data: str, control: str, field: str
) -> None:
    """Another entry's channel is a form error on its field; the entry keeps its own channels."""
    entry = mqtt_only_entry()
    entry.add_to_hass(hass)
    mqtt_only_entry(OTHER_DATA, OTHER_CONTROL).add_to_hass(hass)

    result = await reconfigure(hass, entry, data, control)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: "channel_followed"}
    assert entry.data == mqtt_only_entry().data


async def test_reconfigure_to_an_ignored_project_aborts(hass: HomeAssistant) -> None:
    """A project ignored in discovery keeps its ignore entry: HA's own rule for reconfigure."""
    entry = mqtt_only_entry()
    entry.add_to_hass(hass)
    MockConfigEntry(domain=DOMAIN, source=SOURCE_IGNORE, unique_id=OTHER_DATA).add_to_hass(hass)

    result = await reconfigure(hass, entry, OTHER_DATA, OTHER_CONTROL)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_DATA_CHANNEL] == DATA_CHANNEL

"""The devices of a config entry: the console's device list, or the devices heard on MQTT.

A console entry polls the console's device list slowly; everything about an OTA itself arrives
over MQTT. An MQTT-only entry has no console account: its devices are the ones that introduce
themselves on the project's channels (telemetry or `/stat`), remembered in a `Store`.
"""

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
import uuid

from homeassistant.components.mqtt import ReceiveMessage
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.storage import Store
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .console import ConsoleAuthenticationError, ConsoleClient, ConsoleDevice, ConsoleError
from .const import (
    CONF_CONTROL_CHANNEL,
    CONF_DATA_CHANNEL,
    CONF_MODE,
    DEVICE_LIST_INTERVAL,
    DOMAIN,
    LOGGER,
    MANUFACTURER,
    MAX_DISCOVERED_DEVICES,
    MODE_CONSOLE,
    MODE_MQTT,
)
from .protocol import (
    ControlKind,
    ProtocolError,
    parse_control_topic,
    parse_stat,
    parse_telemetry_serial,
    parse_telemetry_topic,
)

if TYPE_CHECKING:
    from .catalogue import PackageCatalogue
    from .rollout import RolloutManager
    from .tracker import OtaTracker

DEVICES_STORAGE_VERSION: Final = 1
# Devices tend to introduce themselves in bursts (every device of a project wakes after a
# restart of the bridge): one write covers a burst.
DEVICES_SAVE_DELAY: Final = 10
MAX_SERIAL_LENGTH: Final = 32


@dataclass(slots=True)
class InsighioOtaRuntimeData:
    """What a loaded config entry holds; `client` is None for an MQTT-only entry."""

    client: ConsoleClient | None
    coordinator: InsighioOtaCoordinator
    catalogue: PackageCatalogue
    tracker: OtaTracker
    rollouts: RolloutManager


type InsighioOtaConfigEntry = ConfigEntry[InsighioOtaRuntimeData]


def console_id(value: str) -> str:
    """Return a console id (device or channel) in canonical form; raise `ValueError` if none.

    The console makes every id a UUID, written in lower case with dashes; topics carry it so.
    """
    if str(uuid.UUID(value)) != value:
        raise ValueError(f"not a console id: {value!r}")
    return value


def is_mqtt_only(entry: ConfigEntry) -> bool:
    """Return True for an MQTT-only entry; entries without a mode are console accounts."""
    mode: str = entry.data.get(CONF_MODE, MODE_CONSOLE)
    return mode == MODE_MQTT


class InsighioOtaCoordinator(DataUpdateCoordinator[dict[str, ConsoleDevice]]):
    """The devices of a config entry by device id, and the channels to follow for them."""

    config_entry: InsighioOtaConfigEntry

    @property
    @abstractmethod
    def control_channels(self) -> set[str]:
        """Return the control channels to follow."""

    @property
    @abstractmethod
    def data_channels(self) -> set[str]:
        """Return the data (telemetry) channels to follow."""

    def _remove_stale_devices(self, kept: set[str], why: str) -> None:
        """Take the entry's devices not in `kept` off it (and their entities), saying `why`.

        The entry's own service device (identified by the entry id) is never stale.
        """
        registry = dr.async_get(self.hass)
        entry_id = self.config_entry.entry_id
        for device in dr.async_entries_for_config_entry(registry, entry_id):
            ids = {value for domain, value in device.identifiers if domain == DOMAIN}
            if ids and not ids & {*kept, entry_id}:
                LOGGER.info("Removing device %s: %s", device.name, why)
                registry.async_remove_device(device.id)


class ConsoleDeviceCoordinator(InsighioOtaCoordinator):
    """Keeps the console's devices of the account, by device id."""

    def __init__(
        self, hass: HomeAssistant, entry: InsighioOtaConfigEntry, client: ConsoleClient
    ) -> None:
        """Poll the console's device list with the stored API key."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=DOMAIN,
            update_interval=DEVICE_LIST_INTERVAL,
        )
        self.client = client
        self._overlap_logged = False

    async def _async_update_data(self) -> dict[str, ConsoleDevice]:
        """Fetch the device list; a revoked key asks the user to sign in again."""
        try:
            devices = await self.client.list_devices()
        except ConsoleAuthenticationError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="invalid_auth"
            ) from err
        except ConsoleError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="console_unavailable",
                translation_placeholders={"error": str(err)},
            ) from err
        followed = self._projects_followed_over_mqtt()
        listed = {
            device.device_id: device
            for device in devices
            if not {device.data_channel, device.control_channel} & followed
        }
        if (left_out := len(devices) - len(listed)) and not self._overlap_logged:
            self._overlap_logged = True
            LOGGER.warning(
                "Leaving out %s devices of this account: an MQTT-only entry follows their "
                "project, and two entries following one device would clear each other's "
                "requests. Remove that entry to follow them with the account",
                left_out,
            )
        # A device the console lists but left out (no key or channel) is still there: kept.
        self._remove_stale_devices(
            {*listed, *self.client.skipped_device_ids}, "the console no longer lists it"
        )
        return listed

    def _projects_followed_over_mqtt(self) -> set[str]:
        """Return the channels the MQTT-only entries follow, whether loaded or not."""
        return {
            entry.data[key]
            for entry in self.hass.config_entries.async_entries(DOMAIN)
            if is_mqtt_only(entry)
            for key in (CONF_DATA_CHANNEL, CONF_CONTROL_CHANNEL)
        }

    @property
    def control_channels(self) -> set[str]:
        """Return the control channels of the known devices."""
        return {device.control_channel for device in (self.data or {}).values()}

    @property
    def data_channels(self) -> set[str]:
        """Return the data (telemetry) channels of the known devices."""
        return {device.data_channel for device in (self.data or {}).values()}


class MqttDeviceCoordinator(InsighioOtaCoordinator):
    """The devices of one console project that introduced themselves on HA's broker.

    Nothing is polled: the list grows when a device id is first seen in valid telemetry on the
    data channel or a valid `/stat` on the control channel (the tracker hands every such message
    to `async_device_seen` before it reads it), and shrinks when the user removes a device. OTA
    traffic never adds a device: anyone can publish on `/ota`, and a report is no proof that a
    device exists. The list lives in a `Store`, so the devices are back at once after a restart.
    """

    def __init__(self, hass: HomeAssistant, entry: InsighioOtaConfigEntry) -> None:
        """Follow the project whose channels the entry names."""
        super().__init__(hass, LOGGER, config_entry=entry, name=DOMAIN, update_interval=None)
        self.data_channel: str = entry.data[CONF_DATA_CHANNEL]
        self.control_channel: str = entry.data[CONF_CONTROL_CHANNEL]
        self._store: Store[dict[str, Any]] = Store(
            hass, DEVICES_STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}.devices"
        )
        self._cap_logged = False
        self._loaded = False
        self._save_pending = False

    async def _async_update_data(self) -> dict[str, ConsoleDevice]:
        """Return the devices seen so far: read from storage the first time, kept afterwards."""
        if self._loaded:
            return self.data
        self._loaded = True
        stored = await self._store.async_load() or {}
        devices = stored.get("devices") if isinstance(stored, dict) else None
        known: dict[str, ConsoleDevice] = {}
        if isinstance(stored, dict) and stored.get(CONF_DATA_CHANNEL) != self.data_channel:
            # The entry now follows another project (reconfigured): its devices are not ours,
            # and would otherwise stay in HA with unavailable entities.
            devices = None
            if stored:
                self._remove_stale_devices(set(), "the entry now follows another project")
        for device_id, record in (devices if isinstance(devices, dict) else {}).items():
            name = record.get("name") if isinstance(record, dict) else None
            if isinstance(name, str) and len(known) < MAX_DISCOVERED_DEVICES:
                known[device_id] = self._device(device_id, name)
        return known

    @property
    def control_channels(self) -> set[str]:
        """Return the project's control channel: followed even before any device is known."""
        return {self.control_channel}

    @property
    def data_channels(self) -> set[str]:
        """Return the project's data channel: followed even before any device is known."""
        return {self.data_channel}

    @callback
    def async_device_seen(self, message: ReceiveMessage) -> None:
        """Add the device a telemetry or `/stat` message comes from, when it is new and valid."""
        found = self._introduced_device(message)
        if found is None:
            return
        device_id, serial = found
        if len(self.data) >= MAX_DISCOVERED_DEVICES:
            if not self._cap_logged:
                self._cap_logged = True
                LOGGER.warning(
                    "Not adding device %s: this entry already follows %s devices, the most it "
                    "takes; remove devices that are gone to make room",
                    device_id,
                    MAX_DISCOVERED_DEVICES,
                )
            return
        name = f"{MANUFACTURER} {serial or device_id[:8]}"
        LOGGER.info("Found device %s (%s) on the project's channels", name, device_id)
        self.async_set_updated_data({**self.data, device_id: self._device(device_id, name)})
        if not self._save_pending:
            # Asked once per write: HA moves a pending write to the latest time asked for, and
            # a steady trickle of new devices would otherwise keep it from ever happening.
            self._save_pending = True
            self._store.async_delay_save(self._data_to_save, DEVICES_SAVE_DELAY)

    def _introduced_device(self, message: ReceiveMessage) -> tuple[str, str | None] | None:
        """Return the id and serial of a new device a message introduces, else None.

        Known devices return at once, before any payload is parsed: this runs for every
        telemetry message of the project.
        """
        topic = message.topic
        try:
            if topic.startswith(f"channels/{self.data_channel}/"):
                device_id = parse_telemetry_topic(topic)
                if device_id in self.data:
                    return None
                serial: str | None = parse_telemetry_serial(message.payload)
            else:
                control = parse_control_topic(topic)
                device_id = control.device_id
                if (
                    control.kind is not ControlKind.STAT
                    or control.control_channel != self.control_channel
                    or device_id in self.data
                ):
                    return None
                serial = parse_stat(message.payload).serial
            console_id(device_id)
        except ProtocolError, ValueError:
            return None
        # A serial names the device only when it looks like one (the firmware sends its MAC).
        if serial is not None and not (serial.isalnum() and len(serial) <= MAX_SERIAL_LENGTH):
            serial = None
        return device_id, serial

    async def async_forget(self, device_id: str) -> None:
        """Forget a device the user removed; it comes back when it reports again."""
        if device_id not in self.data:
            return
        self.async_set_updated_data({k: v for k, v in self.data.items() if k != device_id})
        await self._async_save()

    async def async_unload(self) -> None:
        """Write a pending change now rather than after the delay."""
        await self._async_save()

    def _device(self, device_id: str, name: str) -> ConsoleDevice:
        # No key: HA never downloads for an MQTT-only entry.
        return ConsoleDevice(
            device_id=device_id,
            name=name,
            key="",
            data_channel=self.data_channel,
            control_channel=self.control_channel,
        )

    def _data_to_save(self) -> dict[str, Any]:
        # Called when the write happens: from now on a change needs a write of its own.
        self._save_pending = False
        return {
            CONF_DATA_CHANNEL: self.data_channel,
            "devices": {device_id: {"name": d.name} for device_id, d in (self.data or {}).items()},
        }

    async def _async_save(self) -> None:
        await self._store.async_save(self._data_to_save())

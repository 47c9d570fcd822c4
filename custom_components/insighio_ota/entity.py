"""The base of every entity of a console device."""

from collections.abc import Callable

from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, MANUFACTURER
from .coordinator import InsighioOtaConfigEntry, InsighioOtaCoordinator
from .tracker import signal_device_updated


class InsighioOtaEntity(CoordinatorEntity[InsighioOtaCoordinator]):
    """An entity of one console device, refreshed by the console poll and by its OTA reports."""

    _attr_has_entity_name = True

    def __init__(self, entry: InsighioOtaConfigEntry, device_id: str) -> None:
        """Describe the device this entity belongs to."""
        super().__init__(entry.runtime_data.coordinator)
        self.runtime_data = entry.runtime_data
        self.device_id = device_id
        device = self.coordinator.data[device_id]
        stat = self.runtime_data.tracker.stat(device_id)
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, device_id)},
            name=device.name,
            manufacturer=MANUFACTURER,
            model=stat.hw_version if stat else None,
            hw_version=stat.hw_version if stat else None,
            sw_version=self.runtime_data.tracker.installed_version(device_id),
            serial_number=stat.serial if stat else None,
        )

    @property
    def available(self) -> bool:
        """Return False only once the console no longer lists the device.

        A failed console poll does not make the device unavailable: the device list changes
        rarely and everything about an OTA arrives over MQTT, so the last known list is still
        right and an update can still be installed. The coordinator keeps that list when a poll
        fails and logs the outage once, and its recovery once.
        """
        return self.device_id in self.coordinator.data

    @callback
    def _handle_coordinator_update(self) -> None:
        """Write the state only when the device list changed whether the device is available.

        Nothing else of a device's entity comes from the list: reports, /stat and packages
        arrive through the tracker's signal. Writing every entity at every change of the list
        made the devices of a project introducing themselves one by one (an MQTT-only entry's
        first start, or a flood of made-up device ids) cost the square of the fleet.
        """
        shown = self.hass.states.get(self.entity_id)
        if shown is None or (shown.state == STATE_UNAVAILABLE) == self.available:
            self.async_write_ha_state()

    async def async_added_to_hass(self) -> None:
        """Follow the device's OTA reports."""
        await super().async_added_to_hass()
        self.async_on_remove(
            async_dispatcher_connect(
                self.hass,
                signal_device_updated(self.coordinator.config_entry.entry_id, self.device_id),
                self.async_write_ha_state,
            )
        )


@callback
def async_add_entities_per_device(
    entry: InsighioOtaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    entity_for: Callable[[InsighioOtaConfigEntry, str], Entity],
) -> None:
    """Add an entity for each listed device now, and for every device the console lists later."""
    coordinator = entry.runtime_data.coordinator
    known: set[str] = set()

    @callback
    def _add_new_devices() -> None:
        # A device the console stopped listing was removed with its entities: forget it, so
        # that it gets new ones should it be listed again.
        known.intersection_update(coordinator.data)
        new = coordinator.data.keys() - known
        known.update(new)
        async_add_entities(entity_for(entry, device_id) for device_id in sorted(new))

    _add_new_devices()
    entry.async_on_unload(coordinator.async_add_listener(_add_new_devices))

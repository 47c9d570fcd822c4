"""The base of every entity of a console device."""

from collections.abc import Callable

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, LARGE_FLEET_DEVICES, MANUFACTURER
from .coordinator import InsighioOtaConfigEntry, InsighioOtaCoordinator
from .tracker import signal_device_updated


class InsighioOtaEntity(CoordinatorEntity[InsighioOtaCoordinator]):
    """An entity of one console device, refreshed by the console poll and by its OTA reports."""

    _attr_has_entity_name = True
    # Entities that add to what the update entity shows; in a large fleet they start disabled.
    _secondary_in_large_fleets = False
    # Whether the state changes with the device's OTA facts (the tracker's signal).
    _follows_device_updates = True
    # Whether the device was listed when the state was last written (see `available`).
    _listed = True

    def __init__(self, entry: InsighioOtaConfigEntry, device_id: str) -> None:
        """Describe the device this entity belongs to."""
        super().__init__(entry.runtime_data.coordinator)
        self.runtime_data = entry.runtime_data
        self.device_id = device_id
        if self._secondary_in_large_fleets and len(self.coordinator.data) > LARGE_FLEET_DEVICES:
            # HA's cap on enabled entities per entry would otherwise cost devices their update
            # entity; the user can still enable the ones they want.
            self._attr_entity_registry_enabled_default = False
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

    async def async_added_to_hass(self) -> None:
        """Follow the device's OTA reports."""
        await super().async_added_to_hass()
        self._listed = self.available
        if self._follows_device_updates:
            self.async_on_remove(
                async_dispatcher_connect(
                    self.hass,
                    signal_device_updated(self.coordinator.config_entry.entry_id, self.device_id),
                    self.async_write_ha_state,
                )
            )

    @callback
    def _handle_coordinator_update(self) -> None:
        """Write the state only when the device's availability changed.

        Nothing else an entity shows comes from the device list. Writing every entity at every
        poll, or at every device an MQTT-only entry discovers, would cost a fleet of N devices
        3N state writes each time, N² in all while an MQTT-only fleet introduces itself.
        """
        if (listed := self.available) != self._listed:
            self._listed = listed
            self.async_write_ha_state()


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

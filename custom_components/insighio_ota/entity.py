"""The base of every entity of a console device."""

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
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
        """Return False once the console no longer lists the device."""
        return super().available and self.device_id in self.coordinator.data

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

"""One firmware `update` entity per device, backed by the registered console packages."""

from typing import Any

from homeassistant.components.update import (
    UpdateDeviceClass,
    UpdateEntity,
    UpdateEntityFeature,
)
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .catalogue import Package
from .const import DOMAIN
from .coordinator import InsighioOtaConfigEntry
from .entity import InsighioOtaEntity, async_add_entities_per_device

# Installs are serialised by the tracker per device; requests to different devices are
# independent MQTT publishes, so HA need not limit them.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: InsighioOtaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add an update entity for each device, and for every device the console lists later."""
    async_add_entities_per_device(entry, async_add_entities, InsighioOtaUpdate)


class InsighioOtaUpdate(InsighioOtaEntity, UpdateEntity):
    """The application software of a device, updated over the air."""

    _attr_device_class = UpdateDeviceClass.FIRMWARE
    _attr_supported_features = (
        UpdateEntityFeature.INSTALL
        | UpdateEntityFeature.PROGRESS
        | UpdateEntityFeature.SPECIFIC_VERSION
        | UpdateEntityFeature.RELEASE_NOTES
    )
    _attr_title = "insighioNode"
    _attr_translation_key = "firmware"

    def __init__(self, entry: InsighioOtaConfigEntry, device_id: str) -> None:
        """Create the entity of one device."""
        super().__init__(entry, device_id)
        self._attr_unique_id = f"{device_id}_firmware"

    @property
    def installed_version(self) -> str | None:
        """Return the confirmed package's label, else the software /stat reported."""
        return self.runtime_data.tracker.installed_version(self.device_id)

    @property
    def _hw_version(self) -> str | None:
        """Return the hardware family of the device's last /stat, None before one."""
        stat = self.runtime_data.tracker.stat(self.device_id)
        return stat.hw_version if stat else None

    def _latest(self) -> Package | None:
        """Return the newest package compatible with the device's hardware."""
        return self.runtime_data.catalogue.latest_for(self._hw_version)

    @property
    def latest_version(self) -> str | None:
        """Return the label of the newest package compatible with the device's hardware."""
        latest = self._latest()
        return latest.version if latest else None

    @property
    def in_progress(self) -> bool:
        """Return True from the request until the device has applied and rebooted."""
        return self.runtime_data.tracker.in_progress(self.device_id)

    @property
    def release_summary(self) -> str | None:
        """Return the first line of the latest compatible package's release notes."""
        latest = self._latest()
        if latest is None or not (notes := (latest.release_notes or "").strip()):
            return None
        return notes.splitlines()[0].strip()[:255]

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the device's last OTA job, for automations and the UI."""
        job = self.runtime_data.tracker.job(self.device_id)
        if job is None:
            return {}
        return {
            "ota_state": job.state.value,
            "ota_file_id": job.file_id,
            "ota_version": job.version,
            "ota_reason": job.reason,
            "ota_attempts": job.attempts,
            "ota_deadline": job.deadline,
            "ota_unverified": job.unverified,
            "ota_request_gone": job.request_gone,
            "ota_held_until": job.held_until,
        }

    def version_is_newer(self, latest_version: str, installed_version: str) -> bool:
        """Compare by registration order: labels are free text, not semantic versions."""
        catalogue = self.runtime_data.catalogue
        latest = catalogue.order_of(latest_version)
        installed = catalogue.order_of(installed_version)
        if latest is None:
            return False
        if installed is None:
            # Software we cannot place in the catalogue: offer the latest package, unless the
            # device runs a confirmed package that was removed since (it may be newer).
            return not self.runtime_data.tracker.has_confirmed_package(self.device_id)
        return latest > installed

    async def async_install(self, version: str | None, backup: bool, **kwargs: Any) -> None:
        """Publish the OTA request; the device picks it up at its next wake."""
        catalogue = self.runtime_data.catalogue
        package = catalogue.by_version(version) if version is not None else self._latest()
        if package is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unknown_version",
                translation_placeholders={"version": str(version)},
            )
        await self.runtime_data.tracker.async_request(self.device_id, package)

    async def async_release_notes(self) -> str | None:
        """Return the latest compatible package's release notes (markdown)."""
        latest = self._latest()
        return latest.release_notes if latest else None

    async def async_added_to_hass(self) -> None:
        """Also follow new package registrations."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.runtime_data.catalogue.async_add_listener(self.async_write_ha_state)
        )

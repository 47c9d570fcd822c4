"""The console's device list, polled slowly; everything about an OTA itself arrives over MQTT."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .console import ConsoleAuthenticationError, ConsoleClient, ConsoleDevice, ConsoleError
from .const import DEVICE_LIST_INTERVAL, DOMAIN, LOGGER

if TYPE_CHECKING:
    from .catalogue import PackageCatalogue
    from .rollout import RolloutManager
    from .tracker import OtaTracker


@dataclass(slots=True)
class InsighioOtaRuntimeData:
    """What a loaded config entry holds."""

    client: ConsoleClient
    coordinator: InsighioOtaCoordinator
    catalogue: PackageCatalogue
    tracker: OtaTracker
    rollouts: RolloutManager


type InsighioOtaConfigEntry = ConfigEntry[InsighioOtaRuntimeData]


class InsighioOtaCoordinator(DataUpdateCoordinator[dict[str, ConsoleDevice]]):
    """Keeps the console's devices of the account, by device id."""

    config_entry: InsighioOtaConfigEntry

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
        listed = {device.device_id: device for device in devices}
        self._remove_stale_devices({*listed, *self.client.skipped_device_ids})
        return listed

    def _remove_stale_devices(self, listed: set[str]) -> None:
        """Take the devices the console no longer lists off this entry (and their entities).

        A device the console lists but left out (no key or channel) is still there: it is kept.
        The account's own service device (identified by the entry id) is never stale.
        """
        registry = dr.async_get(self.hass)
        entry_id = self.config_entry.entry_id
        for device in dr.async_entries_for_config_entry(registry, entry_id):
            ids = {value for domain, value in device.identifiers if domain == DOMAIN}
            if ids and not ids & {*listed, entry_id}:
                LOGGER.info("Removing device %s: the console no longer lists it", device.name)
                registry.async_remove_device(device.id)

    @property
    def control_channels(self) -> set[str]:
        """Return the control channels of the known devices."""
        return {device.control_channel for device in (self.data or {}).values()}

    @property
    def data_channels(self) -> set[str]:
        """Return the data (telemetry) channels of the known devices."""
        return {device.data_channel for device in (self.data or {}).values()}

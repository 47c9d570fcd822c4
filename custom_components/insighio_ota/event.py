"""One OTA result `event` per device: what became of an OTA request, for automations."""

from collections.abc import Mapping
from typing import Any, Final

from homeassistant.components.event import EventEntity
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import (
    ATTR_FILE_ID,
    ATTR_INSIGHIO_DEVICE_ID,
    ATTR_REASON,
    ATTR_STATE,
    ATTR_VERSION,
    EVENT_OTA_STATUS,
)
from .coordinator import InsighioOtaConfigEntry
from .entity import InsighioOtaEntity, async_add_entities_per_device
from .jobs import JobState

# The entity only relays the tracker's events; nothing to throttle.
PARALLEL_UPDATES = 0

# Every state a job moves to after the device was asked; `queued` is the request itself.
EVENT_TYPES: Final = [state.value for state in JobState if state is not JobState.QUEUED]


async def async_setup_entry(
    hass: HomeAssistant,
    entry: InsighioOtaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a result event for each device, and for every device the console lists later.

    One bus listener hands each status event to its device's entity: a listener (and a filter
    run) per entity would cost every status event a walk over the whole fleet.
    """
    entities: dict[str, InsighioOtaResultEvent] = {}

    @callback
    def _route(event: Event[Mapping[str, Any]]) -> None:
        if (entity := entities.get(event.data.get(ATTR_INSIGHIO_DEVICE_ID, ""))) is not None:
            entity.async_on_status(event)

    entry.async_on_unload(hass.bus.async_listen(EVENT_OTA_STATUS, _route))
    async_add_entities_per_device(
        entry,
        async_add_entities,
        lambda entry, device_id: InsighioOtaResultEvent(entry, device_id, entities),
    )


class InsighioOtaResultEvent(InsighioOtaEntity, EventEntity):
    """Fires once for each step a device's OTA job takes after its request.

    Fed by the tracker's `insighio_ota_status` bus event, which the tracker fires only for real
    transitions. Two are left out: `queued` (the user's own request, not news from the device) and
    the second `applied` of a job whose /stat then showed other software than the package names:
    the job already fired `applied`, and the mismatch shows in the status sensor's `reason`.
    """

    _attr_event_types = EVENT_TYPES
    _attr_translation_key = "ota_result"
    _secondary_in_large_fleets = True
    # The state changes only when the entity fires; the tracker's events reach it directly.
    _follows_device_updates = False

    def __init__(
        self,
        entry: InsighioOtaConfigEntry,
        device_id: str,
        entities: dict[str, InsighioOtaResultEvent],
    ) -> None:
        """Create the event entity of one device; `entities` routes the status events to it."""
        super().__init__(entry, device_id)
        self._attr_unique_id = f"{device_id}_ota_result"
        self._entities = entities

    async def async_added_to_hass(self) -> None:
        """Receive the tracker's status events for this device."""
        await super().async_added_to_hass()
        self._entities[self.device_id] = self
        self.async_on_remove(self._stop_receiving)

    @callback
    def _stop_receiving(self) -> None:
        if self._entities.get(self.device_id) is self:
            del self._entities[self.device_id]

    @callback
    def async_on_status(self, event: Event[Mapping[str, Any]]) -> None:
        """Fire the result, unless it is a request or a repeated `applied`."""
        state = event.data[ATTR_STATE]
        job = self.runtime_data.tracker.job(self.device_id)
        if (
            state not in EVENT_TYPES
            # Another config entry's tracker follows this device id: not our job.
            or job is None
            or (state == JobState.APPLIED and job.unverified)
        ):
            return
        self._trigger_event(
            state,
            {
                ATTR_FILE_ID: event.data[ATTR_FILE_ID],
                ATTR_VERSION: event.data[ATTR_VERSION],
                ATTR_REASON: event.data[ATTR_REASON],
            },
        )
        self.async_write_ha_state()

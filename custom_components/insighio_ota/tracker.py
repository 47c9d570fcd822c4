"""The OTA state machine of each device: publish a request, follow the reports, clear the request.

Data flows one way: an MQTT message is parsed by `protocol`, moves a job here, and a dispatcher
signal tells the device's entities to write their state. Jobs and what we learned about each
device live in a `Store`, so an HA restart in the middle of an update loses nothing: reports that
arrive afterwards still match the job that was waiting for them.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from homeassistant.components import mqtt, persistent_notification
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_call_later
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .catalogue import Package
from .const import (
    ATTR_FILE_ID,
    ATTR_INSIGHIO_DEVICE_ID,
    ATTR_REASON,
    ATTR_STATE,
    ATTR_VERSION,
    DOMAIN,
    EVENT_OTA_STATUS,
    LOGGER,
    VERIFY_WINDOW,
)
from .protocol import (
    ControlKind,
    DeviceStat,
    OtaMessage,
    OtaRequest,
    ProtocolError,
    control_subscription,
    ota_topic,
    parse_control_topic,
    parse_ota_message,
    parse_stat,
)

STORAGE_VERSION = 1
# Bounds the memory used to remember what was already logged, whatever a broker sends us.
MAX_LOGGED_KEYS = 1000


class JobState(StrEnum):
    """Where an OTA job is."""

    QUEUED = "queued"
    APPLIED = "applied"
    VERIFIED = "verified"
    FAILED = "failed"


@dataclass(slots=True)
class OtaJob:
    """One OTA request to one device and what became of it."""

    device_id: str
    control_channel: str
    file_id: str
    version: str
    state: JobState
    requested_at: str
    updated_at: str
    reason: str | None = None
    # True once the broker echoed our retained request back: it sits there for the device.
    on_broker: bool = False
    # True between the applied report and the /stat of the reboot (or the end of the window).
    awaiting_stat: bool = False

    @property
    def is_open(self) -> bool:
        """Return True while the job still waits for the device."""
        return self.state is JobState.QUEUED or (
            self.state is JobState.APPLIED and self.awaiting_stat
        )


@dataclass(slots=True)
class DeviceFacts:
    """What we know of a device from its reports, kept across restarts."""

    # The version label of the last package the device confirmed it applied.
    installed_version: str | None = None
    # The software version of the first /stat after that confirmation. A later /stat with other
    # software means the device was changed outside HA, and the label no longer applies.
    confirmed_software: str | None = None
    stat: dict[str, Any] | None = None


def _move(job: OtaJob, state: JobState, reason: str | None = None) -> None:
    """Put a job in a new state, stamped with the time it happened."""
    job.state = state
    job.reason = reason
    job.updated_at = dt_util.utcnow().isoformat()


def signal_device_updated(entry_id: str, device_id: str) -> str:
    """Return the dispatcher signal sent when a device's OTA facts change."""
    return f"{DOMAIN}_{entry_id}_{device_id}_updated"


@dataclass(slots=True)
class _LogOnce:
    """Logs a warning the first time a kind of problem is seen for a key, debug afterwards."""

    seen: set[tuple[str, str]] = field(default_factory=set)

    def __call__(self, kind: str, key: str, message: str, *args: object) -> None:
        if (kind, key) in self.seen:
            LOGGER.debug(message, *args)
            return
        if len(self.seen) >= MAX_LOGGED_KEYS:
            self.seen.clear()
        self.seen.add((kind, key))
        LOGGER.warning(message, *args)


class OtaTracker:
    """Follows the OTA jobs of the devices of one config entry."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry_id: str,
        is_known_device: Callable[[str], bool],
    ) -> None:
        """Prepare the tracker; call `async_load`, then `async_subscribe`."""
        self._hass = hass
        self._entry_id = entry_id
        self._is_known_device = is_known_device
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.jobs"
        )
        self._jobs: dict[str, OtaJob] = {}
        self._facts: dict[str, DeviceFacts] = {}
        self._subscriptions: dict[str, list[CALLBACK_TYPE]] = {}
        self._verify_timers: dict[str, CALLBACK_TYPE] = {}
        self._log_once = _LogOnce()

    async def async_load(self) -> None:
        """Read jobs and device facts from storage and resume the verification windows."""
        stored = await self._store.async_load() or {}
        for device_id, job in stored.get("jobs", {}).items():
            self._jobs[device_id] = OtaJob(**{**job, "state": JobState(job["state"])})
        for device_id, facts in stored.get("devices", {}).items():
            self._facts[device_id] = DeviceFacts(**facts)
        for job in self._jobs.values():
            if job.state is JobState.APPLIED and job.awaiting_stat:
                self._start_verify_window(job)

    async def async_subscribe(self, control_channels: set[str]) -> None:
        """Listen to the OTA and stat topics of every control channel not yet followed.

        The broker replays our retained requests on subscription, which confirms the jobs that
        are still queued after a restart.
        """
        for channel in control_channels - self._subscriptions.keys():
            self._subscriptions[channel] = [
                await mqtt.async_subscribe(
                    self._hass,
                    control_subscription(channel, ControlKind.OTA),
                    self._async_on_ota_message,
                    qos=1,
                ),
                await mqtt.async_subscribe(
                    self._hass,
                    control_subscription(channel, ControlKind.STAT),
                    self._async_on_stat_message,
                    qos=1,
                ),
            ]

    @callback
    def async_stop(self) -> None:
        """Stop listening and cancel timers (the config entry is unloading)."""
        for unsubscribes in self._subscriptions.values():
            for unsubscribe in unsubscribes:
                unsubscribe()
        self._subscriptions.clear()
        for cancel in self._verify_timers.values():
            cancel()
        self._verify_timers.clear()

    def job(self, device_id: str) -> OtaJob | None:
        """Return the device's current or last job."""
        return self._jobs.get(device_id)

    def in_progress(self, device_id: str) -> bool:
        """Return True while the device has an open job."""
        job = self._jobs.get(device_id)
        return job is not None and job.is_open

    def installed_version(self, device_id: str) -> str | None:
        """Return the label of the confirmed package, else `<branch>@<commit>` from /stat."""
        facts = self._facts.get(device_id)
        if facts is None:
            return None
        if facts.installed_version is not None:
            return facts.installed_version
        stat = self.stat(device_id)
        return stat.software_version if stat else None

    def stat(self, device_id: str) -> DeviceStat | None:
        """Return the last /stat of the device."""
        facts = self._facts.get(device_id)
        if facts is None or facts.stat is None:
            return None
        return DeviceStat(**facts.stat)

    async def async_request(self, device_id: str, control_channel: str, package: Package) -> None:
        """Publish the retained OTA request for a package and open a job."""
        if self.in_progress(device_id):
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="job_open",
                translation_placeholders={"version": self._jobs[device_id].version},
            )
        request = OtaRequest(package.file_id, package.file_type, package.size)
        try:
            await mqtt.async_publish(
                self._hass,
                ota_topic(control_channel, device_id),
                request.to_payload(),
                qos=1,
                retain=True,
            )
        except HomeAssistantError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="publish_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        now = dt_util.utcnow().isoformat()
        job = OtaJob(
            device_id=device_id,
            control_channel=control_channel,
            file_id=package.file_id,
            version=package.version,
            state=JobState.QUEUED,
            requested_at=now,
            updated_at=now,
        )
        self._jobs[device_id] = job
        await self._async_changed(job)

    def _known_device_id(self, message: mqtt.ReceiveMessage) -> str | None:
        """Return the id of the listed device a control message is from, None otherwise."""
        try:
            device_id = parse_control_topic(message.topic).device_id
        except ProtocolError as err:
            self._log_once("malformed_topic", message.topic, "Ignoring a message: %s", err)
            return None
        if not self._is_known_device(device_id):
            self._log_once(
                "unknown_device",
                device_id,
                "Ignoring messages from device %s, which the console does not list",
                device_id,
            )
            return None
        return device_id

    def _log_malformed(self, message: mqtt.ReceiveMessage, err: ProtocolError) -> None:
        self._log_once(
            "malformed", message.topic, "Ignoring a malformed message on %s: %s", message.topic, err
        )

    async def _async_on_ota_message(self, message: mqtt.ReceiveMessage) -> None:
        """Handle a request echo, a report or a clear on a device's /ota topic."""
        if (device_id := self._known_device_id(message)) is None:
            return
        try:
            report = parse_ota_message(message.payload)
        except ProtocolError as err:
            self._log_malformed(message, err)
            return
        if report is None:
            return  # A clear, by the device or by us: nothing changes.
        job = self._jobs.get(device_id)
        if job is not None and job.file_id == report.file_id:
            if job.is_open:
                await self._async_apply_report(job, report)
            else:
                # The firmware sends a second report after "not enough space", and a device
                # may repeat itself: the job already has its answer.
                LOGGER.debug("Device %s repeated a report for %s", device_id, report.file_id)
            return
        if not report.is_request:
            self._log_once(
                "unmatched_report",
                f"{device_id}/{report.file_id}",
                "Ignoring an OTA report from device %s for file %s, which no job awaits",
                device_id,
                report.file_id,
            )

    async def _async_apply_report(self, job: OtaJob, report: OtaMessage) -> None:
        """Move a job forward on a report for its file id."""
        if report.is_request:
            job.on_broker = True
            return
        if job.state is not JobState.QUEUED:
            return  # A repeated report after the job moved on changes nothing.
        if report.is_applied:
            _move(job, JobState.APPLIED)
            job.awaiting_stat = True
            facts = self._facts.setdefault(job.device_id, DeviceFacts())
            facts.installed_version = job.version
            facts.confirmed_software = None
            self._update_device_registry(job.device_id)
            self._start_verify_window(job)
        elif report.is_failed:
            _move(job, JobState.FAILED, report.reason)
            self._notify_failure(job)
        else:
            self._log_once(
                "unknown_code",
                job.device_id,
                "Ignoring an OTA report with unknown code %s from device %s",
                report.code,
                job.device_id,
            )
            return
        # The device clears the request itself only in some cases; an empty retained publish is
        # idempotent, so we always clear once the job has its answer (protocol.md).
        await self._async_clear_request(job)
        await self._async_changed(job)

    async def _async_on_stat_message(self, message: mqtt.ReceiveMessage) -> None:
        """Record a device's /stat and use it to verify an applied job."""
        if (device_id := self._known_device_id(message)) is None:
            return
        try:
            stat = parse_stat(message.payload)
        except ProtocolError as err:
            self._log_malformed(message, err)
            return
        facts = self._facts.setdefault(device_id, DeviceFacts())
        facts.stat = asdict(stat)
        software = stat.software_version
        if facts.installed_version is not None:
            if facts.confirmed_software is None:
                facts.confirmed_software = software
            elif software != facts.confirmed_software:
                # Someone changed the software outside HA: the label no longer describes it.
                facts.installed_version = None
                facts.confirmed_software = None
        self._update_device_registry(device_id)
        job = self._jobs.get(device_id)
        if job is not None and job.state is JobState.APPLIED and job.awaiting_stat:
            _move(job, JobState.VERIFIED)
            job.awaiting_stat = False
            self._cancel_verify_window(job.device_id)
            await self._async_changed(job)
            return
        await self._async_save()
        async_dispatcher_send(self._hass, signal_device_updated(self._entry_id, device_id))

    def _update_device_registry(self, device_id: str) -> None:
        """Show the device's software (and hardware, once known) in the device registry."""
        registry = dr.async_get(self._hass)
        device = self._registry_device(device_id)
        if device is None:
            return
        stat = self.stat(device_id)
        registry.async_update_device(
            device.id,
            sw_version=self.installed_version(device_id),
            hw_version=stat.hw_version if stat else device.hw_version,
        )

    def _registry_device(self, device_id: str) -> dr.DeviceEntry | None:
        """Return the HA device of a console device."""
        return dr.async_get(self._hass).async_get_device_by_identifier(
            (DOMAIN, device_id), self._entry_id
        )

    def _start_verify_window(self, job: OtaJob) -> None:
        """Stop showing progress if no /stat confirms the applied package in time."""
        self._cancel_verify_window(job.device_id)
        elapsed = dt_util.utcnow() - datetime.fromisoformat(job.updated_at)
        remaining = max((VERIFY_WINDOW - elapsed).total_seconds(), 0)

        @callback
        def _window_ended(_now: datetime) -> None:
            self._verify_timers.pop(job.device_id, None)
            job.awaiting_stat = False
            self._hass.async_create_task(self._async_changed(job, fire_event=False))

        self._verify_timers[job.device_id] = async_call_later(self._hass, remaining, _window_ended)

    def _cancel_verify_window(self, device_id: str) -> None:
        if cancel := self._verify_timers.pop(device_id, None):
            cancel()

    async def _async_clear_request(self, job: OtaJob) -> None:
        """Remove the retained request so the device does not pick it up again."""
        try:
            await mqtt.async_publish(
                self._hass, ota_topic(job.control_channel, job.device_id), "", qos=1, retain=True
            )
        except HomeAssistantError as err:
            LOGGER.warning("Could not clear the OTA request of device %s: %s", job.device_id, err)

    def _notify_failure(self, job: OtaJob) -> None:
        """Tell the user a device could not apply a package, with the device's own reason."""
        device = self._registry_device(job.device_id)
        name = (device.name_by_user or device.name) if device else job.device_id
        persistent_notification.async_create(
            self._hass,
            f"{name} could not install {job.version} (file {job.file_id}): "
            f"{job.reason or 'no reason given'}.",
            title="insigh.io OTA failed",
            notification_id=f"{DOMAIN}_{job.device_id}_failed",
        )

    async def _async_changed(self, job: OtaJob, *, fire_event: bool = True) -> None:
        """Persist a transition, fire the status event and refresh the device's entities."""
        await self._async_save()
        if fire_event:
            device = self._registry_device(job.device_id)
            self._hass.bus.async_fire(
                EVENT_OTA_STATUS,
                {
                    "device_id": device.id if device else None,
                    ATTR_INSIGHIO_DEVICE_ID: job.device_id,
                    ATTR_FILE_ID: job.file_id,
                    ATTR_VERSION: job.version,
                    ATTR_STATE: job.state.value,
                    ATTR_REASON: job.reason,
                },
            )
        async_dispatcher_send(self._hass, signal_device_updated(self._entry_id, job.device_id))

    async def _async_save(self) -> None:
        await self._store.async_save(
            {
                "jobs": {
                    device_id: {**asdict(job), "state": job.state.value}
                    for device_id, job in self._jobs.items()
                },
                "devices": {device_id: asdict(facts) for device_id, facts in self._facts.items()},
            }
        )

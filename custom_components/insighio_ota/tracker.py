"""The OTA state machine of each device: publish a request, follow the reports, clear the request.

Data flows one way: an MQTT message is parsed by `protocol`, moves a job here, and a dispatcher
signal tells the device's entities to write their state. Jobs and what we learned about each
device live in a `Store`, so an HA restart in the middle of an update loses nothing: reports that
arrive afterwards still match the job that was waiting for them.

A job is `queued` until the device reports, `applied` until the /stat of its reboot arrives, then
`verified`. It ends `failed`, `cancelled`, `timed_out` or `unknown` (its request vanished while
nobody listened and /stat cannot tell). Every job that is waiting has a deadline, so no update is
ever shown in progress forever, and every end clears the retained request.
"""

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
import uuid

from homeassistant.components import mqtt, persistent_notification
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_call_later, async_track_point_in_utc_time
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .catalogue import Package, PackageCatalogue, same_commit
from .console import ConsoleDevice
from .const import (
    ATTR_FILE_ID,
    ATTR_INSIGHIO_DEVICE_ID,
    ATTR_REASON,
    ATTR_STATE,
    ATTR_VERSION,
    DOMAIN,
    EVENT_OTA_STATUS,
    JOB_HISTORY_LENGTH,
    LOGGER,
    MAX_QUEUED_TIMEOUT,
    MIN_QUEUED_TIMEOUT,
    UNKNOWN_CADENCE_TIMEOUT,
    VERIFY_WINDOW,
)
from .jobs import (
    DeviceFacts,
    JobState,
    OtaJob,
    TrackerSettings,
    move as _move,
    window_opening,
)
from .protocol import (
    REASON_CANNOT_DOWNLOAD,
    ControlKind,
    DeviceStat,
    OtaCode,
    OtaMessage,
    OtaRequest,
    ProtocolError,
    control_subscription,
    ota_topic,
    parse_control_topic,
    parse_ota_message,
    parse_senml,
    parse_stat,
    parse_telemetry_topic,
    telemetry_subscription,
)
from .repairs import (
    STALE_ENDED,
    STALE_NOT_OURS,
    STALE_UNKNOWN_DEVICE,
    StaleRequest,
    async_sync_stale_issue,
    stale_issue_id,
)

STORAGE_VERSION = 1
# Bounds the memory used to remember what was already logged, whatever a broker sends us.
MAX_LOGGED_KEYS = 1000
# The firmware retries a download once per wake. A report counts as a new attempt when the device
# woke again since the last one (telemetry or /stat arrived), or, for devices whose telemetry we
# do not see, when it comes later than this after the last one (one wake listens ~10 s).
DUPLICATE_REPORT_WINDOW = timedelta(seconds=10)
# Telemetry closer than this belongs to one wake (a device may send several messages while it
# listens for ~10 s); only longer gaps are intervals between wakes.
MIN_WAKE_INTERVAL = timedelta(seconds=30)
WAKE_INTERVAL_SAMPLES = 15
FOREIGN_REPORTS_KEPT = 5
# After a restart the broker replays retained requests right after our subscription; a queued
# job whose request has not come back by then was cleared while HA was not listening.
REPLAY_GRACE = timedelta(seconds=5)
# Telemetry only changes what we know of a device, so it is saved in batches.
FACTS_SAVE_DELAY = 30
# A held request whose window opens while the broker is away is tried again this much later.
RELEASE_RETRY = timedelta(minutes=1)
# Every write serializes the jobs and facts of the whole fleet: a burst of reports (a rollout's
# wave waking up) is written once, a moment later, instead of once per message. HA writes what is
# pending when it stops, so a restart loses nothing; a crash loses at most this last second, which
# the broker's retained requests and the devices' next /stat recover like any unseen report.
JOBS_SAVE_DELAY = 1


def _notification_id(job: OtaJob) -> str:
    """Return the id of a device's OTA notification: one per device, the latest wins."""
    return f"{DOMAIN}_{job.device_id}_ota"


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
        devices: Callable[[], Mapping[str, ConsoleDevice]],
        settings: Callable[[], TrackerSettings] = TrackerSettings,
        catalogue: PackageCatalogue | None = None,
        *,
        device_seen: Callable[[mqtt.ReceiveMessage], None] | None = None,
    ) -> None:
        """Prepare the tracker; call `async_load`, then `async_subscribe`.

        `device_seen` gets every telemetry and `/stat` message before it is read, so that an
        MQTT-only entry can add a device it has not seen yet and have this very message count.
        """
        self._hass = hass
        self._entry_id = entry_id
        self._devices = devices
        self._settings = settings
        self._catalogue = catalogue
        self._device_seen = device_seen
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.jobs"
        )
        self._jobs: dict[str, OtaJob] = {}
        self._facts: dict[str, DeviceFacts] = {}
        self._subscriptions: dict[str, list[CALLBACK_TYPE]] = {}
        self._deadline_timers: dict[str, CALLBACK_TYPE] = {}
        self._replay_check: CALLBACK_TYPE | None = None
        # Jobs loaded from storage whose retained request the broker has yet to replay.
        self._awaiting_replay: set[str] = set()
        self._log_once = _LogOnce()
        self._job_listeners: list[Callable[[OtaJob], None]] = []
        # Retained requests the broker replayed that no open job of ours stands behind, by topic.
        self._stale: dict[str, StaleRequest] = {}
        self._stale_issue_timer: CALLBACK_TYPE | None = None
        # When the pending write is due (loop time), None once written: a later change must not
        # push it back (see `_schedule_save`).
        self._save_due: float | None = None
        # Set by `async_unload`. A handler or an install still awaiting the broker then must not
        # start a timer the unload will never cancel, nor write after the unload's final write:
        # a reload's new tracker may have read the store meanwhile and would be overwritten.
        self._unloaded = False

    # -- lifecycle -------------------------------------------------------------------------

    async def async_load(self) -> None:
        """Read jobs and device facts from storage."""
        stored = await self._store.async_load() or {}
        jobs = stored.get("jobs") if isinstance(stored, dict) else None
        devices = stored.get("devices") if isinstance(stored, dict) else None
        for device_id, job in (jobs if isinstance(jobs, dict) else {}).items():
            try:
                self._jobs[device_id] = OtaJob.from_dict(job)
            except TypeError, ValueError, KeyError:
                # A damaged or foreign record must not keep the other devices from working.
                LOGGER.warning("Dropping an unreadable stored OTA job of device %s", device_id)
        for device_id, facts in (devices if isinstance(devices, dict) else {}).items():
            try:
                self._facts[device_id] = DeviceFacts(**facts)
            except TypeError:
                LOGGER.warning("Dropping unreadable stored facts of device %s", device_id)
        for job in self._jobs.values():
            if job.state is JobState.QUEUED and not job.request_gone and job.held_until is None:
                job.on_broker = False
                self._awaiting_replay.add(job.device_id)

    async def async_subscribe(self, control_channels: set[str], data_channels: set[str]) -> None:
        """Listen to the control and telemetry topics not yet followed, then resume deadlines.

        The broker replays our retained requests on subscription, which tells the jobs that are
        still queued after a restart from those whose request vanished meanwhile.
        """
        first = not self._subscriptions
        for channel in control_channels:
            key = f"control/{channel}"
            if key in self._subscriptions:
                continue
            try:
                ota = control_subscription(channel, ControlKind.OTA)
                stat = control_subscription(channel, ControlKind.STAT)
            except ProtocolError as err:
                self._log_once("bad_channel", key, "Not following a console channel: %s", err)
                continue
            self._subscriptions[key] = [
                await mqtt.async_subscribe(self._hass, ota, self._async_on_ota_message, qos=1),
                await mqtt.async_subscribe(self._hass, stat, self._async_on_stat_message, qos=1),
                mqtt.async_on_subscribe_done(self._hass, ota, 1, self._schedule_replay_check),
            ]
        for channel in data_channels:
            key = f"data/{channel}"
            if key in self._subscriptions:
                continue
            try:
                telemetry = telemetry_subscription(channel)
            except ProtocolError as err:
                self._log_once("bad_channel", key, "Not following a console channel: %s", err)
                continue
            self._subscriptions[key] = [
                await mqtt.async_subscribe(self._hass, telemetry, self._on_telemetry, qos=0)
            ]
        if first:
            self._subscriptions["connection"] = [
                mqtt.async_subscribe_connection_status(self._hass, self._on_connection_change)
            ]
            for job in list(self._jobs.values()):
                if job.is_open:
                    self._schedule_deadline(job)

    async def async_unload(self) -> None:
        """Stop listening, cancel timers and write what is not saved yet."""
        self._unloaded = True
        for unsubscribes in self._subscriptions.values():
            for unsubscribe in unsubscribes:
                unsubscribe()
        self._subscriptions.clear()
        for cancel in self._deadline_timers.values():
            cancel()
        self._deadline_timers.clear()
        if self._replay_check is not None:
            self._replay_check()
            self._replay_check = None
        if self._stale_issue_timer is not None:
            self._stale_issue_timer()
            self._stale_issue_timer = None
        # The broker replays them again at the next load, which raises the issue again.
        self._stale.clear()
        ir.async_delete_issue(self._hass, DOMAIN, stale_issue_id(self._entry_id))
        await self._async_save()

    # -- what entities read ----------------------------------------------------------------

    @property
    def settings(self) -> TrackerSettings:
        """Return the current settings."""
        return self._settings()

    def job(self, device_id: str) -> OtaJob | None:
        """Return the device's current or last job."""
        return self._jobs.get(device_id)

    def history(self, device_id: str) -> list[dict[str, Any]]:
        """Return the device's last jobs, oldest first."""
        facts = self._facts.get(device_id)
        return list(facts.history) if facts else []

    def in_progress(self, device_id: str) -> bool:
        """Return True while the device has an open job."""
        job = self._jobs.get(device_id)
        return job is not None and job.is_open

    def devices_in_progress(self) -> list[str]:
        """Return the listed devices that have an open job."""
        return [device_id for device_id in self._devices() if self.in_progress(device_id)]

    def installed_version(self, device_id: str) -> str | None:
        """Return the label of the confirmed package, else `<branch>@<commit>` from /stat."""
        facts = self._facts.get(device_id)
        if facts is None:
            return None
        if facts.installed_version is not None:
            # The package's current label: it may have been relabelled since it was installed.
            package = (
                self._catalogue.by_file_id(facts.installed_file_id)
                if self._catalogue is not None and facts.installed_file_id is not None
                else None
            )
            return package.version if package is not None else facts.installed_version
        stat = self.stat(device_id)
        if stat is None or stat.sw_commit is None:
            return None
        # A package that names the commit gives it a readable label.
        package = self._catalogue.by_sw_commit(stat.sw_commit) if self._catalogue else None
        return package.version if package is not None else stat.software_version

    def has_confirmed_package(self, device_id: str) -> bool:
        """Return True when the device's software is a package it confirmed applying."""
        facts = self._facts.get(device_id)
        return facts is not None and facts.installed_version is not None

    def stat(self, device_id: str) -> DeviceStat | None:
        """Return the last /stat of the device."""
        facts = self._facts.get(device_id)
        if facts is None or facts.stat is None:
            return None
        return DeviceStat(**facts.stat)

    def facts(self, device_id: str) -> DeviceFacts | None:
        """Return what is known of the device (last seen, wake interval, battery)."""
        return self._facts.get(device_id)

    # -- requests from the user ------------------------------------------------------------

    def check_guards(self, device_id: str, package: Package) -> None:
        """Refuse an install the device is unlikely to survive or to pick up, and say why."""
        settings = self._settings()
        facts = self._facts.get(device_id) or DeviceFacts()
        stat = self.stat(device_id)
        if stat is not None and stat.free_flash is not None and stat.free_flash < package.size:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="guard_free_flash",
                translation_placeholders={
                    "free": str(stat.free_flash),
                    "size": str(package.size),
                },
            )
        if settings.seen_within_hours and facts.last_seen is not None:
            silence = dt_util.utcnow() - datetime.fromisoformat(facts.last_seen)
            if silence > timedelta(hours=settings.seen_within_hours):
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="guard_not_seen",
                    translation_placeholders={
                        "last_seen": facts.last_seen,
                        "hours": str(settings.seen_within_hours),
                    },
                )
        if (
            settings.min_battery_mv
            and facts.battery_mv is not None
            and facts.battery_mv < settings.min_battery_mv
        ):
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="guard_battery",
                translation_placeholders={
                    "battery": f"{facts.battery_mv:g}",
                    "minimum": str(settings.min_battery_mv),
                },
            )

    def check_installable(self, device_id: str, package: Package) -> ConsoleDevice:
        """Return the console device when the package may be requested now; else raise why not.

        Every refusal is a translated `ServiceValidationError`: the device is not listed, the
        package is for other hardware, a job already waits, or a guard refuses. Every way in
        (the update entity, the install action, rollouts) goes through `async_request`, which
        checks this first.
        """
        device = self._devices().get(device_id)
        if device is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="device_not_listed",
                translation_placeholders={"device_id": device_id},
            )
        stat = self.stat(device_id)
        hw_version = stat.hw_version if stat else None
        if not PackageCatalogue.compatible(package, hw_version):
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="incompatible_package",
                translation_placeholders={
                    "version": package.version,
                    "hardware": ", ".join(package.hardware),
                    "hw_version": hw_version or "unknown hardware",
                },
            )
        if (job := self._jobs.get(device_id)) is not None and job.is_open:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="job_open",
                translation_placeholders={"version": job.version},
            )
        self.check_guards(device_id, package)
        return device

    async def async_request(
        self,
        device_id: str,
        package: Package,
        *,
        window: tuple[time, time] | None = None,
    ) -> None:
        """Publish the retained OTA request for a package and open a job.

        Outside the maintenance window (`window`, else the entry's) the request is held and
        published when the window opens.
        """
        device = self.check_installable(device_id, package)
        OtaRequest(package.file_id, package.file_type, package.size)  # Checked before anything.
        now = dt_util.utcnow()
        held_until = (
            window_opening(dt_util.now(), *window)
            if window is not None
            else self._settings().held_until(dt_util.now())
        )
        if held_until is None and not mqtt.is_connected(self._hass):
            # Refused before publishing: a QoS 1 publish while disconnected fails, yet the MQTT
            # client keeps it and sends it after the reconnect, so the device would install an
            # update the user was told had failed, with no job following it.
            raise HomeAssistantError(
                translation_domain=DOMAIN, translation_key="mqtt_not_connected"
            )
        start = dt_util.as_utc(held_until) if held_until else now
        job = OtaJob(
            job_id=uuid.uuid4().hex[:12],
            device_id=device_id,
            control_channel=device.control_channel,
            file_id=package.file_id,
            file_type=package.file_type,
            size=package.size,
            version=package.version,
            sw_commit=package.sw_commit,
            state=JobState.QUEUED,
            requested_at=now.isoformat(),
            updated_at=now.isoformat(),
            deadline=(start + self._queued_timeout(device_id)).isoformat(),
            held_until=start.isoformat() if held_until else None,
            previous_commit=stat.sw_commit if (stat := self.stat(device_id)) else None,
        )
        # The job is open before the publish is awaited, so a second install at the same moment
        # is refused instead of publishing a second request.
        previous = self._jobs.get(device_id)
        self._jobs[device_id] = job
        if held_until is None:
            try:
                await self._async_publish_request(job)
            except HomeAssistantError:
                if previous is None:
                    del self._jobs[device_id]
                else:
                    self._jobs[device_id] = previous
                raise
        self._awaiting_replay.discard(device_id)
        self._schedule_deadline(job)
        await self._async_changed(job)

    async def _async_publish_request(self, job: OtaJob) -> None:
        """Put the job's retained request on the broker for the device's next wake."""
        request = OtaRequest(job.file_id, job.file_type, job.size)
        await self._async_publish(
            ota_topic(job.control_channel, job.device_id),
            request.to_payload(),
            raise_on_error=True,
        )

    async def _async_release(self, job: OtaJob) -> None:
        """Publish a request held for the maintenance window, now that it is open."""
        if not mqtt.is_connected(self._hass):
            # Held a little longer rather than failed: the broker is usually back soon, and a
            # publish now would be sent after the reconnect anyway (see `async_request`).
            LOGGER.info(
                "Holding the OTA request of device %s until Home Assistant is connected to "
                "the MQTT broker",
                job.device_id,
            )
            job.held_until = (dt_util.utcnow() + RELEASE_RETRY).isoformat()
            self._schedule_deadline(job)
            await self._async_changed(job, fire_event=False)
            return
        try:
            await self._async_publish_request(job)
        except HomeAssistantError as err:
            await self._async_end(job, JobState.FAILED, f"could not publish the request: {err}")
            return
        job.held_until = None
        job.deadline = (dt_util.utcnow() + self._queued_timeout(job.device_id)).isoformat()
        self._schedule_deadline(job)
        await self._async_changed(job, fire_event=False)

    async def async_cancel(self, device_id: str) -> None:
        """End the device's open job and take its request off the broker."""
        job = self._jobs.get(device_id)
        if job is None or not job.is_open:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="no_open_job",
                translation_placeholders={"device_id": device_id},
            )
        await self._async_end(job, JobState.CANCELLED, "cancelled by the user")

    def _queued_timeout(self, device_id: str) -> timedelta:
        """Return how long a request may wait for the device: a few of its wake intervals."""
        facts = self._facts.get(device_id)
        interval = facts.wake_interval if facts else None
        if interval is None:
            return UNKNOWN_CADENCE_TIMEOUT
        timeout = interval * self._settings().timeout_wakes
        return min(max(timeout, MIN_QUEUED_TIMEOUT), MAX_QUEUED_TIMEOUT)

    # -- MQTT ------------------------------------------------------------------------------

    def _known_device_id(self, message: mqtt.ReceiveMessage) -> str | None:
        """Return the id of the listed device a control message is from, None otherwise."""
        try:
            topic = parse_control_topic(message.topic)
        except ProtocolError as err:
            self._log_once("malformed_topic", message.topic, "Ignoring a message: %s", err)
            return None
        device = self._listed_device(topic.device_id)
        if device is None:
            return None
        if device.control_channel != topic.control_channel:
            # The console broker lets any device of a project write any topic; a message on
            # another project's channel is not this device's.
            self._log_once(
                "wrong_channel",
                message.topic,
                "Ignoring a message for device %s on another project's channel",
                topic.device_id,
            )
            return None
        return topic.device_id

    def _listed_device(self, device_id: str) -> ConsoleDevice | None:
        """Return the console's device, or None (logged once) when it does not list it."""
        if (device := self._devices().get(device_id)) is not None:
            return device
        self._log_once(
            "unknown_device",
            device_id,
            "Ignoring messages from device %s, which the console does not list",
            device_id,
        )
        return None

    def _log_malformed(self, message: mqtt.ReceiveMessage, err: ProtocolError) -> None:
        self._log_once(
            "malformed", message.topic, "Ignoring a malformed message on %s: %s", message.topic, err
        )

    async def _async_on_ota_message(self, message: mqtt.ReceiveMessage) -> None:
        """Handle a request echo, a report or a clear on a device's /ota topic."""
        # Parsed once: every report of a rollout comes through here.
        try:
            report = parse_ota_message(message.payload)
        except ProtocolError as err:
            if self._known_device_id(message) is not None:
                self._log_malformed(message, err)
            return
        if self._note_stale_request(message, report):
            return
        if (device_id := self._known_device_id(message)) is None:
            return
        job = self._jobs.get(device_id)
        if report is None:
            await self._async_on_clear(job)
            return
        if job is not None and job.file_id == report.file_id:
            if job.is_open:
                await self._async_apply_report(job, report)
            elif report.is_applied and job.state not in (JobState.APPLIED, JobState.VERIFIED):
                await self._async_applied_after_end(job)
            elif report.is_request and message.retain:
                # The broker still holds the request of a job that has its answer (our clear
                # did not stick): the device would act on it again at every wake.
                await self._async_clear(job)
            elif not report.is_request:
                # The firmware sends a second report after "not enough space", and a device
                # may repeat itself: the job already has its answer.
                LOGGER.debug("Device %s repeated a report for %s", device_id, report.file_id)
            return
        if report.is_request:
            return  # A request that is not ours (or no longer ours): not our business.
        if job is not None and job.is_open:
            # Another file's report while ours waits: keep it for the user, do not end the job.
            job.foreign_reports = [
                *job.foreign_reports[-(FOREIGN_REPORTS_KEPT - 1) :],
                {
                    "file_id": report.file_id,
                    "code": report.code,
                    "reason": report.reason,
                    "at": dt_util.utcnow().isoformat(),
                },
            ]
            await self._async_changed(job, fire_event=False)
        self._log_once(
            "unmatched_report",
            f"{device_id}/{report.file_id}",
            "Ignoring an OTA report from device %s for file %s, which no job awaits",
            device_id,
            report.file_id,
        )

    # -- stale retained requests -----------------------------------------------------------

    @property
    def stale_requests(self) -> list[StaleRequest]:
        """Return the retained requests found on the broker that no open job stands behind."""
        return list(self._stale.values())

    def _note_stale_request(self, message: mqtt.ReceiveMessage, request: OtaMessage | None) -> bool:
        """Record a replayed request no open job of ours stands behind; True when it is one.

        `request` is the message's parsed payload (None for a clear). Only the broker's replay
        on subscription (at startup, or for a new channel) is flagged retained. A live clear or
        request on the topic replaces what the broker held there.
        """
        try:
            topic = parse_control_topic(message.topic)
        except ProtocolError:
            return False  # Logged by the usual path.
        if not message.retain:
            if (request is None or request.is_request) and message.topic in self._stale:
                del self._stale[message.topic]
                self._schedule_stale_issue()
            return False
        if request is None or not request.is_request:
            return False
        device = self._devices().get(topic.device_id)
        if device is None or device.control_channel != topic.control_channel:
            reason = STALE_UNKNOWN_DEVICE
        elif (job := self._jobs.get(topic.device_id)) is not None and job.file_id == (
            request.file_id
        ):
            return False  # Our job's own request: it resumes the job, or is cleared if ended.
        elif any(old.get("file_id") == request.file_id for old in self.history(topic.device_id)):
            reason = STALE_ENDED
        else:
            reason = STALE_NOT_OURS
        self._stale[message.topic] = StaleRequest(
            topic=message.topic,
            device_id=topic.device_id,
            file_id=request.file_id,
            reason=reason,
            device_name=device.name if device is not None else None,
        )
        self._schedule_stale_issue()
        return True

    @callback
    def _schedule_stale_issue(self) -> None:
        """Raise or update the one issue once the broker's replay burst is over."""
        if self._stale_issue_timer is not None:
            return

        @callback
        def _sync(_now: datetime) -> None:
            self._stale_issue_timer = None
            async_sync_stale_issue(self._hass, self._entry_id, self._stale.values())

        self._stale_issue_timer = async_call_later(self._hass, REPLAY_GRACE, _sync)

    async def async_clear_stale_requests(self) -> None:
        """Clear every stale request with an empty retained publish; raise if one fails."""
        for topic in list(self._stale):
            await self._async_publish(topic, "", raise_on_error=True)
            del self._stale[topic]
        async_sync_stale_issue(self._hass, self._entry_id, self._stale.values())

    async def _async_on_clear(self, job: OtaJob | None) -> None:
        """Note a request that vanished without a report: the next /stat will tell."""
        if job is None or job.state is not JobState.QUEUED or not job.on_broker:
            return  # Our own clear coming back, or nothing was waiting.
        job.on_broker = False
        job.request_gone = True
        await self._async_changed(job, fire_event=False)

    @callback
    def _on_connection_change(self, connected: bool) -> None:
        """After a reconnect, look for the queued jobs' requests as after a restart.

        HA's MQTT session is a clean one: what the devices reported while it was away is lost,
        as when HA is down. A device that applied its package meanwhile also cleared the request,
        which the broker then does not replay; its job would wait for its deadline and end
        `timed_out` although the device answered. A request that is replayed marks its job on the
        broker again (`_async_apply_report`), whenever it comes.
        """
        if not connected:
            return
        for job in self._jobs.values():
            if job.state is JobState.QUEUED and job.on_broker and job.held_until is None:
                job.on_broker = False
                self._awaiting_replay.add(job.device_id)
        self._schedule_replay_check()

    @callback
    def _schedule_replay_check(self) -> None:
        """Once subscribed, give the broker a moment to replay the retained requests."""
        if self._replay_check is not None or not self._awaiting_replay:
            return

        @callback
        def _check(_now: datetime) -> None:
            self._replay_check = None
            for device_id in self._awaiting_replay:
                job = self._jobs.get(device_id)
                if job is not None and job.state is JobState.QUEUED and not job.on_broker:
                    LOGGER.info(
                        "The OTA request of device %s vanished while Home Assistant was not "
                        "listening; its next /stat tells what happened",
                        device_id,
                    )
                    job.request_gone = True
                    self._hass.async_create_task(self._async_changed(job, fire_event=False))
            self._awaiting_replay.clear()

        self._replay_check = async_call_later(self._hass, REPLAY_GRACE, _check)

    async def _async_apply_report(self, job: OtaJob, report: OtaMessage) -> None:
        """Move an open job forward on a message for its file id."""
        if report.is_request:
            job.on_broker = True
            self._awaiting_replay.discard(job.device_id)
            if job.request_gone:
                # The request is back on the broker: the device can still pick it up.
                job.request_gone = False
                await self._async_changed(job, fire_event=False)
            return
        if job.state is not JobState.QUEUED:
            return  # A repeated report after the job moved on changes nothing.
        if report.is_applied:
            _move(job, JobState.APPLIED)
            job.awaiting_stat = True
            job.deadline = (dt_util.utcnow() + VERIFY_WINDOW).isoformat()
            self._record_installed(job)
            self._schedule_deadline(job)
            await self._async_changed(job)
            # The device clears the request itself after a success, but if that fails it would
            # apply the package again at every wake: clearing is idempotent, so we always do.
            await self._async_clear(job)
        elif report.is_failed:
            await self._async_on_failure(job, report.reason)
        elif report.code == OtaCode.CANCELLED:
            # Defined by the firmware but never seen sent; should a device send it, believe it.
            await self._async_end(
                job, JobState.CANCELLED, report.reason or "cancelled by the device"
            )
        else:
            self._log_once(
                "unknown_code",
                job.device_id,
                "Ignoring an OTA report with unknown code %s from device %s",
                report.code,
                job.device_id,
            )

    def _record_installed(self, job: OtaJob, software: str | None = None) -> None:
        """Remember the package the device applied; its next /stat confirms the software."""
        facts = self._facts.setdefault(job.device_id, DeviceFacts())
        facts.installed_version = job.version
        facts.installed_file_id = job.file_id
        facts.confirmed_software = software
        self._update_device_registry(job.device_id)

    async def _async_applied_after_end(self, job: OtaJob) -> None:
        """Believe a device that applied the package after its job ended.

        A cancel or a timeout can lose the race with a device that had already started: the
        device's report is the truth.
        """
        previous = job.state.value
        _move(job, JobState.APPLIED, f"applied after the job ended {previous}")
        job.awaiting_stat = True
        job.deadline = (dt_util.utcnow() + VERIFY_WINDOW).isoformat()
        self._record_installed(job)
        self._schedule_deadline(job)
        await self._async_changed(job)
        await self._async_clear(job)

    async def _async_on_failure(self, job: OtaJob, reason: str | None) -> None:
        """End the job, except for download failures the device retries at its next wake."""
        if reason != REASON_CANNOT_DOWNLOAD:
            await self._async_end(job, JobState.FAILED, reason)
            return
        now = dt_util.utcnow()
        if not self._is_new_attempt(job, now):
            return  # The same attempt, reported or delivered twice.
        job.attempts += 1
        job.last_attempt_at = now.isoformat()
        if job.attempts >= self._settings().retry_cap:
            await self._async_end(job, JobState.FAILED, f"{reason} ({job.attempts} attempts)")
            return
        job.reason = reason
        await self._async_changed(job, fire_event=False)

    def _is_new_attempt(self, job: OtaJob, now: datetime) -> bool:
        """Return True when a download failure comes from another wake than the last one."""
        if job.last_attempt_at is None:
            return True
        last = datetime.fromisoformat(job.last_attempt_at)
        facts = self._facts.get(job.device_id)
        if (
            facts is not None
            and facts.last_seen is not None
            and datetime.fromisoformat(facts.last_seen) > last
        ):
            return True
        # A clock that stepped back makes the gap negative: that is not the same wake either.
        return not timedelta(0) <= now - last < DUPLICATE_REPORT_WINDOW

    async def _async_on_stat_message(self, message: mqtt.ReceiveMessage) -> None:
        """Record a device's /stat and use it to verify or settle its job."""
        if self._device_seen is not None:
            self._device_seen(message)
        if (device_id := self._known_device_id(message)) is None:
            return
        try:
            stat = parse_stat(message.payload)
        except ProtocolError as err:
            self._log_malformed(message, err)
            return
        facts = self._facts.setdefault(device_id, DeviceFacts())
        facts.stat = asdict(stat)
        facts.last_seen = dt_util.utcnow().isoformat()
        software = stat.software_version
        # A /stat without a commit says nothing about the software; it keeps the label.
        if facts.installed_version is not None and software is not None:
            if facts.confirmed_software is None:
                facts.confirmed_software = software
            elif software != facts.confirmed_software:
                # Someone changed the software outside HA: the label no longer describes it.
                facts.installed_version = None
                facts.confirmed_software = None
        job = self._jobs.get(device_id)
        if job is not None and job.state is JobState.APPLIED:
            await self._async_verify(job, stat)
        elif (
            job is not None
            and job.state is JobState.QUEUED
            and (job.request_gone or self._shows_package(job, stat))
        ):
            await self._async_settle_from_stat(job, stat)
        else:
            self._schedule_save()
            async_dispatcher_send(self._hass, signal_device_updated(self._entry_id, device_id))
        self._update_device_registry(device_id)

    async def _async_verify(self, job: OtaJob, stat: DeviceStat) -> None:
        """Confirm an applied job with the software the rebooted device reports."""
        if (
            job.sw_commit is not None
            and stat.sw_commit is not None
            and not same_commit(stat.sw_commit, job.sw_commit)
        ):
            # Applied, but the device runs other software than the package names.
            reason = f"the device reports {stat.sw_commit}, the package installs {job.sw_commit}"
            if not job.awaiting_stat and job.reason == reason:
                return  # Another boot with the same software: nothing new to tell.
            self._cancel_deadline(job.device_id)
            job.awaiting_stat = False
            job.deadline = None
            _move(job, JobState.APPLIED, reason)
        else:
            self._cancel_deadline(job.device_id)
            job.awaiting_stat = False
            job.deadline = None
            _move(job, JobState.VERIFIED)
        await self._async_changed(job)

    @staticmethod
    def _shows_package(job: OtaJob, stat: DeviceStat) -> bool:
        """Return True when /stat shows the package's commit, which the device did not run."""
        if job.sw_commit is None or stat.sw_commit is None:
            return False
        if job.previous_commit is not None and same_commit(job.previous_commit, job.sw_commit):
            return False  # A reinstall of what it ran: /stat cannot tell.
        return same_commit(stat.sw_commit, job.sw_commit)

    async def _async_settle_from_stat(self, job: OtaJob, stat: DeviceStat) -> None:
        """Decide a queued job from /stat.

        Either /stat shows the package (the device's report was lost), or the request vanished
        unseen and nothing shows what happened.
        """
        if self._shows_package(job, stat):
            self._record_installed(job, stat.software_version)
            self._cancel_deadline(job.device_id)
            job.deadline = None
            if job.request_gone:
                _move(job, JobState.VERIFIED, "applied while Home Assistant was not listening")
            else:
                _move(job, JobState.VERIFIED, "applied; the device's report was not received")
            await self._async_changed(job)
            if not job.request_gone:
                await self._async_clear(job)
            return
        await self._async_end(
            job,
            JobState.UNKNOWN,
            "the request vanished while Home Assistant was not listening, and the device's "
            "software does not show the package",
        )

    @callback
    def _on_telemetry(self, message: mqtt.ReceiveMessage) -> None:
        """Learn when a device wakes (its cadence) and its battery from telemetry."""
        if self._device_seen is not None:
            self._device_seen(message)
        try:
            device_id = parse_telemetry_topic(message.topic)
        except ProtocolError:
            return  # Another level below the data channel: not device telemetry.
        device = self._listed_device(device_id)
        if device is None or not message.topic.startswith(f"channels/{device.data_channel}/"):
            return
        now = dt_util.utcnow()
        facts = self._facts.setdefault(device_id, DeviceFacts())
        if facts.last_seen is not None:
            gap = now - datetime.fromisoformat(facts.last_seen)
            if gap >= MIN_WAKE_INTERVAL:
                facts.wake_intervals = [
                    *facts.wake_intervals[-(WAKE_INTERVAL_SAMPLES - 1) :],
                    gap.total_seconds(),
                ]
        facts.last_seen = now.isoformat()
        try:
            battery = parse_senml(message.payload).get("vbatt")
        except ProtocolError as err:
            self._log_malformed(message, err)
        else:
            if isinstance(battery, (int, float)) and not isinstance(battery, bool):
                facts.battery_mv = float(battery)
        self._schedule_save(FACTS_SAVE_DELAY)

    # -- ends, deadlines, side effects -----------------------------------------------------

    async def _async_end(self, job: OtaJob, state: JobState, reason: str | None) -> None:
        """End a job: clear its request, tell the user if asked to, record it."""
        self._cancel_deadline(job.device_id)
        job.awaiting_stat = False
        job.deadline = None
        _move(job, state, reason)
        if state in (JobState.FAILED, JobState.TIMED_OUT, JobState.UNKNOWN):
            self._notify(job)
        await self._async_changed(job)
        await self._async_clear(job)

    def _schedule_deadline(self, job: OtaJob) -> None:
        """Give up on a waiting job at its deadline; publish a held one when the window opens."""
        self._cancel_deadline(job.device_id)
        if self._unloaded:
            return  # The stored deadline is scheduled again at the next load.
        if job.deadline is None:
            # Only a waiting job stored by the first release has none: give it one, so that it
            # cannot show progress forever.
            wait = UNKNOWN_CADENCE_TIMEOUT if job.state is JobState.QUEUED else VERIFY_WINDOW
            job.deadline = (dt_util.utcnow() + wait).isoformat()
        deadline = datetime.fromisoformat(job.held_until or job.deadline)

        @callback
        def _deadline_reached(_now: datetime) -> None:
            self._deadline_timers.pop(job.device_id, None)
            self._hass.async_create_task(self._async_deadline_reached(job))

        self._deadline_timers[job.device_id] = async_track_point_in_utc_time(
            self._hass, _deadline_reached, max(deadline, dt_util.utcnow())
        )

    async def _async_deadline_reached(self, job: OtaJob) -> None:
        if job.state is JobState.QUEUED and job.held_until is not None:
            await self._async_release(job)
            return
        if job.state is JobState.QUEUED and job.request_gone:
            # The request left the broker unseen and no /stat has told what became of it.
            await self._async_end(
                job,
                JobState.UNKNOWN,
                "the request vanished while Home Assistant was not listening, and no /stat "
                "arrived in time to tell whether the device applied it",
            )
        elif job.state is JobState.QUEUED:
            await self._async_end(job, JobState.TIMED_OUT, "the device did not report in time")
        elif job.state is JobState.APPLIED and job.awaiting_stat:
            # Applied for sure, but no /stat confirmed it: stop showing progress.
            job.awaiting_stat = False
            job.deadline = None
            await self._async_changed(job, fire_event=False)

    def _cancel_deadline(self, device_id: str) -> None:
        if cancel := self._deadline_timers.pop(device_id, None):
            cancel()

    async def _async_publish(self, topic: str, payload: str, *, raise_on_error: bool) -> None:
        """Publish retained with QoS 1 through HA's MQTT integration."""
        try:
            await mqtt.async_publish(self._hass, topic, payload, qos=1, retain=True)
        except HomeAssistantError as err:
            if raise_on_error:
                raise HomeAssistantError(
                    translation_domain=DOMAIN,
                    translation_key="publish_failed",
                    translation_placeholders={"error": str(err)},
                ) from err
            LOGGER.warning("Could not publish on %s: %s", topic, err)

    async def _async_clear(self, job: OtaJob) -> None:
        """Remove the retained request so the device does not pick it up again."""
        await self._async_publish(
            ota_topic(job.control_channel, job.device_id), "", raise_on_error=False
        )

    def _registry_device(self, device_id: str) -> dr.DeviceEntry | None:
        """Return the HA device of a console device."""
        return dr.async_get(self._hass).async_get_device_by_identifier(
            (DOMAIN, device_id), self._entry_id
        )

    def _update_device_registry(self, device_id: str) -> None:
        """Show the device's software (and hardware, once known) in the device registry."""
        device = self._registry_device(device_id)
        if device is None:
            return
        stat = self.stat(device_id)
        dr.async_get(self._hass).async_update_device(
            device.id,
            sw_version=self.installed_version(device_id),
            hw_version=stat.hw_version if stat else device.hw_version,
            serial_number=stat.serial if stat and stat.serial else device.serial_number,
        )

    def _notify(self, job: OtaJob) -> None:
        """Tell the user an update did not happen, with the device's own reason."""
        if not self._settings().notify_failures:
            return
        device = self._registry_device(job.device_id)
        name = (device.name_by_user or device.name) if device else job.device_id
        titles = {
            JobState.FAILED: "insigh.io OTA failed",
            JobState.TIMED_OUT: "insigh.io OTA timed out",
            JobState.UNKNOWN: "insigh.io OTA outcome unknown",
        }
        persistent_notification.async_create(
            self._hass,
            f"{name} did not install {job.version} (file {job.file_id}): "
            f"{job.reason or 'no reason given'}.",
            title=titles.get(job.state, "insigh.io OTA"),
            notification_id=_notification_id(job),
        )

    def _record_history(self, job: OtaJob) -> None:
        """Keep the device's last jobs, the newest state of each."""
        facts = self._facts.setdefault(job.device_id, DeviceFacts())
        entry = job.as_dict()
        history = [old for old in facts.history if old["job_id"] != job.job_id]
        facts.history = [*history, entry][-JOB_HISTORY_LENGTH:]

    @callback
    def async_add_job_listener(self, listener: Callable[[OtaJob], None]) -> CALLBACK_TYPE:
        """Call `listener` with a job after each of its changes; returns the function to stop."""
        self._job_listeners.append(listener)
        return lambda: self._job_listeners.remove(listener)

    async def _async_changed(self, job: OtaJob, *, fire_event: bool = True) -> None:
        """Tell the change (listeners, status event, entities), then schedule its write.

        Everything is told before the first await, and callers call this right after the job
        moved, before they publish: a message handled meanwhile (the /stat of a reboot while
        our clear waits for its acknowledgement) must not move the job before its event fired,
        or the event would show the later state, twice, and never `applied`.
        """
        if job.state in (JobState.QUEUED, JobState.APPLIED, JobState.VERIFIED):
            # A new request or a success makes an earlier failure notice stale.
            persistent_notification.async_dismiss(self._hass, _notification_id(job))
        self._record_history(job)
        for listener in list(self._job_listeners):
            listener(job)
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
        self._schedule_save()

    def _data_to_save(self) -> dict[str, Any]:
        # Called when the write happens: from now on a change needs a write of its own.
        self._save_due = None
        return {
            "jobs": {device_id: job.as_dict() for device_id, job in self._jobs.items()},
            "devices": {device_id: asdict(facts) for device_id, facts in self._facts.items()},
        }

    def _schedule_save(self, delay: float = JOBS_SAVE_DELAY) -> None:
        """Write the jobs and facts within `delay` seconds, once for every change until then.

        HA's `Store.async_delay_save` moves a pending write to the latest time asked for: called
        at every change of a stream that never pauses (telemetry of a large fleet, a wave's
        reports), it would never write. So a write already due no later is left as it is; it
        writes this change too, since it reads the state when it runs.
        """
        if self._unloaded:
            return  # Too late: the unload wrote the jobs, a reload may have read them since.
        now = self._hass.loop.time()
        if self._save_due is not None and self._save_due <= now + delay:
            return
        self._save_due = now + delay
        self._store.async_delay_save(self._data_to_save, delay)

    async def _async_save(self) -> None:
        await self._store.async_save(self._data_to_save())

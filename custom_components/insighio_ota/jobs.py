"""What the tracker keeps: OTA jobs, what it learned of each device, and its settings.

Plain records with their JSON round trip and the small rules that belong to them (when a job is
open, a device's usual wake interval, when a maintenance window opens). The state machine that
moves them is in `tracker.py`.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
import statistics
from typing import Any
import uuid

from homeassistant.util import dt as dt_util

from .const import (
    CONF_MIN_BATTERY_MV,
    CONF_NOTIFY_FAILURES,
    CONF_RETRY_CAP,
    CONF_SEEN_WITHIN_HOURS,
    CONF_TIMEOUT_WAKES,
    CONF_WINDOW_END,
    CONF_WINDOW_START,
    DEFAULT_MIN_BATTERY_MV,
    DEFAULT_NOTIFY_FAILURES,
    DEFAULT_RETRY_CAP,
    DEFAULT_SEEN_WITHIN_HOURS,
    DEFAULT_TIMEOUT_WAKES,
)


class JobState(StrEnum):
    """Where an OTA job is."""

    QUEUED = "queued"
    APPLIED = "applied"
    VERIFIED = "verified"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """The options of a config entry that shape OTA jobs."""

    notify_failures: bool = DEFAULT_NOTIFY_FAILURES
    retry_cap: int = DEFAULT_RETRY_CAP
    timeout_wakes: int = DEFAULT_TIMEOUT_WAKES
    seen_within_hours: int = DEFAULT_SEEN_WITHIN_HOURS
    min_battery_mv: int = DEFAULT_MIN_BATTERY_MV
    window_start: time | None = None
    window_end: time | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrackerSettings:
        """Read the settings from a config entry's options, defaults for what is missing."""
        return cls(
            notify_failures=bool(options.get(CONF_NOTIFY_FAILURES, DEFAULT_NOTIFY_FAILURES)),
            retry_cap=int(options.get(CONF_RETRY_CAP, DEFAULT_RETRY_CAP)),
            timeout_wakes=int(options.get(CONF_TIMEOUT_WAKES, DEFAULT_TIMEOUT_WAKES)),
            seen_within_hours=int(options.get(CONF_SEEN_WITHIN_HOURS, DEFAULT_SEEN_WITHIN_HOURS)),
            min_battery_mv=int(options.get(CONF_MIN_BATTERY_MV, DEFAULT_MIN_BATTERY_MV)),
            window_start=_parse_time(options.get(CONF_WINDOW_START)),
            window_end=_parse_time(options.get(CONF_WINDOW_END)),
        )

    def held_until(self, now: datetime) -> datetime | None:
        """Return when the entry's maintenance window next opens, None when `now` may publish."""
        return window_opening(now, self.window_start, self.window_end)


def window_opening(now: datetime, start: time | None, end: time | None) -> datetime | None:
    """Return when a maintenance window next opens, or None when `now` may publish.

    The window is in local time; a start after its end spans midnight (22:00-04:00).
    Without a window, or with start equal to end, every moment may publish.
    """
    if start is None or end is None or start == end:
        return None
    moment = now.time()
    inside = start <= moment < end if start < end else (moment >= start or moment < end)
    if inside:
        return None
    opening = now.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    return opening if opening > now else opening + timedelta(days=1)


def _parse_time(value: Any) -> time | None:
    """Return a "HH:MM[:SS]" option as a time, None when unset or unreadable."""
    if not value:
        return None
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        return None


@dataclass(slots=True)
class OtaJob:
    """One OTA request to one device and what became of it."""

    job_id: str
    device_id: str
    control_channel: str
    file_id: str
    file_type: str
    size: int
    version: str
    state: JobState
    requested_at: str
    updated_at: str
    # When a waiting job gives up: the queued timeout, then the end of the verify window.
    deadline: str | None = None
    # The application commit the package installs, when known: /stat can then verify it.
    sw_commit: str | None = None
    reason: str | None = None
    attempts: int = 0
    last_attempt_at: str | None = None
    # True once the broker echoed our retained request back: it sits there for the device.
    on_broker: bool = False
    # True when the request vanished without a report: the next /stat decides the outcome.
    request_gone: bool = False
    # True between the applied report and the /stat of the reboot (or the end of the window).
    awaiting_stat: bool = False
    # Set while HA holds the request for the maintenance window: nothing is published yet.
    held_until: str | None = None
    # The application commit the device reported before the request, to tell a /stat that
    # shows the package from one that shows what was already there.
    previous_commit: str | None = None
    foreign_reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """Return True while the job still waits for the device."""
        return self.state is JobState.QUEUED or (
            self.state is JobState.APPLIED and self.awaiting_stat
        )

    @property
    def unverified(self) -> bool:
        """Return True for an applied job that no /stat has confirmed in time."""
        return self.state is JobState.APPLIED and not self.awaiting_stat

    def as_dict(self) -> dict[str, Any]:
        """Return the job as JSON-ready data."""
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OtaJob:
        """Rebuild a stored job; one stored by the first release lacks id, type and size."""
        first_release = {"job_id": uuid.uuid4().hex[:12], "file_type": ".tar", "size": 0}
        return cls(**{**first_release, **data, "state": JobState(data["state"])})


@dataclass(slots=True)
class DeviceFacts:
    """What we know of a device from its messages, kept across restarts."""

    # The version label (and file id) of the last package the device confirmed it applied.
    installed_version: str | None = None
    installed_file_id: str | None = None
    # The software version of the first /stat after that confirmation. A later /stat with other
    # software means the device was changed outside HA, and the label no longer applies.
    confirmed_software: str | None = None
    stat: dict[str, Any] | None = None
    last_seen: str | None = None
    wake_intervals: list[float] = field(default_factory=list)
    battery_mv: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wake_interval(self) -> timedelta | None:
        """Return the device's usual time between wakes: the median is robust to gaps."""
        if not self.wake_intervals:
            return None
        return timedelta(seconds=statistics.median(self.wake_intervals))


def move(job: OtaJob, state: JobState, reason: str | None = None) -> None:
    """Put a job in a new state, stamped with the time it happened.

    A job starts queued and only ever moves out of the queue, so it is held for the maintenance
    window no more: a held job that ends (cancelled) or that the device answers anyway (a
    request of the same file still on the broker) has deadlines of its own, not the window's.
    """
    job.state = state
    job.reason = reason
    job.updated_at = dt_util.utcnow().isoformat()
    job.held_until = None

"""Simulated insighioNode (4.1.0) devices that speak MQTT and apply OTA packages.

Every device runs in its own thread and repeats the firmware's wake cycle: connect, publish
telemetry, publish ``/stat`` after a power-on or OTA boot, listen to its control topics for a
short window, act on the first message only, disconnect and sleep. The quirks of the real
firmware are kept on purpose (see protocol.md), because the integration must cope with them:
only the first control message counts, ``e`` must be the JSON integer 0, a failed download is
never cleared by the device, and a real gzip ``.tar.gz`` cannot be applied.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import logging
import os
from pathlib import Path
import queue
import socket
import tempfile
import threading
import time
from typing import Any, Literal, get_args
from urllib.parse import quote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulator.identities import (
    INITIAL_SW_BRANCH,
    INITIAL_SW_COMMIT,
    DeviceIdentity,
    ProjectIdentity,
)
from simulator.packages import PackageContents, PackageError, read_package

_LOGGER = logging.getLogger(__name__)

# MicroPython's machine.reset_cause() values, which the firmware reports as telemetry: a
# power-on, a wake from deep sleep, and the soft reset the firmware does after an OTA.
RESET_POWER_ON = 1
RESET_DEEP_SLEEP = 4
RESET_SOFT = 5

# The MicroPython base the firmware 4.1.0 images are built on; packages never change it.
FW_VERSION = (1, 26, 0)
FW_COMMIT = "v1.26.0"
FREE_DATA_FLASH = 4_000_000

# Time limits for talking to the broker and the console; a simulated device that hangs would
# make the tests hang with it.
_NETWORK_TIMEOUT = 10.0

STATUS_APPLIED = 1
STATUS_FAILED = 2
REASON_NO_SPACE = "not enough space"
REASON_NO_DOWNLOAD = "can not download"
REASON_NO_APPLY = "can not apply"

# How the devices chosen to fail (`DeviceSettings.failing_devices`) fail every OTA:
# `apply`: the package downloads but cannot be applied (reported and cleared at once);
# `download`: every download fails (reported, never cleared: retried at every wake);
# `space`: too little free flash, shown in /stat too (reported twice, never cleared).
FailureMode = Literal["apply", "download", "space"]
FAILURE_MODES: tuple[str, ...] = get_args(FailureMode)
# The free flash of a device failing with `space`: smaller than any package.
FAILING_FREE_FLASH = 256


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """Behaviour shared by all simulated devices of one run."""

    mqtt_host: str
    mqtt_port: int
    console_url: str | None
    wake_period: float = 30.0
    listen_window: float = 5.0
    free_flash: int = 1_000_000
    cellular: bool = False
    state_dir: Path | None = None
    reboot_delay: float = 1.0
    # Devices `failing_from` .. `failing_from + failing_devices - 1` (by index) fail every OTA.
    failing_devices: int = 0
    failing_from: int = 0
    failure: FailureMode = "apply"

    def fails(self, index: int) -> bool:
        """Return True when the device with this index fails every OTA."""
        return self.failing_from <= index < self.failing_from + self.failing_devices


@dataclass(frozen=True, slots=True)
class OtaRequest:
    """A pending OTA request as the firmware understands it."""

    file_id: str
    file_type: str
    size: int | float


class DownloadError(Exception):
    """The package could not be fetched; the device reports ``can not download``."""


class MqttError(Exception):
    """The broker could not be reached or refused the device."""


def load_version(state_dir: Path | None, device_id: str) -> tuple[str, str]:
    """Return the persisted (sw_branch, sw_commit) of a device, or the factory version."""
    if state_dir is not None:
        path = state_dir / f"{device_id}.json"
        try:
            data = json.loads(path.read_text())
            return str(data["sw_branch"]), str(data["sw_commit"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as err:
            _LOGGER.warning("ignoring unreadable state file %s: %s", path, err)
    return INITIAL_SW_BRANCH, INITIAL_SW_COMMIT


def save_version(state_dir: Path, device_id: str, sw_branch: str, sw_commit: str) -> None:
    """Persist a device's version atomically, so a crash never leaves a half-written file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"sw_branch": sw_branch, "sw_commit": sw_commit})
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        handle.write(payload)
    Path(tmp).replace(state_dir / f"{device_id}.json")


def parse_ota_request(payload: bytes) -> OtaRequest | None:
    """Parse an ``/ota`` payload the way the firmware does, or return None when it is ignored.

    The firmware reads ``e`` from the record's ``v`` and tests ``str(e) == "0"``: only the JSON
    integer 0 passes, while ``0.0``, ``"0"`` under ``vs`` or a missing record are ignored.
    """
    if not payload:
        return None
    try:
        records = json.loads(payload)
    except UnicodeDecodeError, ValueError:
        return None
    if not isinstance(records, list):
        return None
    by_name: dict[str, dict[str, Any]] = {}
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("n"), str):
            by_name.setdefault(record["n"], record)
    try:
        event = by_name["e"].get("v")
        file_id = by_name["i"]["vs"]
        file_type = by_name["t"]["vs"]
        size = by_name["s"]["v"]
    except KeyError:
        return None
    valid = (
        str(event) == "0"
        and isinstance(file_id, str)
        and isinstance(file_type, str)
        and isinstance(size, int | float)
        and not isinstance(size, bool)
    )
    return OtaRequest(file_id=file_id, file_type=file_type, size=size) if valid else None


def senml_status(status: int, file_id: str, reason: str | None = None) -> bytes:
    """Encode an OTA status report with the firmware's key order (value before name)."""
    records: list[dict[str, Any]] = [{"v": status, "n": "e"}, {"vs": file_id, "n": "i"}]
    if reason is not None:
        records.append({"vs": reason, "n": "m"})
    return json.dumps(records, separators=(",", ":")).encode()


class SimulatedDevice:
    """One device: its identity, its version and its wake loop."""

    def __init__(
        self,
        identity: DeviceIdentity,
        project: ProjectIdentity,
        settings: DeviceSettings,
        stop: threading.Event,
    ) -> None:
        """Prepare the device; :meth:`run` executes its wake loop until ``stop`` is set."""
        self.identity = identity
        self.project = project
        self.settings = settings
        self._stop = stop
        self.sw_branch, self.sw_commit = load_version(settings.state_dir, identity.id)
        self.failure: FailureMode | None = (
            settings.failure if settings.fails(identity.index) else None
        )
        self.free_flash = FAILING_FREE_FLASH if self.failure == "space" else settings.free_flash
        # The firmware sends /stat on every power-on boot; a failed first wake keeps it due.
        self._stat_due = True
        self._reset_cause = RESET_POWER_ON
        self._wake_started = time.monotonic()

    @property
    def _control_prefix(self) -> str:
        """Return the device's control topic prefix."""
        return f"channels/{self.project.control_channel}/messages/{self.identity.id}"

    @property
    def _ota_topic(self) -> str:
        """Return the device's ``/ota`` topic."""
        return f"{self._control_prefix}/ota"

    def run(self) -> None:
        """Wake, work and sleep until asked to stop."""
        while not self._stop.is_set():
            try:
                self.wake()
            except (MqttError, OSError) as err:
                _LOGGER.warning("%s: wake failed: %s", self.identity.name, err)
            except Exception:
                # A bug in one wake must not silently end the device's thread: the device would
                # vanish from a demo without a trace. Tracebacks carry no local values, so no key.
                _LOGGER.exception("%s: unexpected error during a wake", self.identity.name)
            if self._stop.wait(self.settings.wake_period):
                break

    def wake(self) -> None:
        """Run one wake cycle, including the reboot that follows an applied OTA."""
        self._wake_started = time.monotonic()
        rebooting = False
        client, messages = self._connect()
        try:
            self._publish_telemetry(client)
            if self._stat_due:
                self._publish_stat(client)
            message = self._listen(client, messages)
            if message is not None:
                rebooting = self._handle_first_message(client, message)
        finally:
            self._disconnect(client)
        self._reset_cause = RESET_DEEP_SLEEP
        if rebooting:
            self._reboot()

    def _reboot(self) -> None:
        """Reboot after an applied OTA: the new version shows in the next ``/stat``."""
        _LOGGER.info("%s: rebooting after the OTA", self.identity.name)
        self._stat_due = True
        self._reset_cause = RESET_SOFT
        if self._stop.wait(self.settings.reboot_delay):
            return
        self._wake_started = time.monotonic()
        client, _ = self._connect()
        try:
            self._publish_telemetry(client)
            self._publish_stat(client)
        finally:
            self._disconnect(client)
        self._reset_cause = RESET_DEEP_SLEEP

    def _connect(self) -> tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]:
        """Connect with the device's id and key and start paho's network thread."""
        messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        connected = threading.Event()
        outcome: list[str] = []

        def on_connect(
            _client: mqtt.Client,
            _userdata: object,
            _flags: mqtt.ConnectFlags,
            reason_code: ReasonCode,
            _properties: Properties | None,
        ) -> None:
            if reason_code.is_failure:
                outcome.append(str(reason_code))
            connected.set()

        def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            messages.put(msg)

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.identity.id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(self.identity.id, self.identity.key)
        client.on_connect = on_connect
        client.on_message = on_message
        client.connect(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=60)
        client.loop_start()
        if not connected.wait(_NETWORK_TIMEOUT) or outcome:
            self._disconnect(client)
            raise MqttError(f"connection refused: {outcome[0] if outcome else 'timeout'}")
        return client, messages

    def _disconnect(self, client: mqtt.Client) -> None:
        """Disconnect cleanly and stop paho's network thread."""
        client.disconnect()
        client.loop_stop()

    def _publish(
        self, client: mqtt.Client, topic: str, payload: bytes, *, retain: bool = False
    ) -> None:
        """Publish with QoS 1 and wait for the broker's acknowledgement.

        Waiting keeps the order of a wake's messages observable and makes sure a report is out
        before the device disconnects or reboots.
        """
        info = client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(_NETWORK_TIMEOUT)
        except (RuntimeError, ValueError) as err:
            raise MqttError(f"publish failed: {err}") from err
        if not info.is_published():
            raise MqttError("publish not acknowledged in time")

    def _publish_telemetry(self, client: mqtt.Client) -> None:
        """Publish a measurement like the firmware does at every wake."""
        uptime_ms = int((time.monotonic() - self._wake_started) * 1000)
        records = [
            {
                "n": "reset_cause",
                "bn": f"{self.identity.serial}-",
                "bt": int(time.time()),
                "v": self._reset_cause,
            },
            {"n": "uptime", "u": "ms", "v": uptime_ms},
            {"n": "vbatt", "u": "mV", "v": 4100},
        ]
        topic = f"channels/{self.project.data_channel}/messages/{self.identity.id}"
        self._publish(client, topic, json.dumps(records, separators=(",", ":")).encode())

    def stat_records(self) -> list[dict[str, Any]]:
        """Return the ``/stat`` records, value before name as the firmware orders them."""
        major, minor, patch = FW_VERSION
        records: list[dict[str, Any]] = [
            {"vs": self.sw_branch, "n": "sw_branch"},
            {"vs": self.sw_commit, "n": "sw_commit"},
            {"vs": "", "n": "sw_custom_branch"},
            {"vs": "", "n": "sw_custom_commit"},
            {"vs": self.identity.hw_version, "n": "hw_version"},
            {"v": major, "n": "fw_v_major"},
            {"v": minor, "n": "fw_v_minor"},
            {"v": patch, "n": "fw_v_patch"},
            {"vs": FW_COMMIT, "n": "fw_v_commit"},
            {"v": self.free_flash, "n": "free_flash"},
            {"v": FREE_DATA_FLASH, "n": "free_data_flash"},
            {"vs": self.identity.serial, "n": "serial"},
            # The platform string is inferred, not seen: it tells Wi-Fi and cellular boards apart.
            {"vs": "cellular" if self.settings.cellular else "wifi", "n": "platform"},
        ]
        if self.settings.cellular:
            # Fake but well-formed identifiers, derived from the serial so they stay stable.
            digits = str(int(self.identity.serial, 16)).zfill(15)
            records += [
                {"vs": "20201" + digits[:10], "n": "cell_imsi"},
                {"vs": "8930" + digits[:15], "n": "cell_iccid"},
                {"vs": "86" + digits[:13], "n": "cell_imei"},
            ]
        return records

    def _publish_stat(self, client: mqtt.Client) -> None:
        """Publish ``/stat`` and mark it sent."""
        payload = json.dumps(self.stat_records(), separators=(",", ":")).encode()
        self._publish(client, f"{self._control_prefix}/stat", payload)
        self._stat_due = False
        _LOGGER.info("%s: sent /stat (%s@%s)", self.identity.name, self.sw_branch, self.sw_commit)

    def _listen(
        self, client: mqtt.Client, messages: queue.Queue[mqtt.MQTTMessage]
    ) -> mqtt.MQTTMessage | None:
        """Subscribe to the control topics and return the first message of the window.

        Only the first message counts, as in the firmware: a retained ``/config`` (or any other
        retained control message) delivered before ``/ota`` starves the OTA request.
        """
        client.subscribe(f"{self._control_prefix}/#", qos=1)
        deadline = time.monotonic() + self.settings.listen_window
        while (remaining := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            try:
                return messages.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
        return None

    def _handle_first_message(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> bool:
        """Act on the first control message; return True when the device must reboot."""
        if message.topic != self._ota_topic:
            subtopic = message.topic.removeprefix(self._control_prefix)
            _LOGGER.info(
                "%s: first control message is on %s, not /ota: nothing else is read this wake",
                self.identity.name,
                subtopic,
            )
            return False
        request = parse_ota_request(message.payload)
        if request is None:
            if message.payload:
                _LOGGER.info(
                    "%s: ignoring an /ota message that is not a pending request: %r",
                    self.identity.name,
                    message.payload[:200],
                )
            return False
        return self._perform_ota(client, request)

    def _report(self, client: mqtt.Client, file_id: str, status: int, reason: str | None) -> None:
        """Publish a status report (QoS 1, not retained)."""
        self._publish(client, self._ota_topic, senml_status(status, file_id, reason))
        _LOGGER.info(
            "%s: reported e=%d for %s%s",
            self.identity.name,
            status,
            file_id,
            f" ({reason})" if reason else "",
        )

    def _clear(self, client: mqtt.Client) -> None:
        """Clear the retained request with an empty retained publish."""
        self._publish(client, self._ota_topic, b"", retain=True)

    def _perform_ota(self, client: mqtt.Client, request: OtaRequest) -> bool:
        """Download and apply a package; return True when it was applied."""
        file_id = request.file_id
        _LOGGER.info(
            "%s: OTA request for %s%s (%s bytes)",
            self.identity.name,
            file_id,
            request.file_type,
            request.size,
        )
        if request.size > self.free_flash:
            # The firmware reports the space problem and then, falling through, a failed
            # download; it does not clear, so the request is retried at every wake.
            self._report(client, file_id, STATUS_FAILED, REASON_NO_SPACE)
            self._report(client, file_id, STATUS_FAILED, REASON_NO_DOWNLOAD)
            return False
        try:
            data = self._download(file_id)
        except DownloadError as err:
            _LOGGER.warning("%s: download of %s failed: %s", self.identity.name, file_id, err)
            self._report(client, file_id, STATUS_FAILED, REASON_NO_DOWNLOAD)
            return False
        if self.settings.cellular and len(data) != request.size:
            # Cellular (BG600) boards compare the received length with the request's size.
            _LOGGER.warning(
                "%s: received %d bytes of %s, the request said %s",
                self.identity.name,
                len(data),
                file_id,
                request.size,
            )
            self._report(client, file_id, STATUS_FAILED, REASON_NO_DOWNLOAD)
            return False
        try:
            contents = self._read_package(data, request.file_type)
        except PackageError as err:
            _LOGGER.warning("%s: cannot apply %s: %s", self.identity.name, file_id, err)
            self._report(client, file_id, STATUS_FAILED, REASON_NO_APPLY)
            self._clear(client)
            return False
        for warning in contents.warnings:
            _LOGGER.warning("%s: %s", self.identity.name, warning)
        for junk in contents.junk_files:
            _LOGGER.warning(
                "%s: wrote junk file %r from a PAX/GNU extension header", self.identity.name, junk
            )
        _LOGGER.info(
            "%s: applied %s: %d files, %d directories",
            self.identity.name,
            file_id,
            len(contents.files),
            len(contents.directories),
        )
        if contents.sw_commit is not None:
            self.sw_commit = contents.sw_commit
            if contents.sw_branch is not None:
                self.sw_branch = contents.sw_branch
            if self.settings.state_dir is not None:
                save_version(
                    self.settings.state_dir, self.identity.id, self.sw_branch, self.sw_commit
                )
        self._report(client, file_id, STATUS_APPLIED, None)
        self._clear(client)
        return True

    def _read_package(self, data: bytes, file_type: str) -> PackageContents:
        """Read a package as the firmware applies it; a device set to fail cannot apply any."""
        if self.failure == "apply":
            raise PackageError("this device is set to fail applying every package")
        return read_package(data, file_type)

    def _download(self, file_id: str) -> bytes:
        """Fetch a package with an HTTP/1.0 GET over a raw socket, like the firmware.

        The URL holds the device key, so neither it nor the query appears in any log line.
        """
        if self.failure == "download":
            raise DownloadError("this device is set to fail every download")
        if not self.settings.console_url:
            raise DownloadError("no console URL configured")
        url = urlsplit(self.settings.console_url)
        if url.scheme not in ("http", "") or url.hostname is None:
            raise DownloadError(f"unsupported console URL scheme {url.scheme!r}")
        host, port = url.hostname, url.port or 80
        query = "&".join(
            f"{name}={quote(value, safe='')}"
            for name, value in (
                ("fuid", file_id),
                ("did", self.identity.id),
                ("dk", self.identity.key),
                ("cid", self.project.control_channel),
            )
        )
        path = f"{url.path.rstrip('/')}/mf-rproxy/packages/download?{query}"
        host_header = f"[{host}]" if ":" in host else host
        request = f"GET {path} HTTP/1.0\r\nHost: {host_header}:{port}\r\n\r\n".encode()
        chunks: list[bytes] = []
        try:
            with socket.create_connection((host, port), timeout=_NETWORK_TIMEOUT) as sock:
                sock.sendall(request)
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as err:
            raise DownloadError(f"connection to {host}:{port} failed: {err}") from err
        return _parse_http_response(b"".join(chunks))


def _parse_http_response(raw: bytes) -> bytes:
    """Return the body of a 200 response, as the firmware's minimal HTTP client reads it."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        raise DownloadError("malformed HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[1].isdigit():
        raise DownloadError("malformed HTTP status line")
    if status_parts[1] != "200":
        raise DownloadError(f"HTTP status {status_parts[1]}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        # The firmware does not decode chunked bodies: it would store the chunk framing and fail
        # to apply the result, which is why the console must send Content-Length instead.
        _LOGGER.warning("the console sent a chunked body; the firmware stores it undecoded")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and len(body) < int(length):
        raise DownloadError(f"truncated body: {len(body)} of {length} bytes")
    return body


class DeviceFleet:
    """Run a set of simulated devices, one thread each."""

    def __init__(
        self,
        identities: list[DeviceIdentity],
        project: ProjectIdentity,
        settings: DeviceSettings,
    ) -> None:
        """Create the devices; :meth:`start` starts their wake loops."""
        self._stop = threading.Event()
        self.devices = [
            SimulatedDevice(identity, project, settings, self._stop) for identity in identities
        ]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start every device's thread."""
        for device in self.devices:
            thread = threading.Thread(
                target=device.run, name=f"device-{device.identity.index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        """Ask every device to stop and wait until they have disconnected."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        self._threads.clear()

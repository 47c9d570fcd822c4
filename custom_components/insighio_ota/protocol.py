"""The insigh.io OTA wire protocol: SenML records, OTA requests and reports, `/stat`, topics.

This module is pure: it imports nothing from Home Assistant, so the rules of the contract in
`protocol.md` can be read and tested on their own. Everything here either builds exactly what the
insighioNode firmware expects, or parses what it sends and raises `ProtocolError` with a message
that says what was wrong.
"""

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
import json
import math
import re
from typing import Any, Final

OTA_SUFFIX: Final = "ota"
STAT_SUFFIX: Final = "stat"

# The reasons the firmware puts in a failed report. Others are kept verbatim when they appear.
REASON_NOT_ENOUGH_SPACE: Final = "not enough space"
REASON_CANNOT_DOWNLOAD: Final = "can not download"
REASON_CANNOT_APPLY: Final = "can not apply"

# Any device of a project can write any device's topics: bound what one message can make us keep.
MAX_TEXT_LENGTH: Final = 256
MAX_EXTRA_RECORDS: Final = 32
# Home Assistant stores JSON with orjson, which holds integers of 64 bits at most.
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1

type SenmlValue = float | int | str | bool
# What an MQTT client hands over: HA gives `str` or `bytes`, paho gives `bytes` or `bytearray`.
type Payload = str | bytes | bytearray


_FILE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ProtocolError(ValueError):
    """Raised for anything that does not follow the insigh.io OTA protocol."""


class OtaCode(IntEnum):
    """The values of the `e` record on the `/ota` topic."""

    PENDING = 0
    APPLIED = 1
    FAILED = 2
    # Defined in a firmware comment but never sent by any known firmware.
    CANCELLED = 3


class ControlKind(StrEnum):
    """The control topics this integration reads or writes."""

    OTA = OTA_SUFFIX
    STAT = STAT_SUFFIX


@dataclass(frozen=True, slots=True)
class OtaRequest:
    """An OTA request as the firmware checks it before it downloads anything."""

    file_id: str
    file_type: str
    size: int

    def __post_init__(self) -> None:
        """Refuse a request the firmware would ignore or misapply."""
        if not isinstance(self.file_id, str) or not self.file_id.strip():
            raise ProtocolError("the file id must be a non-empty string")
        # The firmware puts the id unescaped into its download URL and its file path.
        if not _FILE_ID.fullmatch(self.file_id):
            raise ProtocolError(
                f"the file id may hold only letters, digits, '-' and '_' (got {self.file_id!r})"
            )
        if (
            not isinstance(self.file_type, str)
            or len(self.file_type) < 2
            or not self.file_type.startswith(".")
        ):
            raise ProtocolError(
                f"the file type must start with a dot, like '.tar' (got {self.file_type!r})"
            )
        # `bool` is an `int` in Python, but `true` is not a size the firmware understands.
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 < self.size <= MAX_INT
        ):
            raise ProtocolError(
                f"the size must be a whole number of bytes above 0 (got {self.size!r})"
            )

    def to_payload(self) -> str:
        """Return the SenML payload to publish, retained, on the device's `/ota` topic.

        `e` must be the integer 0: the firmware compares `str(e) == "0"`, so `0.0` or `"0"`
        would be ignored, and an ignored request is re-read at every wake forever.
        """
        return json.dumps(
            [
                {"n": "e", "v": int(OtaCode.PENDING)},
                {"n": "i", "vs": self.file_id},
                {"n": "t", "vs": self.file_type},
                {"n": "s", "v": self.size},
            ],
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class OtaMessage:
    """A non-empty message seen on an `/ota` topic: our own request echoed, or a device report."""

    code: int
    file_id: str
    reason: str | None = None
    file_type: str | None = None
    size: int | None = None

    @property
    def is_request(self) -> bool:
        """Return True for a pending request (ours, replayed by the broker), not a report."""
        return self.code == OtaCode.PENDING

    @property
    def is_applied(self) -> bool:
        """Return True for the device's report that it applied the package."""
        return self.code == OtaCode.APPLIED

    @property
    def is_failed(self) -> bool:
        """Return True for the device's report that the OTA failed."""
        return self.code == OtaCode.FAILED


@dataclass(frozen=True, slots=True)
class DeviceStat:
    """The facts a device publishes on `/stat` after every boot."""

    sw_branch: str | None = None
    sw_commit: str | None = None
    sw_custom_branch: str | None = None
    sw_custom_commit: str | None = None
    hw_version: str | None = None
    fw_version: str | None = None
    fw_commit: str | None = None
    free_flash: int | None = None
    free_data_flash: int | None = None
    serial: str | None = None
    platform: str | None = None
    # Records we do not model (cellular identifiers among them) are kept for diagnostics,
    # which must redact them.
    extra: dict[str, SenmlValue] = field(default_factory=dict)

    @property
    def software_version(self) -> str | None:
        """Return `<sw_branch>@<sw_commit>`, the application version packages change."""
        if self.sw_commit is None:
            return None
        return f"{self.sw_branch or 'unknown'}@{self.sw_commit}"


@dataclass(frozen=True, slots=True)
class ControlTopic:
    """The parts of a device control topic."""

    control_channel: str
    device_id: str
    kind: ControlKind


def _check_id(value: str, what: str) -> str:
    """Return an identifier that is safe to place inside a topic."""
    if not value or any(char in value for char in "/+#\x00"):
        raise ProtocolError(f"the {what} {value!r} cannot be part of an MQTT topic")
    return value


def control_topic(control_channel: str, device_id: str, kind: ControlKind) -> str:
    """Return `channels/<ctrl>/messages/<device-id>/<kind>`."""
    channel = _check_id(control_channel, "control channel")
    device = _check_id(device_id, "device id")
    return f"channels/{channel}/messages/{device}/{kind}"


def ota_topic(control_channel: str, device_id: str) -> str:
    """Return the device's `/ota` topic (requests, reports and clears)."""
    return control_topic(control_channel, device_id, ControlKind.OTA)


def stat_topic(control_channel: str, device_id: str) -> str:
    """Return the device's `/stat` topic."""
    return control_topic(control_channel, device_id, ControlKind.STAT)


def control_subscription(control_channel: str, kind: ControlKind) -> str:
    """Return the wildcard topic that matches one kind of control topic of every device."""
    return f"channels/{_check_id(control_channel, 'control channel')}/messages/+/{kind}"


def parse_control_topic(topic: str) -> ControlTopic:
    """Split a control topic into channel, device id and kind."""
    parts = topic.split("/")
    if (
        len(parts) != 5
        or parts[0] != "channels"
        or parts[2] != "messages"
        or not parts[1]
        or not parts[3]
    ):
        raise ProtocolError(f"not a device control topic: {topic!r}")
    try:
        kind = ControlKind(parts[4])
    except ValueError:
        raise ProtocolError(f"not an OTA or stat topic: {topic!r}") from None
    return ControlTopic(control_channel=parts[1], device_id=parts[3], kind=kind)


def telemetry_subscription(data_channel: str) -> str:
    """Return the wildcard topic of every device's telemetry on a data channel."""
    return f"channels/{_check_id(data_channel, 'data channel')}/messages/+"


def parse_telemetry_topic(topic: str) -> str:
    """Return the device id of a telemetry topic (`channels/<data>/messages/<device-id>`)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "channels" or parts[2] != "messages" or not all(parts):
        raise ProtocolError(f"not a telemetry topic: {topic!r}")
    return parts[3]


def _decode(payload: Payload) -> str:
    """Return the payload as text."""
    if isinstance(payload, (bytes, bytearray)):
        try:
            return bytes(payload).decode()
        except UnicodeDecodeError:
            raise ProtocolError("the payload is not UTF-8 text") from None
    return payload


def _load_pack(payload: Payload) -> list[dict[str, Any]]:
    """Return the records of a SenML pack, checking only that it is a list of objects."""
    text = _decode(payload).strip()
    if not text:
        raise ProtocolError("the payload is empty")
    try:
        pack = json.loads(text)
    except ValueError:
        raise ProtocolError("the payload is not JSON") from None
    except RecursionError:
        # Deeply nested JSON exhausts the parser's stack; it is no SenML either.
        raise ProtocolError("the payload is nested too deeply") from None
    if not isinstance(pack, list):
        raise ProtocolError("a SenML payload must be a JSON list of records")
    if not all(isinstance(record, dict) for record in pack):
        raise ProtocolError("every SenML record must be a JSON object")
    return pack


def _values_by_name(
    pack: list[dict[str, Any]], checked: frozenset[str] = frozenset()
) -> dict[str, SenmlValue]:
    """Return each named record's value.

    Records are matched by `n` and their value may sit under `v`, `vs` or `vb`, in any key
    order. A base name (`bn`) is not prepended: the control topics carry none, and telemetry
    names are used as they come. When a name repeats, the last record wins, as in SenML.
    """
    records: dict[str, SenmlValue] = {}
    for record in pack:
        name = record.get("n")
        if not isinstance(name, str):
            # A record without a name may only carry base fields, such as `bn` or `bt`.
            continue
        for value_key in ("v", "vs", "vb"):
            if value_key in record:
                value = record[value_key]
                if _is_senml_value(value):
                    records[_utf8(name)] = _utf8(value) if isinstance(value, str) else value
                elif name in checked:
                    raise ProtocolError(f"record {name!r} has a value of the wrong kind")
                # Any other unreadable record is skipped like an unknown one: one odd extra
                # field must not cost the report or stat around it.
                break
    return records


def _utf8(text: str) -> str:
    r"""Return text that can be encoded as UTF-8, with `?` for each lone surrogate.

    A JSON escape (`"\ud800"`) can put half of a surrogate pair into a string although the
    payload itself is valid UTF-8. Such a string cannot be written by Home Assistant's JSON
    encoder, so a reason or a /stat value holding one would make every later save of the jobs
    fail. Replacing the halves keeps the rest of the text, as for any other odd character.
    """
    if text.isascii():
        return text
    return text.encode("utf-8", errors="replace").decode()


def parse_senml(payload: Payload) -> dict[str, SenmlValue]:
    """Return the records of a SenML payload by name, with their value."""
    return _values_by_name(_load_pack(payload))


def _is_senml_value(value: Any) -> bool:
    """Return True for a JSON scalar SenML allows (finite numbers, strings, booleans).

    SenML numbers are IEEE doubles; an integer beyond 64 bits is none, and Home Assistant's
    JSON encoder could not store it (every later save of the tracker would fail).
    """
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return MIN_INT <= value <= MAX_INT
    return isinstance(value, (str, bool))


def _as_int(value: SenmlValue | None, what: str) -> int | None:
    """Return an integral number as `int`, None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{what} must be a number (got {value!r})")
    if isinstance(value, float) and not value.is_integer():
        raise ProtocolError(f"{what} must be a whole number (got {value!r})")
    number = int(value)
    if not MIN_INT <= number <= MAX_INT:
        # A float such as 1e300 is whole, but no count a device reports, nor storable.
        raise ProtocolError(f"{what} is out of range (got {value!r})")
    return number


def _as_str(value: SenmlValue | None) -> str | None:
    """Return a value as text, None when absent."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


_OTA_RECORDS: Final = frozenset({"e", "i", "t", "s", "m"})


def parse_ota_message(payload: Payload) -> OtaMessage | None:
    """Parse a message seen on an `/ota` topic.

    Returns None for an empty payload, which clears a retained request. Raises `ProtocolError`
    for anything that is not a request or a report.
    """
    if not _decode(payload).strip():
        return None
    pack = _load_pack(payload)
    records = _values_by_name(pack, _OTA_RECORDS)
    if "e" not in records:
        raise ProtocolError("the OTA message has no 'e' record")
    code = _as_int(records["e"], "the 'e' record")
    assert code is not None  # noqa: S101 - "e" is present, so there is a value.
    file_id = records.get("i")
    if not isinstance(file_id, str) or not file_id:
        raise ProtocolError("the OTA message has no file id ('i' record)")
    # No id of ours is that long, and a foreign one is kept (and shown) only for diagnosis.
    file_id = file_id[:MAX_TEXT_LENGTH]
    # The console documentation prints the reason as {"m": "i", "vs": ...}, a typo that
    # parse_senml cannot see since that record has no `n`. Accept it as the reason too.
    # An empty reason is no reason, whichever record it came in.
    reason = _bounded(_as_str(records.get("m")) or _reason_from_typo_record(pack) or None)
    file_type = records.get("t")
    size = _as_int(records.get("s"), "the 's' record") if "s" in records else None
    return OtaMessage(
        code=code,
        file_id=file_id,
        reason=reason,
        file_type=file_type if isinstance(file_type, str) else None,
        size=size,
    )


def _reason_from_typo_record(pack: list[dict[str, Any]]) -> str | None:
    """Return the reason of a `{"m": "i", "vs": ...}` record, the console docs' variant."""
    for record in pack:
        if "n" not in record and record.get("m") == "i" and isinstance(record.get("vs"), str):
            return _utf8(record["vs"])
    return None


_STAT_TEXT_FIELDS: Final = (
    "sw_branch",
    "sw_commit",
    "sw_custom_branch",
    "sw_custom_commit",
    "hw_version",
    "serial",
    "platform",
)
_STAT_KNOWN: Final = frozenset(
    {
        *_STAT_TEXT_FIELDS,
        "fw_v_major",
        "fw_v_minor",
        "fw_v_patch",
        "fw_v_commit",
        "free_flash",
        "free_data_flash",
    }
)


def _bounded(text: str | None) -> str | None:
    """Return text cut to MAX_TEXT_LENGTH characters."""
    return text[:MAX_TEXT_LENGTH] if text is not None else None


def parse_stat(payload: Payload) -> DeviceStat:
    """Parse a `/stat` payload; unknown records are kept in `extra`."""
    records = _values_by_name(_load_pack(payload), _STAT_KNOWN)
    if not records:
        raise ProtocolError("the stat message has no named records")
    text = {name: _bounded(_as_str(records.get(name))) for name in _STAT_TEXT_FIELDS}
    fw_parts = [
        _as_int(records.get(f"fw_v_{part}"), f"fw_v_{part}") for part in ("major", "minor", "patch")
    ]
    fw_version = (
        ".".join(str(part) for part in fw_parts) if all(p is not None for p in fw_parts) else None
    )
    unknown = [(name, value) for name, value in records.items() if name not in _STAT_KNOWN]
    return DeviceStat(
        **text,
        fw_version=_bounded(fw_version),
        fw_commit=_bounded(_as_str(records.get("fw_v_commit"))),
        free_flash=_as_int(records.get("free_flash"), "free_flash"),
        free_data_flash=_as_int(records.get("free_data_flash"), "free_data_flash"),
        extra={
            name[:MAX_TEXT_LENGTH]: value[:MAX_TEXT_LENGTH] if isinstance(value, str) else value
            for name, value in unknown[:MAX_EXTRA_RECORDS]
        },
    )


# The base name insigh.io firmware gives its telemetry: the device's serial (its Wi-Fi MAC, 12 hex
# characters) and a dash, on the first record.
_TELEMETRY_BASE_NAME: Final = re.compile(r"([0-9A-Fa-f]{12})-")


def parse_telemetry_serial(payload: Payload) -> str:
    """Return the serial (lower case) an insigh.io telemetry payload names in its base name.

    Raises `ProtocolError` for a payload that is not SenML with the firmware's `<serial>-` base
    name: other traffic on a data channel is not an insigh.io device's telemetry.
    """
    pack = _load_pack(payload)
    base_name = next((record["bn"] for record in pack if "bn" in record), None)
    if not isinstance(base_name, str) or not (match := _TELEMETRY_BASE_NAME.fullmatch(base_name)):
        raise ProtocolError("the telemetry has no '<serial>-' base name")
    if not _values_by_name(pack):
        raise ProtocolError("the telemetry has no named records")
    return match.group(1).lower()

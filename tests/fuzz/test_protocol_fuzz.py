"""Property tests of `protocol.py`: whatever a broker delivers, a parser returns or refuses.

For any payload or topic, each parser returns a value or raises `ProtocolError`, nothing else.
What it returns keeps the promises the tracker relies on: texts cut to `MAX_TEXT_LENGTH`, at most
`MAX_EXTRA_RECORDS` unknown /stat records, numbers that are numbers, and values Home Assistant's
`Store` can write (a JSON escape can smuggle a lone surrogate into a string, which no JSON
encoder of HA accepts). The codecs round trip: a request we build parses back to itself, a topic
we build splits back into its parts.
"""

import json
import math
from typing import Any

from homeassistant.helpers.json import json_bytes
from hypothesis import example, given, strategies as st
import pytest

from custom_components.insighio_ota.protocol import (
    MAX_EXTRA_RECORDS,
    MAX_INT,
    MAX_TEXT_LENGTH,
    MIN_INT,
    ControlKind,
    ControlTopic,
    DeviceStat,
    OtaMessage,
    OtaRequest,
    ProtocolError,
    control_subscription,
    control_topic,
    parse_control_topic,
    parse_ota_message,
    parse_senml,
    parse_stat,
    parse_telemetry_topic,
    telemetry_subscription,
)

from .budget import fuzz_settings
from .strategies import (
    IDS,
    LONG_TEXT,
    TEXT,
    encoded,
    ota_packs,
    payloads,
    stat_packs,
    topics,
)

# The characters the firmware allows in a file id (it puts the id unescaped into a URL).
FILE_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
FILE_TYPES = st.sampled_from([".tar", ".tar.gz"]) | st.text(min_size=1, max_size=20).map(
    lambda text: f".{text}"
)


def _storable(value: Any) -> None:
    """Fail unless HA's Store can write `value` (it encodes with orjson, as HA does)."""
    json_bytes(value)


def _is_senml_value(value: Any) -> bool:
    """Return True for what a parser may keep: a finite float, a 64-bit int, text, a boolean."""
    if isinstance(value, int) and not isinstance(value, bool):
        return MIN_INT <= value <= MAX_INT
    return isinstance(value, (bool, str)) or (isinstance(value, float) and math.isfinite(value))


def _utf8(value: Any) -> Any:
    """Return a string as the parsers keep it: each lone surrogate (a JSON escape) made `?`."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace").decode()
    return value


def _text(payload: str | bytes | bytearray) -> str | None:
    """Return the payload as text, None when it is not UTF-8."""
    if isinstance(payload, str):
        return payload
    try:
        return bytes(payload).decode()
    except UnicodeDecodeError:
        return None


# --- SenML in general ------------------------------------------------------------------------


@fuzz_settings("senml")
@given(payloads())
@example(b"\xff\xfe")
@example("[" * 100_000 + "]" * 100_000)
@example('[{"n": "vbatt", "v": NaN}, {"n": "x", "v": Infinity}]')
def test_senml_returns_named_scalars_or_refuses(payload: Any) -> None:
    """Every value kept is a finite number, a string or a boolean, under the name it came with."""
    try:
        records = parse_senml(payload)
    except ProtocolError:
        return
    pack = json.loads(_text(payload) or "")
    assert isinstance(pack, list)
    # Telemetry values end up in what the tracker stores (the battery level).
    _storable(records)
    for name, value in records.items():
        assert isinstance(name, str)
        assert _is_senml_value(value), (name, value)
        carriers = [r for r in pack if _utf8(r.get("n")) == name]
        assert any(
            type(value) is type(r.get(key)) and value == _utf8(r.get(key))
            for r in carriers
            for key in ("v", "vs", "vb")
        )


# --- /ota: requests and reports --------------------------------------------------------------


def _check_ota_message(message: OtaMessage) -> None:
    """Check the promises of a parsed /ota message."""
    assert isinstance(message.code, int)
    assert not isinstance(message.code, bool)
    assert isinstance(message.file_id, str)
    assert 0 < len(message.file_id) <= MAX_TEXT_LENGTH
    assert message.reason is None or (
        isinstance(message.reason, str) and len(message.reason) <= MAX_TEXT_LENGTH
    )
    assert message.file_type is None or isinstance(message.file_type, str)
    assert message.size is None or (
        isinstance(message.size, int) and not isinstance(message.size, bool)
    )
    # The tracker keeps the file id and the reason in its jobs and writes them to its Store.
    _storable({"file_id": message.file_id, "reason": message.reason})


@fuzz_settings("ota_message")
@given(st.one_of(payloads(), encoded(ota_packs())))
@example('[{"n": "e", "v": 2}, {"n": "i", "vs": "a"}, {"n": "m", "vs": "\\ud800"}]')
@example(json.dumps([{"n": "e", "v": 2}, {"n": "i", "vs": "x" * 10_000}]))
@example('[{"n": "e", "v": 1e300}, {"n": "i", "vs": "a"}]')
@example('[{"n": "e", "v": 1.5}, {"n": "i", "vs": "a"}]')
@example('[{"n": "e", "vb": true}, {"n": "i", "vs": "a"}]')
def test_ota_message_is_a_bounded_message_or_refused(payload: Any) -> None:
    """An /ota payload parses to a clear (None), a well-typed bounded message, or an error."""
    try:
        message = parse_ota_message(payload)
    except ProtocolError:
        return
    if message is None:
        text = _text(payload)
        assert text is not None
        assert not text.strip()
        return
    _check_ota_message(message)


@fuzz_settings("ota_report_shape")
@given(
    code=st.integers(-5, 5) | st.integers(),
    file_id=FILE_IDS | TEXT.filter(bool) | LONG_TEXT,
    reason=st.none() | TEXT | LONG_TEXT,
    typo=st.booleans(),
    firmware_order=st.booleans(),
)
@example(code=2, file_id="a", reason="", typo=True, firmware_order=False)
@example(code=2**64, file_id="a", reason=None, typo=False, firmware_order=False)
def test_firmware_reports_parse_to_what_they_say(
    code: int, file_id: str, reason: str | None, typo: bool, firmware_order: bool
) -> None:
    """A report as the firmware (or the console docs) writes it gives back its code, id, reason."""
    records: list[dict[str, Any]] = [{"n": "e", "v": code}, {"n": "i", "vs": file_id}]
    if reason is not None:
        # The console documentation's variant names the reason record `"m": "i"`.
        records.append({"m": "i", "vs": reason} if typo else {"n": "m", "vs": reason})
    if firmware_order:
        records = [dict(reversed(list(record.items()))) for record in records]
    payload = json.dumps(records)
    try:
        message = parse_ota_message(payload)
    except ProtocolError:
        # Refused only for an id the firmware could not have put in a request (an empty one),
        # or a code no device sends that HA could not store either.
        assert not file_id or not MIN_INT <= code <= MAX_INT
        return
    assert message is not None
    _check_ota_message(message)
    assert message.code == code
    assert message.file_id == _utf8(file_id)[:MAX_TEXT_LENGTH]
    assert message.reason == ((reason or None) and _utf8(reason)[:MAX_TEXT_LENGTH])


@fuzz_settings("ota_request_round_trip")
@given(
    file_id=FILE_IDS,
    file_type=FILE_TYPES,
    size=st.integers(min_value=1, max_value=MAX_INT),
    as_bytes=st.booleans(),
)
def test_request_round_trip(file_id: str, file_type: str, size: int, as_bytes: bool) -> None:
    """The request we publish is read back (as our echo) exactly as it was built."""
    payload = OtaRequest(file_id, file_type, size).to_payload()
    message = parse_ota_message(payload.encode() if as_bytes else payload)
    assert message == OtaMessage(code=0, file_id=file_id, file_type=file_type, size=size)
    assert message.is_request


@fuzz_settings("request_fields")
@given(
    file_id=FILE_IDS | TEXT | LONG_TEXT,
    file_type=FILE_TYPES | TEXT,
    size=st.integers() | st.booleans() | st.floats() | TEXT,
)
@example(file_id="a", file_type=".tar", size=MAX_INT + 1)
def test_request_refuses_what_the_firmware_would_ignore(
    file_id: Any, file_type: Any, size: Any
) -> None:
    """A request is built only from an id, type and size the firmware acts on; else refused."""
    try:
        request = OtaRequest(file_id, file_type, size)
    except ProtocolError:
        return
    assert 1 <= len(request.file_id) <= 64
    assert request.file_type.startswith(".")
    assert len(request.file_type) >= 2
    assert type(request.size) is int
    assert request.size > 0
    assert parse_ota_message(request.to_payload()) == OtaMessage(
        code=0, file_id=file_id, file_type=file_type, size=size
    )


# --- /stat -----------------------------------------------------------------------------------


def _check_stat(stat: DeviceStat) -> None:
    """Check the promises of a parsed /stat."""
    for name in (
        "sw_branch",
        "sw_commit",
        "sw_custom_branch",
        "sw_custom_commit",
        "hw_version",
        "fw_commit",
        "serial",
        "platform",
    ):
        value = getattr(stat, name)
        assert value is None or (isinstance(value, str) and len(value) <= MAX_TEXT_LENGTH), name
    if stat.fw_version is not None:
        assert len(stat.fw_version) <= MAX_TEXT_LENGTH
        if len(stat.fw_version) < MAX_TEXT_LENGTH:  # Not cut: major.minor.patch.
            assert all(part.isdigit() for part in stat.fw_version.split(".")), stat.fw_version
            assert stat.fw_version.count(".") == 2
    for number in (stat.free_flash, stat.free_data_flash):
        assert number is None or (type(number) is int)
    assert len(stat.extra) <= MAX_EXTRA_RECORDS
    for name, value in stat.extra.items():
        assert len(name) <= MAX_TEXT_LENGTH
        assert _is_senml_value(value)
        assert not isinstance(value, str) or len(value) <= MAX_TEXT_LENGTH
    # The tracker keeps a device's last /stat as a dict, writes it to its Store and rebuilds it.
    facts = {name: getattr(stat, name) for name in DeviceStat.__slots__}
    _storable(facts)
    assert DeviceStat(**facts) == stat


@fuzz_settings("stat")
@given(st.one_of(payloads(), encoded(stat_packs())))
@example('[{"n": "sw_commit", "vs": "\\udfff"}]')
@example('[{"n": "\\ud800", "v": 1}]')
@example(json.dumps([{"n": "sw_branch", "vs": "b" * 10_000}]))
@example(json.dumps([{"n": f"x{i}", "v": i} for i in range(100)]))
@example(json.dumps([{"n": f"fw_v_{part}", "v": 1e300} for part in ("major", "minor", "patch")]))
@example('[{"n": "free_flash", "v": 1e19}]')
@example('[{"n": "imei", "v": 123456789012345678901234567890}]')
def test_stat_is_a_bounded_storable_stat_or_refused(payload: Any) -> None:
    """A /stat payload parses to a bounded DeviceStat the tracker can store, or an error."""
    try:
        stat = parse_stat(payload)
    except ProtocolError:
        return
    _check_stat(stat)


@fuzz_settings("stat_shape")
@given(
    sw_branch=TEXT | LONG_TEXT,
    sw_commit=TEXT | LONG_TEXT,
    version=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
    free_flash=st.integers(0, 2**40),
    extra=st.dictionaries(
        TEXT.filter(lambda name: not name.startswith(("sw_", "fw_", "free_"))),
        st.integers(MIN_INT, MAX_INT) | TEXT,
        max_size=40,
    ),
)
def test_firmware_stat_parses_to_what_it_says(
    sw_branch: str,
    sw_commit: str,
    version: tuple[int, int, int],
    free_flash: int,
    extra: dict[str, Any],
) -> None:
    """A /stat in the firmware's record order gives back its fields, cut to the bounds."""
    known = {"hw_version", "serial", "platform"}
    records: list[dict[str, Any]] = [
        {"vs": sw_branch, "n": "sw_branch"},
        {"vs": sw_commit, "n": "sw_commit"},
        {"v": version[0], "n": "fw_v_major"},
        {"v": version[1], "n": "fw_v_minor"},
        {"v": version[2], "n": "fw_v_patch"},
        {"v": free_flash, "n": "free_flash"},
    ]
    extra = {name: value for name, value in extra.items() if name not in known}
    records.extend({"vs" if isinstance(v, str) else "v": v, "n": n} for n, v in extra.items())
    stat = parse_stat(json.dumps(records))
    _check_stat(stat)
    assert stat.sw_branch == _utf8(sw_branch)[:MAX_TEXT_LENGTH]
    assert stat.sw_commit == _utf8(sw_commit)[:MAX_TEXT_LENGTH]
    assert stat.fw_version == ".".join(map(str, version))
    assert stat.free_flash == free_flash
    # Names that differ only in their lone surrogates become one record: the last one wins.
    by_name = {_utf8(name): value for name, value in extra.items()}
    kept = list(by_name.items())[:MAX_EXTRA_RECORDS]
    assert stat.extra == {
        name[:MAX_TEXT_LENGTH]: _utf8(value)[:MAX_TEXT_LENGTH] if isinstance(value, str) else value
        for name, value in kept
    }


# --- topics ----------------------------------------------------------------------------------


@fuzz_settings("topics")
@given(topics())
@example("channels/c/messages/d/ota/")
@example("channels//messages/d/stat")
@example("channels/c/messages/d")
def test_topic_parsers_split_exactly_or_refuse(topic: str) -> None:
    """A topic parser returns parts that rebuild the topic exactly, or raises ProtocolError."""
    try:
        control = parse_control_topic(topic)
    except ProtocolError:
        pass
    else:
        assert control.control_channel
        assert control.device_id
        assert "/" not in control.control_channel + control.device_id
        rebuilt = f"channels/{control.control_channel}/messages/{control.device_id}/{control.kind}"
        assert rebuilt == topic
    try:
        device_id = parse_telemetry_topic(topic)
    except ProtocolError:
        pass
    else:
        assert device_id
        assert "/" not in device_id
        assert topic.startswith("channels/")
        assert topic.endswith(f"/messages/{device_id}")
        assert topic.count("/") == 3


@fuzz_settings("topic_round_trip")
@given(channel=IDS, device_id=IDS, kind=st.sampled_from(ControlKind))
def test_topics_we_build_parse_back(channel: str, device_id: str, kind: ControlKind) -> None:
    """A topic or subscription is built only from ids that fit in one level, and parses back."""
    # One topic level holds no separator, no wildcard and no NUL, and is not empty.
    if not all(value and not set(value) & set("/+#\x00") for value in (channel, device_id)):
        with pytest.raises(ProtocolError):
            control_topic(channel, device_id, kind)
        return
    topic = control_topic(channel, device_id, kind)
    assert parse_control_topic(topic) == ControlTopic(channel, device_id, kind)
    assert control_subscription(channel, kind).replace("+", device_id, 1) == topic
    data_topic = telemetry_subscription(channel).replace("+", device_id)
    assert parse_telemetry_topic(data_topic) == device_id

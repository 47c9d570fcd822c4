"""Tests of the insigh.io OTA wire protocol, one rule of `protocol.md` at a time."""

import json

import pytest

from custom_components.insighio_ota.protocol import (
    REASON_CANNOT_APPLY,
    REASON_CANNOT_DOWNLOAD,
    REASON_NOT_ENOUGH_SPACE,
    ControlKind,
    ControlTopic,
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
    stat_topic,
    telemetry_subscription,
)

CTRL = "c0ffee00-1111-2222-3333-444455556666"
DEVICE = "d0d0cafe-aaaa-bbbb-cccc-ddddeeeeffff"


def _records(payload: str) -> dict[str, dict]:
    """Return the records of a SenML payload by name (each name appears once)."""
    return {record["n"]: record for record in json.loads(payload)}


# --- OTA request ----------------------------------------------------------------------------


def test_request_payload_is_the_documented_senml_pack() -> None:
    payload = OtaRequest(file_id="7985d8c2", file_type=".tar", size=3987).to_payload()

    assert json.loads(payload) == [
        {"n": "e", "v": 0},
        {"n": "i", "vs": "7985d8c2"},
        {"n": "t", "vs": ".tar"},
        {"n": "s", "v": 3987},
    ]


def test_request_e_is_the_integer_zero_the_firmware_compares_as_str() -> None:
    records = _records(OtaRequest("7985d8c2", ".tar", 3987).to_payload())

    value = records["e"]["v"]
    # The firmware checks `str(e) == "0"`: 0.0, "0" or False would be ignored forever.
    assert type(value) is int
    assert str(value) == "0"
    assert set(records["e"]) == {"n", "v"}


def test_request_file_id_and_type_are_strings_under_vs() -> None:
    records = _records(OtaRequest("7985d8c2", ".tar.gz", 10).to_payload())

    assert records["i"] == {"n": "i", "vs": "7985d8c2"}
    assert records["t"] == {"n": "t", "vs": ".tar.gz"}
    assert type(records["i"]["vs"]) is str
    assert type(records["t"]["vs"]) is str


def test_request_size_is_an_integer_under_v() -> None:
    records = _records(OtaRequest("7985d8c2", ".tar", 3987).to_payload())

    assert records["s"] == {"n": "s", "v": 3987}
    assert type(records["s"]["v"]) is int


def test_request_payload_is_compact_json() -> None:
    payload = OtaRequest("7985d8c2", ".tar", 3987).to_payload()

    assert payload == (
        '[{"n":"e","v":0},{"n":"i","vs":"7985d8c2"},{"n":"t","vs":".tar"},{"n":"s","v":3987}]'
    )


def test_request_round_trips_as_a_pending_request() -> None:
    message = parse_ota_message(OtaRequest("7985d8c2", ".tar", 3987).to_payload())

    assert message == OtaMessage(
        code=OtaCode.PENDING, file_id="7985d8c2", file_type=".tar", size=3987
    )
    assert message.is_request


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(ProtocolError, ValueError)


@pytest.mark.parametrize("file_id", ["", " ", "\t\n", None, 7985])
def test_request_refuses_an_empty_or_non_string_file_id(file_id: object) -> None:
    with pytest.raises(ProtocolError, match="file id"):
        OtaRequest(file_id=file_id, file_type=".tar", size=3987)  # type: ignore[arg-type]


@pytest.mark.parametrize("file_type", ["tar", "tar.gz", ".", "", None])
def test_request_refuses_a_file_type_without_the_leading_dot(file_type: object) -> None:
    with pytest.raises(ProtocolError, match="file type must start with a dot"):
        OtaRequest(file_id="7985d8c2", file_type=file_type, size=3987)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, True, False, 1.5, 3987.0, "3987", None])
def test_request_refuses_a_size_that_is_not_a_positive_whole_number(size: object) -> None:
    with pytest.raises(ProtocolError, match="size must be a whole number of bytes above 0"):
        OtaRequest(file_id="7985d8c2", file_type=".tar", size=size)  # type: ignore[arg-type]


def test_request_accepts_a_one_byte_package() -> None:
    assert OtaRequest("7985d8c2", ".tar", 1).size == 1


# --- Status reports -------------------------------------------------------------------------


def test_applied_report_in_the_firmware_key_order_is_recognised() -> None:
    message = parse_ota_message(b'[{"v":1,"n":"e"},{"vs":"339afdbc","n":"i"}]')

    assert message == OtaMessage(code=OtaCode.APPLIED, file_id="339afdbc")
    assert message.is_applied
    assert not message.is_failed
    assert not message.is_request


def test_applied_report_in_the_console_docs_key_order_is_recognised() -> None:
    message = parse_ota_message('[{"n":"e","v":1},{"n":"i","vs":"339afdbc"}]')

    assert message is not None
    assert message.is_applied
    assert message.file_id == "339afdbc"


@pytest.mark.parametrize(
    "reason", [REASON_NOT_ENOUGH_SPACE, REASON_CANNOT_DOWNLOAD, REASON_CANNOT_APPLY]
)
def test_failed_report_carries_each_firmware_reason(reason: str) -> None:
    payload = json.dumps(
        [{"v": 2, "n": "e"}, {"vs": "0badf00d", "n": "i"}, {"vs": reason, "n": "m"}]
    )

    message = parse_ota_message(payload.encode())

    assert message == OtaMessage(code=OtaCode.FAILED, file_id="0badf00d", reason=reason)
    assert message.is_failed
    assert not message.is_applied
    assert not message.is_request


def test_firmware_reasons_are_the_documented_strings() -> None:
    assert REASON_NOT_ENOUGH_SPACE == "not enough space"
    assert REASON_CANNOT_DOWNLOAD == "can not download"
    assert REASON_CANNOT_APPLY == "can not apply"


def test_failed_report_accepts_the_console_docs_typo_reason_record() -> None:
    payload = '[{"n":"e","v":2},{"n":"i","vs":"0badf00d"},{"m":"i","vs":"can not apply"}]'

    message = parse_ota_message(payload)

    assert message is not None
    assert message.is_failed
    assert message.reason == REASON_CANNOT_APPLY


def test_failed_report_prefers_the_named_reason_over_the_typo_record() -> None:
    payload = (
        '[{"n":"e","v":2},{"n":"i","vs":"0badf00d"},'
        '{"m":"i","vs":"from the typo"},{"n":"m","vs":"can not download"}]'
    )

    message = parse_ota_message(payload)

    assert message is not None
    assert message.reason == REASON_CANNOT_DOWNLOAD


def test_failed_report_without_any_reason_has_none() -> None:
    payload = '[{"n":"e","v":2},{"n":"i","vs":"0badf00d"},{"m":"x","vs":"no"},{"bt":1}]'

    message = parse_ota_message(payload)

    assert message is not None
    assert message.is_failed
    assert message.reason is None


def test_failed_report_keeps_an_unknown_reason_verbatim() -> None:
    payload = '[{"n":"e","v":2},{"n":"i","vs":"0badf00d"},{"n":"m","vs":"disk on fire"}]'

    message = parse_ota_message(payload)

    assert message is not None
    assert message.reason == "disk on fire"


def test_report_reason_given_as_a_number_is_kept_as_text() -> None:
    message = parse_ota_message('[{"n":"e","v":2},{"n":"i","vs":"0badf00d"},{"n":"m","v":5}]')

    assert message is not None
    assert message.reason == "5"


@pytest.mark.parametrize(
    ("e_record", "code"),
    [
        ({"n": "e", "v": 1}, OtaCode.APPLIED),
        ({"n": "e", "vs": 1}, OtaCode.APPLIED),
        ({"n": "e", "vb": 2}, OtaCode.FAILED),
        ({"n": "e", "v": 1.0}, OtaCode.APPLIED),
    ],
)
def test_report_values_may_sit_under_v_vs_or_vb(e_record: dict, code: OtaCode) -> None:
    payload = json.dumps([e_record, {"n": "i", "vs": "339afdbc"}])

    message = parse_ota_message(payload)

    assert message is not None
    assert message.code == code
    assert type(message.code) is int


def test_report_ignores_unknown_records() -> None:
    payload = (
        '[{"n":"uptime","u":"ms","v":70},{"v":1,"n":"e"},{"n":"x","vb":true},'
        '{"n":"no_value","u":"ms"},{"vs":"339afdbc","n":"i"},{"n":42,"v":1}]'
    )

    message = parse_ota_message(payload)

    assert message == OtaMessage(code=OtaCode.APPLIED, file_id="339afdbc")


def test_cancelled_code_is_parsed_but_is_neither_request_nor_report() -> None:
    message = parse_ota_message('[{"n":"e","v":3},{"n":"i","vs":"339afdbc"}]')

    assert message is not None
    assert message.code == OtaCode.CANCELLED
    assert not message.is_request
    assert not message.is_applied
    assert not message.is_failed


def test_our_own_request_echo_is_recognised_as_a_request() -> None:
    message = parse_ota_message(
        b'[{"v":0,"n":"e"},{"vs":"7985d8c2","n":"i"},{"vs":".tar","n":"t"},{"v":3987,"n":"s"}]'
    )

    assert message is not None
    assert message.is_request
    assert not message.is_applied
    assert not message.is_failed
    assert message.file_id == "7985d8c2"
    assert message.file_type == ".tar"
    assert message.size == 3987
    assert message.reason is None


def test_request_echo_with_a_non_string_type_has_no_type() -> None:
    message = parse_ota_message('[{"n":"e","v":0},{"n":"i","vs":"7985d8c2"},{"n":"t","v":1}]')

    assert message is not None
    assert message.file_type is None
    assert message.size is None


@pytest.mark.parametrize("payload", [b"", "", "  ", b" \r\n\t"])
def test_empty_payload_is_a_clear_not_a_message(payload: bytes | str) -> None:
    assert parse_ota_message(payload) is None


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("not json", "not JSON"),
        ("[{", "not JSON"),
        ('{"n":"e","v":1}', "must be a JSON list"),
        ("1", "must be a JSON list"),
        ('[{"n":"e","v":1},"i"]', "must be a JSON object"),
        ('[{"n":"e","v":1},[{"n":"i","vs":"x"}]]', "must be a JSON object"),
        ("[]", "no 'e' record"),
        ('[{"n":"i","vs":"339afdbc"}]', "no 'e' record"),
        ('[{"n":"e","v":1}]', r"no file id \('i' record\)"),
        ('[{"n":"e","v":1},{"n":"i","vs":""}]', "no file id"),
        ('[{"n":"e","v":1},{"n":"i","v":339}]', "no file id"),
        ('[{"n":"e","v":1.5},{"n":"i","vs":"339afdbc"}]', "'e' record must be a whole number"),
        ('[{"n":"e","vs":"1"},{"n":"i","vs":"339afdbc"}]', "'e' record must be a number"),
        ('[{"n":"e","vb":true},{"n":"i","vs":"339afdbc"}]', "'e' record must be a number"),
        ('[{"n":"e","v":0},{"n":"i","vs":"x"},{"n":"s","v":1.5}]', "'s' record must be a whole"),
        ('[{"n":"e","v":NaN},{"n":"i","vs":"339afdbc"}]', "'e' has a value of the wrong kind"),
        ('[{"n":"e","v":Infinity},{"n":"i","vs":"x"}]', "'e' has a value of the wrong kind"),
        ('[{"n":"e","v":-Infinity},{"n":"i","vs":"x"}]', "'e' has a value of the wrong kind"),
        ('[{"n":"e","v":1e999},{"n":"i","vs":"x"}]', "'e' has a value of the wrong kind"),
        ('[{"n":"e","v":1},{"n":"i","vs":{"id":"x"}}]', "'i' has a value of the wrong kind"),
        ('[{"n":"e","v":1},{"n":"i","vs":["x"]}]', "'i' has a value of the wrong kind"),
        ('[{"n":"e","v":1},{"n":"i","vs":null}]', "'i' has a value of the wrong kind"),
    ],
)
def test_malformed_ota_message_raises_a_protocol_error_naming_the_problem(
    payload: str, problem: str
) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_ota_message(payload)


def test_non_utf8_payload_raises_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not UTF-8"):
        parse_ota_message(b'[{"n":"e","v":1},{"n":"i","vs":"\xff\xfe"}]')


def test_non_utf8_stat_raises_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not UTF-8"):
        parse_stat(b"\xc3\x28")


def test_too_little_flash_gives_two_failed_reports_for_the_same_file_id() -> None:
    first = parse_ota_message(
        b'[{"v":2,"n":"e"},{"vs":"0badf00d","n":"i"},{"vs":"not enough space","n":"m"}]'
    )
    second = parse_ota_message(
        b'[{"v":2,"n":"e"},{"vs":"0badf00d","n":"i"},{"vs":"can not download","n":"m"}]'
    )

    assert first is not None
    assert second is not None
    assert first.is_failed
    assert second.is_failed
    assert first.file_id == second.file_id == "0badf00d"
    assert (first.reason, second.reason) == (REASON_NOT_ENOUGH_SPACE, REASON_CANNOT_DOWNLOAD)


def test_telemetry_is_not_an_ota_message() -> None:
    telemetry = (
        b'[{"n":"reset_cause","bn":"240ac4542f45-","bt":1796315268,"v":1},'
        b'{"n":"uptime","u":"ms","v":70}]'
    )

    with pytest.raises(ProtocolError, match="no 'e' record"):
        parse_ota_message(telemetry)


# --- SenML name lookup ----------------------------------------------------------------------


def test_telemetry_base_name_is_not_prepended_and_base_time_is_not_a_record() -> None:
    payload = (
        b'[{"n":"reset_cause","bn":"240ac4542f45-","bt":1796315268,"v":1},'
        b'{"n":"uptime","u":"ms","v":70}]'
    )

    assert parse_senml(payload) == {"reset_cause": 1, "uptime": 70}


def test_base_only_records_are_skipped_by_name_lookup() -> None:
    payload = '[{"bn":"240ac4542f45-","bt":1796315268},{"n":"uptime","v":70},{"bver":10}]'

    assert parse_senml(payload) == {"uptime": 70}


def test_a_repeated_name_keeps_the_last_value() -> None:
    assert parse_senml('[{"n":"x","v":1},{"n":"x","v":2}]') == {"x": 2}


def test_senml_value_keys_are_read_in_v_vs_vb_order() -> None:
    payload = (
        '[{"n":"a","vb":false},{"n":"b","vs":"text"},{"n":"c","v":1.5},{"n":"d","vs":"s","v":3}]'
    )

    assert parse_senml(payload) == {"a": False, "b": "text", "c": 1.5, "d": 3}


def test_empty_senml_payload_raises() -> None:
    with pytest.raises(ProtocolError, match="payload is empty"):
        parse_senml(b"  ")


# --- /stat ----------------------------------------------------------------------------------

FULL_STAT = (
    b'[{"vs":"master","n":"sw_branch"},{"vs":"abc","n":"sw_commit"},'
    b'{"vs":"custom","n":"sw_custom_branch"},{"vs":"def","n":"sw_custom_commit"},'
    b'{"vs":"esp32s3","n":"hw_version"},{"v":1,"n":"fw_v_major"},{"v":26,"n":"fw_v_minor"},'
    b'{"v":0,"n":"fw_v_patch"},{"vs":"v1.26.0-12","n":"fw_v_commit"},'
    b'{"v":1234567,"n":"free_flash"},{"v":7654321,"n":"free_data_flash"},'
    b'{"vs":"240ac4542f45","n":"serial"},{"vs":"generic","n":"platform"},'
    b'{"vs":"202010000000000","n":"cell_imsi"},{"vs":"8930000000000000000","n":"cell_iccid"},'
    b'{"vs":"350000000000000","n":"cell_imei"}]'
)


def test_stat_in_the_firmware_record_order_fills_every_field() -> None:
    stat = parse_stat(FULL_STAT)

    assert stat == DeviceStat(
        sw_branch="master",
        sw_commit="abc",
        sw_custom_branch="custom",
        sw_custom_commit="def",
        hw_version="esp32s3",
        fw_version="1.26.0",
        fw_commit="v1.26.0-12",
        free_flash=1234567,
        free_data_flash=7654321,
        serial="240ac4542f45",
        platform="generic",
        extra={
            "cell_imsi": "202010000000000",
            "cell_iccid": "8930000000000000000",
            "cell_imei": "350000000000000",
        },
    )
    assert stat.software_version == "master@abc"
    assert type(stat.free_flash) is int


def test_stat_keeps_cellular_identifiers_in_extra_for_redaction() -> None:
    stat = parse_stat(FULL_STAT)

    assert set(stat.extra) == {"cell_imei", "cell_imsi", "cell_iccid"}
    assert stat.extra["cell_imei"] == "350000000000000"


def test_stat_version_numbers_sent_as_floats_become_ints() -> None:
    stat = parse_stat(
        '[{"n":"fw_v_major","v":1.0},{"n":"fw_v_minor","v":26.0},{"n":"fw_v_patch","v":0.0},'
        '{"n":"free_flash","v":4096.0}]'
    )

    assert stat.fw_version == "1.26.0"
    assert stat.free_flash == 4096
    assert type(stat.free_flash) is int


def test_partial_stat_leaves_missing_fields_none() -> None:
    stat = parse_stat('[{"vs":"abc","n":"sw_commit"},{"v":26,"n":"fw_v_minor"}]')

    assert stat.sw_commit == "abc"
    assert stat.sw_branch is None
    # Without all of major, minor and patch there is no firmware version to show.
    assert stat.fw_version is None
    assert stat.free_flash is None
    assert stat.free_data_flash is None
    assert stat.extra == {}
    assert stat.software_version == "unknown@abc"


def test_stat_without_sw_commit_has_no_software_version() -> None:
    stat = parse_stat('[{"vs":"master","n":"sw_branch"},{"vs":"esp32","n":"hw_version"}]')

    assert stat.software_version is None
    assert stat.hw_version == "esp32"


def test_stat_text_field_sent_as_a_number_is_kept_as_text() -> None:
    stat = parse_stat('[{"n":"sw_commit","v":1234},{"n":"fw_v_commit","v":5}]')

    assert stat.sw_commit == "1234"
    assert stat.fw_commit == "5"


@pytest.mark.parametrize(
    "payload", ["[]", '[{"bn":"240ac4542f45-","bt":1796315268}]', '[{"m":"i","vs":"x"}]']
)
def test_stat_with_no_named_records_raises(payload: str) -> None:
    with pytest.raises(ProtocolError, match="no named records"):
        parse_stat(payload)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ('[{"n":"free_flash","vs":"lots"}]', "free_flash must be a number"),
        ('[{"n":"free_flash","v":1.5}]', "free_flash must be a whole number"),
        ('[{"n":"fw_v_minor","v":"26"}]', "fw_v_minor must be a number"),
        ('[{"n":"sw_commit","vs":{"a":1}}]', "'sw_commit' has a value of the wrong kind"),
        ('[{"n":"free_flash","v":NaN}]', "'free_flash' has a value of the wrong kind"),
        ("{}", "must be a JSON list"),
        ("stat", "not JSON"),
    ],
)
def test_malformed_stat_raises_a_protocol_error_naming_the_problem(
    payload: str, problem: str
) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_stat(payload)


# --- Topics ---------------------------------------------------------------------------------


def test_ota_topic_is_under_the_device_control_messages() -> None:
    assert ota_topic(CTRL, DEVICE) == f"channels/{CTRL}/messages/{DEVICE}/ota"


def test_stat_topic_is_under_the_device_control_messages() -> None:
    assert stat_topic(CTRL, DEVICE) == f"channels/{CTRL}/messages/{DEVICE}/stat"


@pytest.mark.parametrize(
    ("kind", "topic"),
    [
        (ControlKind.OTA, f"channels/{CTRL}/messages/+/ota"),
        (ControlKind.STAT, f"channels/{CTRL}/messages/+/stat"),
    ],
)
def test_subscription_matches_every_device_with_a_single_level_wildcard(
    kind: ControlKind, topic: str
) -> None:
    assert control_subscription(CTRL, kind) == topic


@pytest.mark.parametrize(
    ("topic", "kind"),
    [(ota_topic(CTRL, DEVICE), ControlKind.OTA), (stat_topic(CTRL, DEVICE), ControlKind.STAT)],
)
def test_built_topics_parse_back_to_their_parts(topic: str, kind: ControlKind) -> None:
    assert parse_control_topic(topic) == ControlTopic(
        control_channel=CTRL, device_id=DEVICE, kind=kind
    )


@pytest.mark.parametrize("bad_id", ["", "a/b", "+", "a+b", "#", "a#", "a\x00b"])
def test_topic_builders_refuse_ids_that_are_not_a_single_topic_level(bad_id: str) -> None:
    with pytest.raises(ProtocolError, match=r"device id .* cannot be part of an MQTT topic"):
        ota_topic(CTRL, bad_id)
    with pytest.raises(ProtocolError, match=r"device id .* cannot be part of an MQTT topic"):
        stat_topic(CTRL, bad_id)
    with pytest.raises(ProtocolError, match=r"control channel .* cannot be part of an MQTT topic"):
        ota_topic(bad_id, DEVICE)
    with pytest.raises(ProtocolError, match=r"control channel .* cannot be part of an MQTT topic"):
        control_subscription(bad_id, ControlKind.OTA)


@pytest.mark.parametrize(
    "topic",
    [
        "channels/x/messages/y",
        f"channels/{CTRL}/messages/{DEVICE}/ota/extra",
        f"channels/{CTRL}/messages/{DEVICE}/stat/",
        f"/channels/{CTRL}/messages/{DEVICE}/ota",
        f"things/{CTRL}/messages/{DEVICE}/ota",
        f"channels/{CTRL}/message/{DEVICE}/ota",
        f"channels//messages/{DEVICE}/ota",
        f"channels/{CTRL}/messages//ota",
        "",
    ],
)
def test_parse_refuses_topics_of_the_wrong_shape(topic: str) -> None:
    with pytest.raises(ProtocolError, match="not a device control topic"):
        parse_control_topic(topic)


@pytest.mark.parametrize(
    "suffix", ["config", "configRequest", "partialConfig", "cmd", "configResponse", "OTA", ""]
)
def test_parse_refuses_control_topics_that_are_not_ota_or_stat(suffix: str) -> None:
    with pytest.raises(ProtocolError, match="not an OTA or stat topic"):
        parse_control_topic(f"channels/{CTRL}/messages/{DEVICE}/{suffix}")


def test_telemetry_topic_round_trip() -> None:
    """Telemetry arrives on channels/<data>/messages/<device-id>, matched by one wildcard."""
    assert telemetry_subscription("data-1") == "channels/data-1/messages/+"
    assert parse_telemetry_topic("channels/data-1/messages/dev-1") == "dev-1"


@pytest.mark.parametrize(
    "topic",
    [
        "channels/data-1/messages/dev-1/ota",
        "channels/data-1/messages/",
        "channels//messages/dev-1",
        "chan/data-1/messages/dev-1",
        "channels/data-1/msgs/dev-1",
    ],
)
def test_telemetry_topic_refuses_other_shapes(topic: str) -> None:
    """Control topics and malformed topics are not telemetry."""
    with pytest.raises(ProtocolError, match="not a telemetry topic"):
        parse_telemetry_topic(topic)


def test_telemetry_subscription_refuses_wildcards_in_ids() -> None:
    """A channel id with MQTT wildcards would subscribe to far more than one channel."""
    with pytest.raises(ProtocolError):
        telemetry_subscription("data/#")


@pytest.mark.parametrize("file_id", ["a&dk=1", "7985 d8c2", "a#b", "a?b", "../x", "x/y", "é1"])
def test_request_refuses_file_ids_the_firmware_cannot_use(file_id: str) -> None:
    """The firmware puts the id unescaped into its download URL and its file path."""
    with pytest.raises(ProtocolError, match="letters, digits"):
        OtaRequest(file_id, ".tar", 10)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    """A payload that exhausts the JSON parser's stack is malformed, not a crash."""
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_ota_message("[" * 100_000)


def test_unreadable_unknown_record_does_not_cost_the_report() -> None:
    """An extra record with a null value is skipped; the report around it still counts."""
    message = parse_ota_message('[{"n":"e","v":1},{"n":"i","vs":"339afdbc"},{"n":"x","v":null}]')
    assert message is not None
    assert message.is_applied


def test_unreadable_unknown_stat_record_does_not_cost_the_stat() -> None:
    """A null cellular id does not hide the software version of the same /stat."""
    stat = parse_stat('[{"vs":"abc","n":"sw_commit"},{"v":null,"n":"cell_imsi"}]')
    assert stat.sw_commit == "abc"
    assert "cell_imsi" not in stat.extra

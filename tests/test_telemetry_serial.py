"""Which telemetry is an insigh.io device's: SenML whose base name is the device's serial."""

import json

import pytest

from custom_components.insighio_ota.protocol import ProtocolError, parse_telemetry_serial


@pytest.mark.parametrize(
    ("payload", "serial"),
    [
        # As the firmware sends it: base name and time on the first record.
        (
            '[{"n":"reset_cause","bn":"240ac4542f45-","bt":1796315268,"v":1},'
            '{"n":"uptime","u":"ms","v":70}]',
            "240ac4542f45",
        ),
        # Key order and case do not matter; bytes are read as UTF-8.
        (b'[{"v":1,"bn":"240AC4542F45-","n":"vbatt"}]', "240ac4542f45"),
        # The base name may sit on a record of its own.
        ('[{"bn":"aabbccddeeff-","bt":1},{"n":"t","v":21.5}]', "aabbccddeeff"),
    ],
)
def test_serial_from_firmware_telemetry(payload: str | bytes, serial: str) -> None:
    """The serial is the base name without its dash, lower case."""
    assert parse_telemetry_serial(payload) == serial


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps([{"n": "t", "v": 21.5}]),
        json.dumps([{"bn": "kitchen-", "n": "t", "v": 1}]),
        json.dumps([{"bn": "240ac4542f45", "n": "t", "v": 1}]),
        json.dumps([{"bn": "240ac4542f45-x", "n": "t", "v": 1}]),
        json.dumps([{"bn": 240, "n": "t", "v": 1}]),
        json.dumps([{"bn": "240ac4542f45-", "bt": 1}]),
        json.dumps({"bn": "240ac4542f45-", "n": "t", "v": 1}),
        "",
        "not json",
        b"\xff",
    ],
)
def test_other_payloads_are_refused(payload: str | bytes) -> None:
    """Anything else on a data channel is not an insigh.io device's telemetry."""
    with pytest.raises(ProtocolError):
        parse_telemetry_serial(payload)

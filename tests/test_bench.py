"""The benchmark's own pieces that decide what it reports: verdicts and what the swarm sends.

The benchmark itself (`scripts/bench`) is not part of the tests: it takes minutes on a real
broker. What would make it lie is tested here: a figure over its target must read MISS, and the
swarm's devices must send what the firmware sends, or the rollout figure measures nothing.
"""

from bench.report import Figure
from bench.swarm import wake_messages
from custom_components.insighio_ota.protocol import (
    parse_control_topic,
    parse_ota_message,
    parse_senml,
    parse_stat,
    parse_telemetry_topic,
)

from .conftest import CONTROL_CHANNEL, DATA_CHANNEL, DEVICE_ID


def test_figure_verdicts() -> None:
    """Over the target is a MISS, at or under it a PASS, without one only information."""
    assert Figure("x", 51.0, "us", 50.0).line().split()[-1] == "MISS"
    assert "PASS" in Figure("x", 50.0, "us", 50.0).line()
    assert Figure("x", 3.0, "KB", 5.0, "detail").line().endswith("PASS  detail")
    assert Figure("x", 3.0, "s").passed is None
    assert "info" in Figure("x", 3.0, "s").line()


def test_swarm_sends_what_the_firmware_sends() -> None:
    """Wake telemetry, the applied report, the clear of the request, then the reboot's /stat."""
    messages = wake_messages(DEVICE_ID, CONTROL_CHANNEL, DATA_CHANNEL, "5e6f7a8", "be0c0002")
    (telemetry, _, _), (report, payload, retain), (clear, empty, kept), (stat, facts, _) = messages

    assert parse_telemetry_topic(telemetry) == DEVICE_ID
    assert telemetry.startswith(f"channels/{DATA_CHANNEL}/")
    assert parse_senml(messages[0][1])["vbatt"] == 3900
    applied = parse_ota_message(payload)
    assert applied is not None
    assert applied.is_applied
    assert applied.file_id == "be0c0002"
    assert not retain
    assert parse_control_topic(report).device_id == DEVICE_ID
    assert clear == report
    assert parse_ota_message(empty) is None
    assert kept
    assert parse_control_topic(stat).kind == "stat"
    assert parse_stat(facts).sw_commit == "5e6f7a8"

"""A lightweight swarm of devices: one paho MQTT client that speaks for many device ids.

The simulator runs one client and one task per device, which is too heavy for 1,000 devices on a
small machine. The swarm sends exactly what the firmware sends after it picked up an OTA request,
for every device at once when told to: telemetry (the wake), the applied report, the clear of the
retained request, and the `/stat` of the reboot with the package's commit.

Run as `python -m bench.swarm PORT CONTROL DATA COMMIT FILE_ID IDS_FILE`; it prints `READY` once
connected, waits for a line `wake` on stdin, and prints `DONE` when the broker acknowledged every
message (QoS 1), then exits.
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .messages import stat_payload


def wake_messages(
    device_id: str, control: str, data: str, commit: str, file_id: str
) -> list[tuple[str, str, bool]]:
    """Return what one device publishes after applying a package: (topic, payload, retain)."""
    ota = f"channels/{control}/messages/{device_id}/ota"
    return [
        (
            f"channels/{data}/messages/{device_id}",
            json.dumps([{"n": "vbatt", "bn": "240ac4542f45-", "v": 3900}]),
            False,
        ),
        (ota, json.dumps([{"v": 1, "n": "e"}, {"vs": file_id, "n": "i"}]), False),
        (ota, "", True),
        (f"channels/{control}/messages/{device_id}/stat", stat_payload(commit), False),
    ]


def main(argv: list[str]) -> int:
    """Connect, wait for `wake`, publish for every device, report when all were acknowledged."""
    port, control, data, commit, file_id, ids_file = argv
    device_ids = Path(ids_file).read_text().split()
    messages = [
        message
        for device_id in device_ids
        for message in wake_messages(device_id, control, data, commit, file_id)
    ]
    acknowledged = threading.Semaphore(0)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="insighio-bench-swarm")
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.on_publish = lambda *_: acknowledged.release()
    client.connect("127.0.0.1", int(port))
    client.loop_start()
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "wake":
        return 1
    for topic, payload, retain in messages:
        client.publish(topic, payload, qos=1, retain=retain)
    for _ in messages:
        if not acknowledged.acquire(timeout=60):
            print("TIMEOUT", flush=True)
            return 1
    print("DONE", flush=True)
    client.loop_stop()
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

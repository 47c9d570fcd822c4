"""End-to-end tests of the simulator: a real Mosquitto, the simulator as a subprocess, paho.

The simulated devices must behave like the real firmware, quirks included, because the
integration's end-to-end tests and the demo rely on them. Every test drives its own device, so
the tests share one broker and one simulator and still do not disturb each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
import hashlib
import io
import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from typing import Any
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # The repository root holds the simulator package; pytest's rootdir handling does not
    # always put it on sys.path (for example when run as `.venv/bin/pytest`).
    sys.path.insert(0, str(REPO))

from simulator.device import parse_ota_request  # noqa: E402
from simulator.identities import device_identity, project_identity  # noqa: E402
from simulator.packages import (  # noqa: E402
    PACKAGE_EXTENSIONS,
    PackageError,
    build_package,
    read_package,
)

MOSQUITTO = "/usr/sbin/mosquitto"
SEED = "simulator-tests"
DEVICES = 9
WAKE_PERIOD = 1.0
LISTEN_WINDOW = 0.5
# Generous for a loaded CI machine, yet most waits end after a second or two.
TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="Mosquitto not installed")


def _allow_sockets() -> None:
    """Undo the Home Assistant test plugin's socket ban.

    The plugin disables sockets before every test; these tests talk to a real broker and a
    real HTTP server on 127.0.0.1 (still the only host the plugin's allow-list lets through).
    """
    try:
        import pytest_socket  # noqa: PLC0415 - only present with the Home Assistant plugin
    except ImportError:  # pragma: no cover
        return
    pytest_socket.enable_socket()


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations() -> None:
    """Replace tests/conftest.py's autouse fixture: these tests need no Home Assistant."""


@pytest.fixture(autouse=True)
def _test_sockets() -> None:
    """Allow sockets again for each test, after the plugin has banned them."""
    _allow_sockets()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Start a private Mosquitto on a free loopback port."""
    _allow_sockets()  # module fixtures start after the plugin's per-test ban
    folder = tmp_path_factory.mktemp("mosquitto")
    port = _free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    with (folder / "mosquitto.log").open("w") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
    try:
        _wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Simulator:
    """A running simulator subprocess and what its READY line said."""

    process: subprocess.Popen[str]
    ready: dict[str, Any]
    packages: Path
    state_dir: Path
    log: Path

    def device(self, index: int) -> dict[str, Any]:
        """Return a device of the READY line."""
        return dict(self.ready["devices"][index])

    def ota_topic(self, index: int) -> str:
        """Return a device's /ota topic."""
        return f"{self.control_prefix(index)}/ota"

    def control_prefix(self, index: int) -> str:
        """Return a device's control topic prefix."""
        return f"channels/{self.ready['control_channel']}/messages/{self.device(index)['id']}"


def _start_simulator(args: list[str], log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulator", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(TIMEOUT)
    if not lines or not lines[0].startswith("READY "):
        process.kill()
        raise AssertionError(f"no READY line: {lines!r}\n{log.read_text()}")
    return process, json.loads(lines[0].removeprefix("READY "))


def _stop_simulator(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture(scope="module")
def sim(broker: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """Run `python -m simulator all` with fast wakes and the demo packages."""
    _allow_sockets()
    folder = tmp_path_factory.mktemp("simulator")
    packages, state_dir, log = folder / "packages", folder / "state", folder / "simulator.log"
    process, ready = _start_simulator(
        [
            "all",
            "--mqtt-port",
            str(broker),
            "--devices",
            str(DEVICES),
            "--seed",
            SEED,
            "--wake-period",
            str(WAKE_PERIOD),
            "--listen-window",
            str(LISTEN_WINDOW),
            "--packages",
            str(packages),
            "--demo-packages",
            "--state-dir",
            str(state_dir),
            "--log-level",
            "DEBUG",
        ],
        log,
    )
    simulator = Simulator(process, ready, packages, state_dir, log)
    try:
        yield simulator
    finally:
        assert _stop_simulator(process) == 0, log.read_text()


@dataclass
class Observer:
    """A paho client that records every message under the project's channels."""

    client: mqtt.Client
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self) -> int:
        """Return a position to look for later messages from."""
        with self.lock:
            return len(self.messages)

    def since(self, mark: int) -> list[mqtt.MQTTMessage]:
        """Return the messages received since a mark."""
        with self.lock:
            return list(self.messages[mark:])

    def wait_for(
        self,
        predicate: Callable[[list[mqtt.MQTTMessage]], bool],
        mark: int,
        timeout: float = TIMEOUT,
    ) -> list[mqtt.MQTTMessage]:
        """Wait until the messages since a mark satisfy a predicate, and return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.since(mark)
            if predicate(messages):
                return messages
            time.sleep(0.05)
        raise AssertionError(
            "condition not met; saw "
            + repr([(m.topic.rsplit("/", 1)[-1], m.payload[:120]) for m in self.since(mark)])
        )

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = True) -> None:
        """Publish with QoS 1 (retained by default, as OTA requests are)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)


@pytest.fixture(scope="module")
def observer(broker: int, sim: Simulator) -> Iterator[Observer]:
    """Record every message of the project, from before the first OTA test on."""
    _allow_sockets()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-observer")
    observer = Observer(client)
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with observer.lock:
            observer.messages.append(message)

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", broker)
    client.loop_start()
    client.subscribe(
        [
            (f"channels/{sim.ready['control_channel']}/messages/#", 1),
            (f"channels/{sim.ready['data_channel']}/messages/#", 1),
        ]
    )
    assert subscribed.wait(TIMEOUT)
    yield observer
    client.disconnect()
    client.loop_stop()


def _retained(broker: int, topic: str, wait: float = 0.5) -> bytes | None:
    """Return the retained payload of a topic, or None when nothing is retained."""
    received: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.connect("127.0.0.1", broker)
    client.loop_start()
    client.subscribe(topic, 1)
    time.sleep(wait)
    client.disconnect()
    client.loop_stop()
    return received[0] if received else None


def _request(file_id: str, file_type: str, size: int, e: Any = 0, e_key: str = "v") -> str:
    return json.dumps(
        [
            {"n": "e", e_key: e},
            {"n": "i", "vs": file_id},
            {"n": "t", "vs": file_type},
            {"n": "s", "v": size},
        ]
    )


def _records(payload: bytes) -> dict[str, Any]:
    """Map a SenML payload's records by name to their value."""
    records = json.loads(payload)
    return {r["n"]: r.get("v", r.get("vs", r.get("vb"))) for r in records}


def _reports(sim: Simulator, index: int, messages: list[mqtt.MQTTMessage]) -> list[dict[str, Any]]:
    """Return the device's status reports (e=1 or e=2) among the messages."""
    reports = []
    for message in messages:
        if message.topic == sim.ota_topic(index) and message.payload:
            records = _records(message.payload)
            if records.get("e") in (1, 2):
                reports.append(records)
    return reports


def _telemetry_count(sim: Simulator, index: int, messages: list[mqtt.MQTTMessage]) -> int:
    topic = f"channels/{sim.ready['data_channel']}/messages/{sim.device(index)['id']}"
    return sum(1 for message in messages if message.topic == topic)


def _package_size(sim: Simulator, name: str) -> int:
    return (sim.packages / name).stat().st_size


# ---------------------------------------------------------------------------------------------
# The READY line and the console stand-in.


def test_ready_line_describes_devices_without_keys(sim: Simulator) -> None:
    ready = sim.ready
    assert ready["console_url"].startswith("http://127.0.0.1:")
    assert ready["email"] == "demo@insigh.io"
    assert len(ready["devices"]) == DEVICES
    first = ready["devices"][0]
    identity = device_identity(0, SEED)
    assert first == {
        "id": identity.id,
        "name": "Sensor 1",
        "serial": identity.serial,
        "hw_version": "esp32s3",
        "sw_commit": "1a2b3c4",
    }
    assert [d["hw_version"] for d in ready["devices"][:3]] == ["esp32s3", "esp32", "esp32wroom"]
    assert identity.key not in json.dumps(ready)


def _http(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL the test built itself
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_console_rest_api(sim: Simulator) -> None:
    api = sim.ready["console_url"] + "/mf-rproxy"
    status, body = _http("POST", f"{api}/tokens", {"email": "demo@insigh.io", "password": "x"})
    assert status == 401
    assert "error" in body
    status, body = _http(
        "POST", f"{api}/tokens", {"email": "demo@insigh.io", "password": "console-demo"}
    )
    assert status == 201
    token = body["token"]

    key_request = {"name": "home-assistant", "type": 3, "duration": 3600}
    assert _http("POST", f"{api}/keys", key_request, token="wrong")[0] == 401
    assert _http("POST", f"{api}/keys", key_request, token=f"Bearer {token}")[0] == 401
    status, key = _http("POST", f"{api}/keys", key_request, token=token)
    assert status == 201
    assert set(key) == {"id", "name", "value", "issued_at", "expires_at"}
    assert key["name"] == "home-assistant"

    assert _http("GET", f"{api}/device/list")[0] == 401
    for credential in (token, key["value"]):
        status, devices = _http("GET", f"{api}/device/list", token=credential)
        assert status == 200
        assert len(devices) == DEVICES
    identity = device_identity(1, SEED)
    listed = devices[1]
    assert listed["id"] == identity.id
    assert listed["key"] == identity.key
    assert listed["name"] == "Sensor 2"
    assert listed["metadata"]["dataChannel"] == sim.ready["data_channel"]
    assert listed["metadata"]["controlChannel"] == sim.ready["control_channel"]

    status, device = _http("GET", f"{api}/device/{identity.id}", token=key["value"])
    assert status == 200
    assert {"created_at", "updated_at", "status"} <= set(device)
    assert device["key"] == identity.key
    assert _http("GET", f"{api}/device/unknown", token=key["value"])[0] == 404
    assert _http("GET", f"{api}/device/{identity.id}")[0] == 401


def _raw_get(url: str, path: str, version: str = "1.0") -> tuple[int, dict[str, str], bytes]:
    """Send a bare GET and read until the server closes, as the firmware does."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/{version}\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def test_download_endpoint_auth_and_framing(sim: Simulator) -> None:
    identity = device_identity(8, SEED)
    ctrl = sim.ready["control_channel"]
    url = sim.ready["console_url"]

    def path(fuid: str, did: str = identity.id, dk: str = identity.key, cid: str = ctrl) -> str:
        return f"/mf-rproxy/packages/download?fuid={fuid}&did={did}&dk={dk}&cid={cid}"

    expected = (sim.packages / "4f1c2a9e.tar").read_bytes()
    for version in ("1.0", "1.1"):
        status, headers, body = _raw_get(url, path("4f1c2a9e"), version)
        assert status == 200
        assert body == expected
        assert headers["content-length"] == str(len(expected))
        assert "transfer-encoding" not in headers
        assert headers["connection"].lower() == "close"

    other = device_identity(7, SEED)
    assert _raw_get(url, path("4f1c2a9e", dk=other.key))[0] == 403
    assert _raw_get(url, path("4f1c2a9e", did=other.id))[0] == 403
    assert _raw_get(url, path("4f1c2a9e", cid=sim.ready["data_channel"]))[0] == 403
    assert _raw_get(url, "/mf-rproxy/packages/download?fuid=4f1c2a9e")[0] == 403
    assert _raw_get(url, path("deadbeef"))[0] == 404


# ---------------------------------------------------------------------------------------------
# Simulated devices.


def test_power_on_stat_uses_firmware_records(sim: Simulator, observer: Observer) -> None:
    topic = f"{sim.control_prefix(8)}/stat"
    # The power-on /stat may have gone out before the observer subscribed; ask for a reboot-free
    # proof instead: telemetry keeps coming, and /stat, if seen, has the firmware's shape.
    messages = observer.wait_for(lambda ms: _telemetry_count(sim, 8, ms) >= 1, 0)
    telemetry = next(
        json.loads(m.payload) for m in messages if m.topic.endswith(sim.device(8)["id"])
    )
    assert telemetry[0]["bn"] == f"{sim.device(8)['serial']}-"
    assert [r["n"] for r in telemetry] == ["reset_cause", "uptime", "vbatt"]
    for message in observer.since(0):
        if message.topic == topic:
            records = json.loads(message.payload)
            assert next(iter(records[0])) in ("v", "vs")  # value before name, as the firmware
            assert _records(message.payload)["fw_v_minor"] == 26


def test_successful_ota(sim: Simulator, observer: Observer, broker: int) -> None:
    index = 0
    size = _package_size(sim, "4f1c2a9e.tar")
    mark = observer.mark()
    observer.publish(sim.ota_topic(index), _request("4f1c2a9e", ".tar", size))

    stat_topic = f"{sim.control_prefix(index)}/stat"

    def done(messages: list[mqtt.MQTTMessage]) -> bool:
        return any(m.topic == stat_topic for m in messages)

    messages = observer.wait_for(done, mark)
    ota = sim.ota_topic(index)
    relevant = [m for m in messages if m.topic in (ota, stat_topic)]
    # Our own retained request comes back first, then: e=1, the empty clear, /stat.
    kinds = []
    for message in relevant:
        if message.topic == stat_topic:
            kinds.append("stat")
        elif not message.payload:
            kinds.append("clear")
        else:
            kinds.append(f"e={_records(message.payload)['e']}")
    assert kinds == ["e=0", "e=1", "clear", "stat"]
    applied = json.loads(relevant[1].payload)
    assert applied == [{"v": 1, "n": "e"}, {"vs": "4f1c2a9e", "n": "i"}]
    stat = _records(relevant[3].payload)
    assert stat["sw_commit"] == "4f1c2a9"
    assert stat["sw_branch"] == "master"
    assert stat["hw_version"] == "esp32s3"
    assert _retained(broker, ota) is None
    persisted = json.loads((sim.state_dir / f"{sim.device(index)['id']}.json").read_text())
    assert persisted == {"sw_branch": "master", "sw_commit": "4f1c2a9"}


def test_real_gzip_can_not_apply(sim: Simulator, observer: Observer, broker: int) -> None:
    index = 1
    size = _package_size(sim, "0badf00d.tar.gz")
    mark = observer.mark()
    observer.publish(sim.ota_topic(index), _request("0badf00d", ".tar.gz", size))
    messages = observer.wait_for(
        lambda ms: any(m.topic == sim.ota_topic(index) and not m.payload for m in ms), mark
    )
    assert _reports(sim, index, messages) == [{"e": 2, "i": "0badf00d", "m": "can not apply"}]
    assert _retained(broker, sim.ota_topic(index)) is None


def test_unknown_file_can_not_download_and_retries(
    sim: Simulator, observer: Observer, broker: int
) -> None:
    index = 2
    request = _request("deadbeef", ".tar", 1234)
    mark = observer.mark()
    observer.publish(sim.ota_topic(index), request)
    messages = observer.wait_for(lambda ms: len(_reports(sim, index, ms)) >= 2, mark)
    failed = {"e": 2, "i": "deadbeef", "m": "can not download"}
    assert _reports(sim, index, messages)[:2] == [failed, failed]
    assert not any(m.topic == sim.ota_topic(index) and not m.payload for m in messages)
    assert _retained(broker, sim.ota_topic(index)) == request.encode()
    observer.publish(sim.ota_topic(index), b"")


def test_not_enough_space_reports_twice(sim: Simulator, observer: Observer, broker: int) -> None:
    index = 3
    request = _request("4f1c2a9e", ".tar", 5_000_000)
    mark = observer.mark()
    observer.publish(sim.ota_topic(index), request)
    messages = observer.wait_for(lambda ms: len(_reports(sim, index, ms)) >= 2, mark)
    assert _reports(sim, index, messages)[:2] == [
        {"e": 2, "i": "4f1c2a9e", "m": "not enough space"},
        {"e": 2, "i": "4f1c2a9e", "m": "can not download"},
    ]
    assert _retained(broker, sim.ota_topic(index)) == request.encode()
    observer.publish(sim.ota_topic(index), b"")


def test_requests_the_firmware_ignores(sim: Simulator, observer: Observer, broker: int) -> None:
    size = _package_size(sim, "4f1c2a9e.tar")
    ignored = {
        4: _request("4f1c2a9e", ".tar", size, e="0", e_key="vs"),
        5: _request("4f1c2a9e", ".tar", size, e=0.0),
    }
    mark = observer.mark()
    for index, request in ignored.items():
        observer.publish(sim.ota_topic(index), request)
    # Two complete wakes of each device after the request prove it was read and ignored.
    observer.wait_for(
        lambda ms: all(_telemetry_count(sim, index, ms) >= 3 for index in ignored),
        mark,
    )
    messages = observer.since(mark)
    for index, request in ignored.items():
        assert _reports(sim, index, messages) == []
        assert _retained(broker, sim.ota_topic(index)) == request.encode()
        observer.publish(sim.ota_topic(index), b"")


def test_retained_config_starves_ota(sim: Simulator, observer: Observer, broker: int) -> None:
    index = 6
    config_topic = f"{sim.control_prefix(index)}/config"
    size = _package_size(sim, "4f1c2a9e.tar")
    mark = observer.mark()
    observer.publish(config_topic, json.dumps([{"n": "wake_period", "v": 300}]))
    observer.publish(sim.ota_topic(index), _request("4f1c2a9e", ".tar", size))
    observer.wait_for(lambda ms: _telemetry_count(sim, index, ms) >= 3, mark)
    assert _reports(sim, index, observer.since(mark)) == []

    # Once the other retained message is gone, the same request goes through.
    mark = observer.mark()
    observer.publish(config_topic, b"")
    messages = observer.wait_for(lambda ms: len(_reports(sim, index, ms)) >= 1, mark)
    assert _reports(sim, index, messages) == [{"e": 1, "i": "4f1c2a9e"}]


def test_pax_package_applies_with_junk(sim: Simulator, observer: Observer) -> None:
    index = 7
    data = build_package("pax", sw_commit="fa11ed0")
    (sim.packages / "00ba5e11.tar").write_bytes(data)
    mark = observer.mark()
    observer.publish(sim.ota_topic(index), _request("00ba5e11", ".tar", len(data)))
    messages = observer.wait_for(lambda ms: len(_reports(sim, index, ms)) >= 1, mark)
    assert _reports(sim, index, messages) == [{"e": 1, "i": "00ba5e11"}]
    observer.wait_for(lambda _ms: "junk file" in sim.log.read_text(), mark)


def test_cellular_device_checks_size(broker: int, tmp_path: Path) -> None:
    """A cellular device rejects a download whose length differs from the request's size."""
    log = tmp_path / "cellular.log"
    process, ready = _start_simulator(
        [
            "--mqtt-port",
            str(broker),
            "--devices",
            "1",
            "--seed",
            "cellular-tests",
            "--cellular",
            "--wake-period",
            str(WAKE_PERIOD),
            "--listen-window",
            str(LISTEN_WINDOW),
            "--packages",
            str(tmp_path / "packages"),
            "--demo-packages",
        ],
        log,
    )
    try:
        size = (tmp_path / "packages" / "4f1c2a9e.tar").stat().st_size
        ota = f"channels/{ready['control_channel']}/messages/{ready['devices'][0]['id']}/ota"
        seen: list[dict[str, Any]] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2)

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            if message.payload and _records(message.payload).get("e") in (1, 2):
                seen.append(_records(message.payload))

        client.on_message = on_message
        client.connect("127.0.0.1", broker)
        client.loop_start()
        client.subscribe(ota, 1)
        client.publish(ota, _request("4f1c2a9e", ".tar", size + 1), qos=1, retain=True)
        deadline = time.monotonic() + TIMEOUT
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[:1] == [{"e": 2, "i": "4f1c2a9e", "m": "can not download"}]
        client.publish(ota, _request("4f1c2a9e", ".tar", size), qos=1, retain=True)
        deadline = time.monotonic() + TIMEOUT
        while not any(r["e"] == 1 for r in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {"e": 1, "i": "4f1c2a9e"} in seen
        client.disconnect()
        client.loop_stop()
    finally:
        assert _stop_simulator(process) == 0


def test_logs_never_contain_device_keys(sim: Simulator) -> None:
    text = sim.log.read_text()
    assert "packages/download" in text  # the access log did record the downloads
    assert "dk=" not in text
    for index in range(DEVICES):
        assert device_identity(index, SEED).key not in text


def test_restart_keeps_versions(sim: Simulator, broker: int, tmp_path: Path) -> None:
    """A second run with the same seed and state folder reports the persisted version."""
    process, ready = _start_simulator(
        ["console", "--seed", SEED, "--devices", "1", "--state-dir", str(sim.state_dir)],
        tmp_path / "console.log",
    )
    assert _stop_simulator(process) == 0
    assert ready["devices"][0]["id"] == sim.device(0)["id"]
    assert ready["devices"][0]["sw_commit"] == "4f1c2a9"


# ---------------------------------------------------------------------------------------------
# Package builders and the firmware-like reader (no broker needed).


def test_ustar_package_has_no_extension_headers() -> None:
    data = build_package("ustar", sw_commit="abc1234", sw_branch="release", files=3)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert all(not member.pax_headers for member in members)
        names = [member.name for member in members]
    assert names.index("apps") < names.index("apps/demo_console")
    assert names.index("apps/demo_console") < names.index("apps/demo_console/scenario.py")
    assert b"PaxHeader" not in data
    contents = read_package(data, ".tar")
    assert (contents.sw_commit, contents.sw_branch) == ("abc1234", "release")
    assert len(contents.files) == 4
    assert contents.junk_files == []
    assert build_package("ustar") == build_package("ustar")  # reproducible


def test_reader_accepts_what_the_firmware_accepts() -> None:
    assert read_package(build_package("microfreezer"), ".tar.gz").sw_commit == "4f1c2a9"
    assert read_package(build_package("pax"), ".tar").junk_files
    for fmt, file_type in (("gzip", ".tar.gz"), ("garbage", ".tar"), ("ustar", ".zip")):
        with pytest.raises(PackageError):
            read_package(build_package(fmt), file_type)  # type: ignore[arg-type]
    assert read_package(build_package("ustar", sw_commit=None), ".tar").sw_commit is None
    assert set(PACKAGE_EXTENSIONS) == {"ustar", "pax", "microfreezer", "gzip", "garbage"}


def test_file_without_its_directory_can_not_apply() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("apps/new_app/main.py")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(PackageError):
        read_package(buffer.getvalue(), ".tar")


@pytest.mark.parametrize(
    ("payload", "pending"),
    [
        (_request("a", ".tar", 10), True),
        (_request("a", ".tar", 10, e=0.0), False),
        (_request("a", ".tar", 10, e="0", e_key="vs"), False),
        (_request("a", ".tar", 10, e=1), False),
        ('[{"v":0,"n":"e"},{"vs":"a","n":"i"},{"vs":".tar","n":"t"}]', False),
        ("", False),
        ("not json", False),
    ],
)
def test_parse_ota_request_like_the_firmware(payload: str, pending: bool) -> None:
    assert (parse_ota_request(payload.encode()) is not None) is pending


def test_make_package_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "make-package",
            "--out",
            str(tmp_path),
            "--file-id",
            "12345678",
            "--format",
            "microfreezer",
            "--sw-commit",
            "c0ffee1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    path, size, sha256 = result.stdout.split()
    data = Path(path).read_bytes()
    assert Path(path).name == "12345678.tar.gz"
    assert int(size) == len(data)
    assert sha256 == hashlib.sha256(data).hexdigest()


def test_reboot_delay_option() -> None:
    from simulator.cli import build_parser  # noqa: PLC0415

    base = ["devices", "--mqtt-port", "1883"]
    assert build_parser().parse_args(base).reboot_delay == 1.0
    assert build_parser().parse_args([*base, "--reboot-delay", "6"]).reboot_delay == 6.0


@pytest.mark.parametrize(
    ("failure", "reports", "cleared", "free_flash"),
    [
        ("apply", [{"e": 2, "i": "4f1c2a9e", "m": "can not apply"}], True, 1_000_000),
        ("download", [{"e": 2, "i": "4f1c2a9e", "m": "can not download"}], False, 1_000_000),
        (
            "space",
            [
                {"e": 2, "i": "4f1c2a9e", "m": "not enough space"},
                {"e": 2, "i": "4f1c2a9e", "m": "can not download"},
            ],
            False,
            256,
        ),
    ],
)
def test_failing_devices(
    broker: int,
    tmp_path: Path,
    failure: str,
    reports: list[dict[str, Any]],
    *,
    cleared: bool,
    free_flash: int,
) -> None:
    """`--failing-devices 1 --failing-from 1`: device 1 fails every OTA as told, 0 applies."""
    seed = f"failing-{failure}"
    prefix = f"channels/{project_identity(seed).control_channel}/messages"
    seen: dict[str, list[Any]] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with lock:
            seen.setdefault(message.topic, []).append(
                _records(message.payload) if message.payload else None
            )

    def wait(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with lock:
                if condition():
                    return
            time.sleep(0.05)
        raise AssertionError(f"condition not met; saw {seen!r}")

    # Subscribed before the devices start: their power-on /stat is not retained.
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", broker)
    client.loop_start()
    client.subscribe(f"{prefix}/#", 1)
    assert subscribed.wait(TIMEOUT)
    process, _ = _start_simulator(
        [
            "--mqtt-port",
            str(broker),
            "--devices",
            "2",
            "--seed",
            seed,
            "--failing-devices",
            "1",
            "--failing-from",
            "1",
            "--failure",
            failure,
            "--wake-period",
            str(WAKE_PERIOD),
            "--listen-window",
            str(LISTEN_WINDOW),
            "--packages",
            str(tmp_path / "packages"),
            "--demo-packages",
        ],
        tmp_path / "failing.log",
    )
    try:
        size = (tmp_path / "packages" / "4f1c2a9e.tar").stat().st_size
        healthy, failing = (f"{prefix}/{device_identity(i, seed).id}" for i in range(2))
        wait(lambda: f"{healthy}/stat" in seen and f"{failing}/stat" in seen)
        assert seen[f"{healthy}/stat"][0]["free_flash"] == 1_000_000
        assert seen[f"{failing}/stat"][0]["free_flash"] == free_flash
        for device in (healthy, failing):
            client.publish(f"{device}/ota", _request("4f1c2a9e", ".tar", size), qos=1, retain=True)

        def statuses(device: str) -> list[Any]:
            return [r for r in seen.get(f"{device}/ota", []) if r and r["e"] in (1, 2)]

        wait(lambda: len(statuses(failing)) >= len(reports) and len(statuses(healthy)) >= 1)
        assert statuses(healthy)[0] == {"e": 1, "i": "4f1c2a9e"}
        assert statuses(failing)[: len(reports)] == reports
        assert (_retained(broker, f"{failing}/ota") is None) is cleared
        client.publish(f"{failing}/ota", b"", qos=1, retain=True).wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
        assert _stop_simulator(process) == 0


def test_failing_devices_options() -> None:
    from simulator.cli import build_parser  # noqa: PLC0415

    base = ["devices", "--mqtt-port", "1883"]
    args = build_parser().parse_args(base)
    assert (args.failing_devices, args.failing_from, args.failure) == (0, 0, "apply")
    args = build_parser().parse_args([*base, "--failing-devices", "2", "--failure", "space"])
    assert (args.failing_devices, args.failing_from, args.failure) == (2, 0, "space")
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--failing-devices", "-1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--failure", "boom"])

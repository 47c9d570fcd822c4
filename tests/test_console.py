"""Tests of the console REST client against a real local aiohttp server.

Each test starts a small aiohttp application on 127.0.0.1 that plays the part of the console, so
the client goes through real sockets, real HTTP parsing and real aiohttp timeouts. The project's
console simulator is deliberately not used: these handlers misbehave in ways a faithful simulator
should not (wrong shapes, truncated bodies, sleeping past the timeout).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import hashlib
import json
import logging
import socket
from typing import Any
from unittest.mock import Mock

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict
import pytest

from custom_components.insighio_ota.console import (
    API_PATH,
    DEFAULT_CONSOLE_URL,
    MAX_ANSWER_BYTES,
    ApiKey,
    ConsoleAuthenticationError,
    ConsoleClient,
    ConsoleConnectionError,
    ConsoleDevice,
    ConsoleError,
    ConsoleResponseError,
    PackageDownload,
    PackageNotFoundError,
    normalize_console_url,
)

pytestmark = pytest.mark.usefixtures("socket_enabled")

# Distinctive secrets, so that a leak anywhere is easy to find with a substring search.
DEVICE_KEY = "dk-5ec2e7a1-9b1d-4e7a-b0e5-1cec7a11f00d"
API_TOKEN = "apikey-0f3c9e1b-7a44-4d2b-9c3e-5d1e2f3a4b5c"
LOGIN_TOKEN = "login-token-8d7c6b5a-4f3e-2d1c-0b9a-887766554433"
PASSWORD = "hunter2-p4ssw0rd-do-not-log"
SECRETS = (DEVICE_KEY, API_TOKEN, LOGIN_TOKEN, PASSWORD)

DEVICE = ConsoleDevice(
    device_id="0e3a1c52-5d52-4a0e-9f3e-6a2c5f1d9b01",
    name="Greenhouse",
    key=DEVICE_KEY,
    data_channel="5b9d8c1a-0000-4000-8000-00000000da7a",
    control_channel="5b9d8c1a-0000-4000-8000-0000000c7a1c",
)

type Serve = Callable[..., Awaitable[ConsoleClient]]
type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """What a handler saw of a request, kept because the request is unusable afterwards."""

    headers: CIMultiDict[str]
    query: MultiDict[str]
    body: bytes

    @classmethod
    async def of(cls, request: web.Request) -> Seen:
        """Capture a request while it is being handled."""
        return cls(CIMultiDict(request.headers), MultiDict(request.query), await request.read())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """Return a client session closed after the test, as HA's shared session would be."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def serve(aiohttp_server: Any, session: aiohttp.ClientSession) -> Serve:
    """Return a factory: start a console stand-in with the given routes, get a client of it."""

    async def _serve(
        *routes: web.RouteDef,
        request_timeout: float = 5.0,
        token: str | None = API_TOKEN,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> ConsoleClient:
        app = web.Application()
        app.add_routes(routes)
        server = await aiohttp_server(app)
        return ConsoleClient(
            session,
            str(server.make_url("/")),
            token=token,
            request_timeout=request_timeout,
            download_timeout=request_timeout,
            max_answer_bytes=max_answer_bytes,
        )

    return _serve


def route(method: str, path: str, handler: Handler) -> web.RouteDef:
    """Return a route under the console's API path."""
    return web.route(method, f"{API_PATH}{path}", handler)


def respond(
    body: Any = None, *, status: int = 200, raw: bytes | None = None
) -> tuple[Handler, list[Seen]]:
    """Return a handler answering ``body`` as JSON (or ``raw`` bytes) and the requests it saw."""
    seen: list[Seen] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(await Seen.of(request))
        if raw is not None:
            return web.Response(body=raw, status=status)
        return web.json_response(body, status=status)

    return handler, seen


def streaming_handler(chunk: bytes, *, start: bytes = b"") -> Handler:
    """Return a handler streaming `start`, then `chunk` 64 times, without a Content-Length."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if start:
                await response.write(start)
            for _ in range(64):
                await response.write(chunk)
                await asyncio.sleep(0)
            await response.write_eof()
        except ConnectionError:
            pass  # The client hung up once it had seen enough, which is the point.
        return response

    return handler


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and every exception reachable through ``__cause__`` and ``__context__``."""
    pending: list[BaseException] = [exc]
    visited: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def assert_no_secrets(exc: BaseException) -> None:
    """Assert that no secret appears in the error, its arguments or its whole chain."""
    for link in error_chain(exc):
        text = f"{link!s} {link!r} {link.args!r}"
        for secret in SECRETS:
            assert secret not in text, f"secret leaked through {type(link).__name__}"


def closed_port() -> int:
    """Return a loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- normalize_console_url --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (DEFAULT_CONSOLE_URL, "https://console.insigh.io"),
        ("  https://Console.Insigh.IO/  ", "https://console.insigh.io"),
        ("HTTP://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://console.insigh.io/mf-rproxy", "https://console.insigh.io"),
        ("https://console.insigh.io/mf-rproxy/", "https://console.insigh.io"),
        ("https://example.org/insighio//", "https://example.org/insighio"),
        ("https://example.org/insighio/mf-rproxy", "https://example.org/insighio"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
    ],
)
def test_normalize_console_url(url: str, expected: str) -> None:
    """Valid URLs are stripped of whitespace, trailing slashes and the API path."""
    assert normalize_console_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "console.insigh.io",
        "localhost:8080",
        "ftp://console.insigh.io",
        "http://",
        "https:///mf-rproxy",
        "http://example.org:0",
        "http://example.org:99999",
        "http://example.org:port",
        "https://user:secret@console.insigh.io",
        "https://user@console.insigh.io",
        "https://console.insigh.io/?a=1",
        "https://console.insigh.io/#top",
    ],
)
def test_normalize_console_url_invalid(url: str) -> None:
    """Anything that is not a plain http(s) URL with a host is refused."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message is for humans, not for tests.
        normalize_console_url(url)


async def test_client_construction(session: aiohttp.ClientSession) -> None:
    """The client normalizes its URL, validates its timeout and exposes a settable token."""
    client = ConsoleClient(session)
    assert client.base_url == DEFAULT_CONSOLE_URL
    assert client.token is None
    assert client.skipped_device_ids == ()
    client.token = API_TOKEN
    assert client.token == API_TOKEN
    assert ConsoleClient(session, "http://127.0.0.1:1/", token="t").base_url == (
        "http://127.0.0.1:1"
    )
    with pytest.raises(ValueError, match="timeout"):
        ConsoleClient(session, request_timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        ConsoleClient(session, download_timeout=0)
    with pytest.raises(ValueError, match="http"):
        ConsoleClient(session, "console.insigh.io")


# --- login ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201])
async def test_login(serve: Serve, status: int) -> None:
    """Login posts the credentials without any Authorization header and returns the token."""
    handler, seen = respond({"token": LOGIN_TOKEN}, status=status)
    client = await serve(route("POST", "/tokens", handler), token=None)

    assert await client.login("user@example.org", PASSWORD) == LOGIN_TOKEN

    assert len(seen) == 1
    assert "Authorization" not in seen[0].headers
    assert json.loads(seen[0].body) == {"email": "user@example.org", "password": PASSWORD}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ConsoleResponseError),
        (401, ConsoleAuthenticationError),
        (403, ConsoleAuthenticationError),
        (404, ConsoleResponseError),
        (429, ConsoleConnectionError),
        (500, ConsoleConnectionError),
        (502, ConsoleConnectionError),
        (503, ConsoleConnectionError),
    ],
)
async def test_login_status_mapping(serve: Serve, status: int, error: type[ConsoleError]) -> None:
    """Each HTTP status maps to the error the caller acts on, with the status attached."""
    handler, _ = respond({"error": "nope"}, status=status)
    client = await serve(route("POST", "/tokens", handler))

    with pytest.raises(error) as exc_info:
        await client.login("user@example.org", PASSWORD)

    assert type(exc_info.value) is error
    assert exc_info.value.status == status
    assert str(status) in str(exc_info.value)
    assert "login" in str(exc_info.value)
    assert_no_secrets(exc_info.value)


async def test_login_redirect_is_not_followed(serve: Serve) -> None:
    """A redirect is an unexpected status: following it could send credentials elsewhere."""
    target, target_seen = respond({"token": LOGIN_TOKEN})

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(f"{API_PATH}/elsewhere")

    client = await serve(route("POST", "/tokens", redirect), route("POST", "/elsewhere", target))

    with pytest.raises(ConsoleResponseError) as exc_info:
        await client.login("user@example.org", PASSWORD)

    assert exc_info.value.status == 307
    assert target_seen == []


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>Bad gateway</html>",
        b"",
        b"\xff\xfe not utf-8",
        b"[]",
        b'"token"',
        b"{}",
        b'{"token": ""}',
        b'{"token": 42}',
        b'{"token": null}',
        b"[" * 100_000,  # Nested deeper than the JSON parser's stack.
    ],
)
async def test_login_bad_body(serve: Serve, raw: bytes) -> None:
    """A body that is not JSON, or has no usable token, is a response error."""
    handler, _ = respond(raw=raw, status=201)
    client = await serve(route("POST", "/tokens", handler))

    with pytest.raises(ConsoleResponseError) as exc_info:
        await client.login("user@example.org", PASSWORD)

    assert type(exc_info.value) is ConsoleResponseError
    assert exc_info.value.status is None


# --- create_api_key ---------------------------------------------------------------------------


async def test_create_api_key(serve: Serve) -> None:
    """The key request carries the bare login token, type 3 and the duration in seconds."""
    handler, seen = respond(
        {
            "id": "key-id-1",
            "name": "Home Assistant",
            "value": API_TOKEN,
            "issued_at": "2025-12-03T16:30:00.123456789Z",
            "expires_at": "2026-12-03T16:30:00.123456789Z",
        },
        status=201,
    )
    client = await serve(route("POST", "/keys", handler), token=None)

    key = await client.create_api_key(
        LOGIN_TOKEN, "Home Assistant", timedelta(days=365, seconds=0.7)
    )

    assert key == ApiKey(
        key_id="key-id-1",
        value=API_TOKEN,
        expires_at=datetime(2026, 12, 3, 16, 30, 0, 123456, tzinfo=UTC),
    )
    assert seen[0].headers["Authorization"] == LOGIN_TOKEN
    assert json.loads(seen[0].body) == {"name": "Home Assistant", "type": 3, "duration": 31536000}


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [
        (None, None),
        ("", None),
        ("0001-01-01T00:00:00Z", None),
        ("2026-12-03T16:30:00Z", datetime(2026, 12, 3, 16, 30, tzinfo=UTC)),
        ("2026-12-03T18:30:00.5+02:00", datetime(2026, 12, 3, 16, 30, 0, 500000, tzinfo=UTC)),
        ("2026-12-03T16:30:00", datetime(2026, 12, 3, 16, 30, tzinfo=UTC)),
    ],
)
async def test_create_api_key_expiry(
    serve: Serve, expires_at: str | None, expected: datetime | None
) -> None:
    """Expiry is parsed into aware UTC time; no expiry (null, empty, Go's zero time) is None."""
    handler, _ = respond({"id": "k", "value": API_TOKEN, "expires_at": expires_at})
    client = await serve(route("POST", "/keys", handler))

    key = await client.create_api_key(LOGIN_TOKEN, "ha", timedelta(hours=1))

    assert key.expires_at == expected
    assert key.expires_at is None or key.expires_at.tzinfo is UTC


async def test_create_api_key_without_expiry_field(serve: Serve) -> None:
    """A key answer without ``expires_at`` at all is a key that does not expire."""
    handler, _ = respond({"id": "k", "value": API_TOKEN})
    client = await serve(route("POST", "/keys", handler))

    assert (await client.create_api_key(LOGIN_TOKEN, "ha", timedelta(hours=1))).expires_at is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"value": API_TOKEN},
        {"id": "k"},
        {"id": "", "value": API_TOKEN},
        {"id": "k", "value": None},
        {"id": "k", "value": API_TOKEN, "expires_at": 1764779400},
        {"id": "k", "value": API_TOKEN, "expires_at": "next tuesday"},
    ],
)
async def test_create_api_key_bad_body(serve: Serve, body: Any) -> None:
    """Missing id or value, or an unreadable expiry, is a response error without secrets."""
    handler, _ = respond(body, status=201)
    client = await serve(route("POST", "/keys", handler))

    with pytest.raises(ConsoleResponseError) as exc_info:
        await client.create_api_key(LOGIN_TOKEN, "ha", timedelta(hours=1))

    assert "create API key" in str(exc_info.value)
    assert_no_secrets(exc_info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, ConsoleAuthenticationError),
        (403, ConsoleAuthenticationError),
        (409, ConsoleResponseError),
        (500, ConsoleConnectionError),
    ],
)
async def test_create_api_key_status_mapping(
    serve: Serve, status: int, error: type[ConsoleError]
) -> None:
    """A rejected login token is an authentication error, like on login."""
    handler, _ = respond({}, status=status)
    client = await serve(route("POST", "/keys", handler))

    with pytest.raises(error) as exc_info:
        await client.create_api_key(LOGIN_TOKEN, "ha", timedelta(hours=1))

    assert type(exc_info.value) is error
    assert_no_secrets(exc_info.value)


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=0.9), timedelta(days=-1)])
async def test_create_api_key_rejects_short_duration(
    session: aiohttp.ClientSession, duration: timedelta
) -> None:
    """A duration under one second is refused before anything is sent."""
    client = ConsoleClient(session, f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ValueError, match="duration"):
        await client.create_api_key(LOGIN_TOKEN, "ha", duration)


# --- list_devices -----------------------------------------------------------------------------


def device_entry(device_id: str, **overrides: Any) -> dict[str, Any]:
    """Return a device list entry as the console sends it, with optional overrides."""
    entry: dict[str, Any] = {
        "id": device_id,
        "name": f"name-{device_id}",
        "key": f"{DEVICE_KEY}-{device_id}",
        "metadata": {"dataChannel": "data-ch", "controlChannel": "ctrl-ch", "type": "node"},
    }
    entry.update(overrides)
    return entry


async def test_list_devices(serve: Serve) -> None:
    """Usable devices are returned in order; the others are skipped and their ids kept."""
    handler, seen = respond(
        [
            device_entry("a"),
            device_entry("no-metadata", metadata=None),
            device_entry("no-ctrl", metadata={"dataChannel": "data-ch"}),
            device_entry("no-data", metadata={"controlChannel": "ctrl-ch", "dataChannel": ""}),
            device_entry("no-key", key=None),
            device_entry("", name="nameless-id"),
            device_entry("b", name=""),
            device_entry("c", name=None, metadata={"dataChannel": "d2", "controlChannel": "c2"}),
        ]
    )
    client = await serve(route("GET", "/device/list", handler))

    devices = await client.list_devices()

    assert [d.device_id for d in devices] == ["a", "b", "c"]
    assert devices[0] == ConsoleDevice(
        device_id="a",
        name="name-a",
        key=f"{DEVICE_KEY}-a",
        data_channel="data-ch",
        control_channel="ctrl-ch",
        metadata={"dataChannel": "data-ch", "controlChannel": "ctrl-ch", "type": "node"},
    )
    # A device without a name is named after its id, so that HA always has something to show.
    assert devices[1].name == "b"
    assert devices[2].name == "c"
    assert (devices[2].data_channel, devices[2].control_channel) == ("d2", "c2")
    assert client.skipped_device_ids == ("no-metadata", "no-ctrl", "no-data", "no-key", "")
    # The console wants the bare token: no "Bearer" scheme.
    assert seen[0].headers["Authorization"] == API_TOKEN


async def test_list_devices_skipped_ids_reset(serve: Serve) -> None:
    """Each call replaces the skipped ids of the previous one."""
    answers = [[device_entry("x", metadata={})], [device_entry("a")]]

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(answers.pop(0))

    client = await serve(route("GET", "/device/list", handler))

    assert await client.list_devices() == []
    assert client.skipped_device_ids == ("x",)
    assert [d.device_id for d in await client.list_devices()] == ["a"]
    assert not client.skipped_device_ids


async def test_list_devices_empty(serve: Serve) -> None:
    """An account without devices gives an empty list, not an error."""
    handler, _ = respond([])
    client = await serve(route("GET", "/device/list", handler))

    assert await client.list_devices() == []


@pytest.mark.parametrize("token", [None, ""])
async def test_list_devices_without_token(
    session: aiohttp.ClientSession, token: str | None
) -> None:
    """Without a token nothing is sent and the caller is told to authenticate."""
    client = ConsoleClient(session, f"http://127.0.0.1:{closed_port()}", token=token)

    with pytest.raises(ConsoleAuthenticationError, match="no API key"):
        await client.list_devices()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, ConsoleAuthenticationError),
        (403, ConsoleAuthenticationError),
        (404, ConsoleResponseError),
        (500, ConsoleConnectionError),
        (504, ConsoleConnectionError),
    ],
)
async def test_list_devices_status_mapping(
    serve: Serve, status: int, error: type[ConsoleError]
) -> None:
    """A revoked or expired API key is an authentication error (the glue starts a reauth)."""
    handler, _ = respond([device_entry("a")], status=status)
    client = await serve(route("GET", "/device/list", handler))

    with pytest.raises(error) as exc_info:
        await client.list_devices()

    assert type(exc_info.value) is error
    assert exc_info.value.status == status
    assert_no_secrets(exc_info.value)


@pytest.mark.parametrize(
    "body",
    [
        {"devices": [device_entry("a")]},
        {"total": 1, "things": [device_entry("a")]},
        "a",
        None,
        [device_entry("a"), "b"],
        [device_entry("a"), None],
    ],
)
async def test_list_devices_wrong_shape(serve: Serve, body: Any) -> None:
    """Anything but a list of objects means the API changed: a response error."""
    handler, _ = respond(body)
    client = await serve(route("GET", "/device/list", handler))

    with pytest.raises(ConsoleResponseError) as exc_info:
        await client.list_devices()

    assert_no_secrets(exc_info.value)


async def test_list_devices_malformed_json_keeps_keys_out_of_errors(serve: Serve) -> None:
    """A truncated device list must not leak the keys it holds through the decoding error."""
    body = json.dumps([device_entry("a")]).encode()[:-10]
    assert DEVICE_KEY.encode() in body
    handler, _ = respond(raw=body)
    client = await serve(route("GET", "/device/list", handler))

    with pytest.raises(ConsoleResponseError, match="JSON") as exc_info:
        await client.list_devices()

    assert exc_info.value.__cause__ is None
    assert exc_info.value.__context__ is None
    assert_no_secrets(exc_info.value)


# --- download_package -------------------------------------------------------------------------


def package_handler(
    content: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> tuple[Handler, list[Seen]]:
    """Return a download handler that serves ``content`` with a Content-Length."""
    seen: list[Seen] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(await Seen.of(request))
        return web.Response(body=content, status=status, headers=headers)

    return handler, seen


async def test_download_package(serve: Serve) -> None:
    """The download uses the device's credentials and reports exact size and sha256."""
    # Larger than one read chunk, so that hashing across chunks is exercised.
    content = bytes(range(256)) * 1000 + b"tail"
    handler, seen = package_handler(content)
    client = await serve(route("GET", "/packages/download", handler))

    package = await client.download_package("7985d8c2", DEVICE)

    assert package == PackageDownload(
        size=len(content), sha256=hashlib.sha256(content).hexdigest(), content=content
    )
    request = seen[0]
    assert dict(request.query) == {
        "fuid": "7985d8c2",
        "did": DEVICE.device_id,
        "dk": DEVICE_KEY,
        "cid": DEVICE.control_channel,
    }
    # The endpoint is device-authenticated: the account's API key must not be sent along.
    assert "Authorization" not in request.headers
    assert request.headers["Accept-Encoding"] == "identity"


async def test_download_package_chunked(serve: Serve) -> None:
    """A body without Content-Length is read to its end and measured all the same."""
    parts = [b"a" * 70_000, b"b" * 10, b"c" * 65_536]

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in parts:
            await response.write(part)
        await response.write_eof()
        return response

    client = await serve(route("GET", "/packages/download", handler))

    package = await client.download_package("7985d8c2", DEVICE)

    content = b"".join(parts)
    assert (package.size, package.sha256) == (len(content), hashlib.sha256(content).hexdigest())


async def test_download_package_query_is_encoded(serve: Serve) -> None:
    """Odd characters in a file id cannot inject query parameters."""
    handler, seen = package_handler(b"x")
    client = await serve(route("GET", "/packages/download", handler))

    await client.download_package("a&dk=evil#frag", DEVICE)

    assert seen[0].query["fuid"] == "a&dk=evil#frag"
    assert seen[0].query.getall("dk") == [DEVICE_KEY]


async def test_device_list_larger_than_the_cap_is_refused_while_reading(serve: Serve) -> None:
    """A console streaming an endless device list cannot make us buffer all of it."""
    handler = streaming_handler(b'{"id": "x"},' * 100, start=b'{"devices": [')
    client = await serve(route("GET", "/device/list", handler), max_answer_bytes=4096)

    with pytest.raises(ConsoleResponseError, match="larger than 4096 bytes") as exc_info:
        await client.list_devices()

    assert exc_info.value.status == 200
    assert_no_secrets(exc_info.value)


async def test_download_package_exactly_at_cap(serve: Serve) -> None:
    """A package of exactly ``max_bytes`` is accepted."""
    handler, _ = package_handler(b"z" * 1000)
    client = await serve(route("GET", "/packages/download", handler))

    assert (await client.download_package("f", DEVICE, max_bytes=1000)).size == 1000


async def test_download_package_refuses_announced_oversize(serve: Serve) -> None:
    """A Content-Length over the cap is refused before the body is read."""
    handler, _ = package_handler(b"z" * 1001)
    client = await serve(route("GET", "/packages/download", handler))

    with pytest.raises(ConsoleResponseError, match="larger than 1000 bytes") as exc_info:
        await client.download_package("f", DEVICE, max_bytes=1000)

    assert_no_secrets(exc_info.value)


async def test_download_package_refuses_streamed_oversize(serve: Serve) -> None:
    """Without Content-Length the cap is enforced while reading, not after."""
    client = await serve(route("GET", "/packages/download", streaming_handler(b"q" * 1024)))

    with pytest.raises(ConsoleResponseError, match="larger than 4096 bytes") as exc_info:
        await client.download_package("f", DEVICE, max_bytes=4096)

    assert exc_info.value.status == 200
    assert_no_secrets(exc_info.value)


async def test_download_package_refuses_content_encoding(serve: Serve) -> None:
    """A content-encoded body is not what the device would store: refuse to measure it."""
    handler, _ = package_handler(b"not really gzip", headers={"Content-Encoding": "x-custom"})
    client = await serve(route("GET", "/packages/download", handler))

    with pytest.raises(ConsoleResponseError, match="content-encoded"):
        await client.download_package("f", DEVICE)


async def test_download_package_identity_encoding_is_fine(serve: Serve) -> None:
    """An explicit ``identity`` Content-Encoding is the same as none."""
    handler, _ = package_handler(b"abc", headers={"Content-Encoding": "Identity"})
    client = await serve(route("GET", "/packages/download", handler))

    assert (await client.download_package("f", DEVICE)).content == b"abc"


async def test_download_package_empty(serve: Serve) -> None:
    """An empty body cannot be an OTA package (the request size must be > 0)."""
    handler, _ = package_handler(b"")
    client = await serve(route("GET", "/packages/download", handler))

    with pytest.raises(ConsoleResponseError, match="empty"):
        await client.download_package("f", DEVICE)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, ConsoleAuthenticationError),
        (403, ConsoleAuthenticationError),
        (404, PackageNotFoundError),
        (302, ConsoleResponseError),
        (400, ConsoleResponseError),
        (500, ConsoleConnectionError),
        (503, ConsoleConnectionError),
    ],
)
async def test_download_package_status_mapping(
    serve: Serve, status: int, error: type[ConsoleError]
) -> None:
    """403 means wrong device credentials, 404 an unknown file id."""
    handler, _ = package_handler(b"error page", status=status)
    client = await serve(route("GET", "/packages/download", handler))

    with pytest.raises(error) as exc_info:
        await client.download_package("f", DEVICE)

    assert type(exc_info.value) is error
    assert exc_info.value.status == status
    assert "download package" in str(exc_info.value)
    assert_no_secrets(exc_info.value)


async def test_download_package_truncated_body(serve: Serve) -> None:
    """A body shorter than its Content-Length is a connection failure."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.close()
        return response

    client = await serve(route("GET", "/packages/download", handler))

    with pytest.raises(ConsoleConnectionError, match="cannot connect") as exc_info:
        await client.download_package("f", DEVICE)

    assert exc_info.value.__context__ is None
    assert_no_secrets(exc_info.value)


async def test_download_package_argument_checks(session: aiohttp.ClientSession) -> None:
    """An empty file id or a non-positive cap is a programming error, refused before sending."""
    client = ConsoleClient(session, f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ValueError, match="file_id"):
        await client.download_package("", DEVICE)
    with pytest.raises(ValueError, match="max_bytes"):
        await client.download_package("f", DEVICE, max_bytes=0)


# --- transport failures -----------------------------------------------------------------------


async def call_everything(client: ConsoleClient) -> list[ConsoleError]:
    """Call every operation and return the errors, which each call must raise."""
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.login("user@example.org", PASSWORD),
        lambda: client.create_api_key(LOGIN_TOKEN, "ha", timedelta(days=1)),
        client.list_devices,
        lambda: client.download_package("7985d8c2", DEVICE),
    ]
    errors: list[ConsoleError] = []
    for call in calls:
        with pytest.raises(ConsoleError) as exc_info:
            await call()
        errors.append(exc_info.value)
    return errors


async def test_timeout(serve: Serve) -> None:
    """A console slower than the request timeout is a connection error for every call."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response({})

    client = await serve(
        route("POST", "/tokens", slow),
        route("POST", "/keys", slow),
        route("GET", "/device/list", slow),
        route("GET", "/packages/download", slow),
        request_timeout=0.05,
    )

    for error in await call_everything(client):
        assert type(error) is ConsoleConnectionError
        assert "in time" in str(error)
        assert error.status is None
        assert error.__context__ is None
        assert_no_secrets(error)


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    """A console that is not listening is a connection error for every call."""
    client = ConsoleClient(session, f"http://127.0.0.1:{closed_port()}", token=API_TOKEN)

    for error in await call_everything(client):
        assert type(error) is ConsoleConnectionError
        assert "cannot connect" in str(error)
        assert error.__context__ is None
        assert_no_secrets(error)


async def test_tls_failure(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A TLS handshake failure (here, https against a plain HTTP server) is a connection error."""
    plain = await serve()
    client = ConsoleClient(session, plain.base_url.replace("http://", "https://"), token=API_TOKEN)

    for error in await call_everything(client):
        assert type(error) is ConsoleConnectionError
        assert_no_secrets(error)


async def test_url_carrying_aiohttp_errors_are_not_chained() -> None:
    """The aiohttp errors that quote the URL (and so the device key) never reach the caller.

    ``InvalidURL`` puts the URL in its text, as ``ClientResponseError`` does; the session is
    stubbed so that every request fails that way with the URL it was given.
    """

    def fail(_method: str, url: Any, **_kwargs: Any) -> None:
        raise aiohttp.InvalidURL(url)

    stub = Mock(spec=aiohttp.ClientSession)
    stub.request.side_effect = fail
    stub.get.side_effect = lambda url, **kwargs: fail("GET", url, **kwargs)
    client = ConsoleClient(stub, token=API_TOKEN)

    with pytest.raises(ConsoleConnectionError) as exc_info:
        await client.download_package("7985d8c2", DEVICE)
    assert exc_info.value.__context__ is None
    assert_no_secrets(exc_info.value)
    # The stub did see the key: the test would catch a leak if the error were chained.
    assert DEVICE_KEY in str(stub.get.call_args.args[0])

    for error in await call_everything(client):
        assert type(error) is ConsoleConnectionError
        assert_no_secrets(error)


async def test_logs_hold_no_secrets(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """At debug level the module logs operations and statuses, never credentials or URLs."""
    caplog.set_level(logging.DEBUG, logger="custom_components.insighio_ota.console")
    login, _ = respond({"token": LOGIN_TOKEN}, status=201)
    keys, _ = respond({"id": "k", "value": API_TOKEN})
    devices, _ = respond([device_entry("a")])

    async def download(request: web.Request) -> web.StreamResponse:
        if request.query["fuid"] == "missing":
            raise web.HTTPNotFound
        return web.Response(body=b"pkg")

    client = await serve(
        route("POST", "/tokens", login),
        route("POST", "/keys", keys),
        route("GET", "/device/list", devices),
        route("GET", "/packages/download", download),
    )

    await client.login("user@example.org", PASSWORD)
    await client.create_api_key(LOGIN_TOKEN, "ha", timedelta(days=1))
    await client.list_devices()
    await client.download_package("7985d8c2", DEVICE)
    with pytest.raises(PackageNotFoundError):
        await client.download_package("missing", DEVICE)

    own = [r for r in caplog.records if r.name == "custom_components.insighio_ota.console"]
    assert own, "the client is expected to log its operations at debug level"
    for record in own:
        message = record.getMessage()
        assert "://" not in message
        assert "dk=" not in message
        for secret in SECRETS:
            assert secret not in message


# --- dataclasses ------------------------------------------------------------------------------


def test_reprs_hold_no_secrets() -> None:
    """Logging a device, a key or a package never prints the secret or the content."""
    device = ConsoleDevice(
        device_id="d",
        name="n",
        key=DEVICE_KEY,
        data_channel="dc",
        control_channel="cc",
        metadata={"wifiPassword": PASSWORD},
    )
    key = ApiKey(key_id="k", value=API_TOKEN, expires_at=None)
    package = PackageDownload(size=3, sha256="ab", content=b"\x00SECRETCONTENT")

    for obj in (device, key, package):
        for secret in (*SECRETS, "SECRETCONTENT"):
            assert secret not in repr(obj)
            assert secret not in str(obj)
    assert "device_id='d'" in repr(device)
    assert "key_id='k'" in repr(key)
    assert "sha256='ab'" in repr(package)


def test_console_device_is_hashable_and_read_only() -> None:
    """Devices can be set members and dict keys; metadata is excluded from the hash."""
    first = ConsoleDevice("d", "n", "k", "dc", "cc", metadata={"a": 1})
    second = ConsoleDevice("d", "n", "k", "dc", "cc", metadata={"a": 1})
    assert first == second
    assert len({first, second}) == 1
    assert ConsoleDevice("d", "n", "k", "dc", "cc").metadata == {}
    with pytest.raises(AttributeError):
        first.key = "other"  # type: ignore[misc]


async def test_listed_device_metadata_is_read_only(serve: Serve) -> None:
    """Metadata of a listed device is a read-only copy of what the console sent."""
    handler, _ = respond([device_entry("a")])
    client = await serve(route("GET", "/device/list", handler))

    (device,) = await client.list_devices()

    with pytest.raises(TypeError):
        device.metadata["dataChannel"] = "other"  # type: ignore[index]
    assert hash(device) == hash(device)

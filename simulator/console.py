"""A stand-in for the insigh.io console's REST API (``/mf-rproxy``).

Only the endpoints that protocol.md documents exist here: login tokens, API keys, the device
list, one device, and the device-authenticated package download. Nothing else is invented, so
the integration cannot come to depend on endpoints the real console does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
import json
import logging
from pathlib import Path
import secrets
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from simulator.identities import DeviceIdentity, ProjectIdentity

_LOGGER = logging.getLogger(__name__)

PREFIX = "/mf-rproxy"

# The real console's login tokens last about ten hours.
LOGIN_TOKEN_LIFETIME = timedelta(hours=10)

# Fixed creation times keep the device objects identical across restarts, like the real console
# where devices are created once.
_CREATED_AT = "2025-01-06T09:30:00Z"
_UPDATED_AT = "2025-03-14T16:45:00Z"


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Log requests without their query string.

    The download URL carries the device key (``dk``) in its query, so aiohttp's default access
    log format (which prints the request line) would leak a secret into the logs.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write one line per request: method, path, status and duration."""
        self.logger.info(
            "%s %s -> %s (%.1f ms)", request.method, request.path, response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        """Skip the work of formatting lines when the logger would drop them anyway."""
        return self.logger.isEnabledFor(logging.INFO)


@dataclass(slots=True)
class ConsoleState:
    """The account, the project and the credentials issued so far."""

    email: str
    password: str
    project: ProjectIdentity
    devices: list[DeviceIdentity]
    packages_dir: Path
    login_tokens: dict[str, datetime] = field(default_factory=dict)
    api_keys: dict[str, datetime] = field(default_factory=dict)
    # While this file exists, its content ("error" or "hang") makes the REST API fail that way:
    # a test switches the console's outage on and off without restarting it.
    fault_file: Path | None = None

    def fault(self) -> str | None:
        """Return the outage to simulate now: "error", "hang" or None."""
        if self.fault_file is None:
            return None
        try:
            fault = self.fault_file.read_text().strip()
        except FileNotFoundError:
            return None
        return fault if fault in FAULTS else None


STATE_KEY: web.AppKey[ConsoleState] = web.AppKey("state", ConsoleState)

# How a console outage looks to a client: HTTP 500 at once, or no answer at all.
FAULTS = ("error", "hang")
# How often a hanging request looks whether the outage is over.
HANG_POLL = 0.2


@web.middleware
async def outage_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every API request with the outage the state's fault file asks for, if any."""
    fault = request.app[STATE_KEY].fault()
    if fault == "error":
        return _error(500, "internal server error")
    # A hang lasts until the fault is switched off or the client gives up (which cancels this
    # handler, see `ConsoleServer.start`).
    while fault == "hang":
        await asyncio.sleep(HANG_POLL)
        fault = request.app[STATE_KEY].fault()
    return await handler(request)


def _now() -> datetime:
    """Return the current UTC time, without microseconds to keep the ISO strings short."""
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    """Format a time like the console does, with a ``Z`` suffix."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str) -> web.Response:
    """Return a JSON error body; clients should be able to parse every error the console gives."""
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    """Return the request's JSON object, or None when the body is not one."""
    try:
        body = await request.json()
    except json.JSONDecodeError, UnicodeDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _authorized(state: ConsoleState, request: web.Request, *, api_keys: bool) -> bool:
    """Check the ``Authorization`` header, which carries the bare token (no ``Bearer``)."""
    token = request.headers.get("Authorization", "")
    now = _now()
    expiry = state.login_tokens.get(token)
    if expiry is None and api_keys:
        expiry = state.api_keys.get(token)
    return expiry is not None and expiry > now


async def post_tokens(request: web.Request) -> web.Response:
    """Log in with email and password and return a login token."""
    state = request.app[STATE_KEY]
    body = await _json_body(request)
    if body is None:
        return _error(400, "malformed request body")
    if not (
        secrets.compare_digest(str(body.get("email", "")), state.email)
        and secrets.compare_digest(str(body.get("password", "")), state.password)
    ):
        return _error(401, "missing or invalid credentials provided")
    token = secrets.token_urlsafe(32)
    state.login_tokens[token] = _now() + LOGIN_TOKEN_LIFETIME
    return web.json_response({"token": token}, status=201)


async def post_keys(request: web.Request) -> web.Response:
    """Issue an API key; only a login token may do so, as on the real console."""
    state = request.app[STATE_KEY]
    if not _authorized(state, request, api_keys=False):
        return _error(401, "missing or invalid credentials provided")
    body = await _json_body(request)
    if body is None:
        return _error(400, "malformed request body")
    duration = body.get("duration")
    if (
        body.get("type") != 3
        or not isinstance(duration, int)
        or isinstance(duration, bool)
        or duration <= 0
    ):
        return _error(400, "an API key needs type 3 and a positive integer duration")
    issued = _now()
    expires = issued + timedelta(seconds=duration)
    value = secrets.token_urlsafe(40)
    state.api_keys[value] = expires
    key = {
        "id": secrets.token_hex(16),
        "name": str(body.get("name", "")),
        "value": value,
        "issued_at": _iso(issued),
        "expires_at": _iso(expires),
    }
    return web.json_response(key, status=201)


def _device_object(state: ConsoleState, device: DeviceIdentity) -> dict[str, Any]:
    """Return a device as the device list shows it."""
    return {
        "id": device.id,
        "name": device.name,
        "key": device.key,
        "metadata": {
            "dataChannel": state.project.data_channel,
            "controlChannel": state.project.control_channel,
        },
    }


async def get_device_list(request: web.Request) -> web.Response:
    """List the project's devices, keys included (the console does return them)."""
    state = request.app[STATE_KEY]
    if not _authorized(state, request, api_keys=True):
        return _error(401, "missing or invalid credentials provided")
    return web.json_response([_device_object(state, device) for device in state.devices])


async def get_device(request: web.Request) -> web.Response:
    """Return one device with its timestamps and status."""
    state = request.app[STATE_KEY]
    if not _authorized(state, request, api_keys=True):
        return _error(401, "missing or invalid credentials provided")
    device_id = request.match_info["device_id"]
    for device in state.devices:
        if device.id == device_id:
            obj = _device_object(state, device)
            obj.update(created_at=_CREATED_AT, updated_at=_UPDATED_AT, status="enabled")
            return web.json_response(obj)
    return _error(404, "entity not found")


def find_package(packages_dir: Path, file_id: str) -> Path | None:
    """Return the package file whose name up to its first dot is ``file_id``.

    Comparing against the folder's listing, instead of building a path from the query, means a
    crafted file id can never reach outside the folder.
    """
    if not file_id or not packages_dir.is_dir():
        return None
    for path in sorted(packages_dir.iterdir()):
        if path.is_file() and path.name.split(".", 1)[0] == file_id:
            return path
    return None


async def get_package_download(request: web.Request) -> web.Response:
    """Serve a package to a device that proves its identity with did/dk/cid.

    The firmware speaks HTTP/1.0 and needs a ``Content-Length`` body without chunked encoding,
    after which the server closes the connection.
    """
    state = request.app[STATE_KEY]
    query = request.query
    did, dk, cid = query.get("did", ""), query.get("dk", ""), query.get("cid", "")
    device = next((d for d in state.devices if d.id == did), None)
    if (
        device is None
        or not secrets.compare_digest(dk, device.key)
        or cid != state.project.control_channel
    ):
        _LOGGER.warning("refused a package download: device credentials do not match")
        response = _error(403, "device credentials do not match")
        response.force_close()
        return response
    file_id = query.get("fuid", "")
    path = find_package(state.packages_dir, file_id)
    if path is None:
        _LOGGER.warning("device %s asked for unknown package %r", device.name, file_id)
        response = _error(404, "package not found")
        response.force_close()
        return response
    body = path.read_bytes()
    _LOGGER.info("serving package %s (%d bytes) to %s", path.name, len(body), device.name)
    response = web.Response(body=body, content_type="application/octet-stream")
    response.headers["Connection"] = "close"
    response.force_close()
    return response


def create_app(state: ConsoleState) -> web.Application:
    """Build the aiohttp application for the given console state."""
    app = web.Application(middlewares=[outage_middleware])
    app[STATE_KEY] = state
    app.router.add_post(f"{PREFIX}/tokens", post_tokens)
    app.router.add_post(f"{PREFIX}/keys", post_keys)
    app.router.add_get(f"{PREFIX}/device/list", get_device_list)
    app.router.add_get(f"{PREFIX}/packages/download", get_package_download)
    app.router.add_get(f"{PREFIX}/device/{{device_id}}", get_device)
    return app


class ConsoleServer:
    """Run the console stand-in on a host and port (port 0 picks a free one)."""

    def __init__(self, state: ConsoleState, host: str, port: int) -> None:
        """Prepare the server; call :meth:`start` to listen."""
        self._state = state
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Start listening and return the base URL (without ``/mf-rproxy``)."""
        self._runner = web.AppRunner(
            create_app(self._state),
            access_log_class=PathOnlyAccessLogger,
            access_log=logging.getLogger("simulator.console.access"),
            # A client that gives up on a hanging request ends its handler too.
            handler_cancellation=True,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._port
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                port = int(address[1])
                break
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}"
        _LOGGER.info("console stand-in listening on %s%s", self.url, PREFIX)
        return self.url

    async def stop(self) -> None:
        """Stop the server and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

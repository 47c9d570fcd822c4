"""The automation blueprints in blueprints/automation/insighio_ota/: valid, and doing their job.

Each blueprint is checked against Home Assistant's blueprint schema, then instantiated in a test
Home Assistant the way a user does after importing it (the file in the configuration's
`blueprints/automation/insighio_ota/`, an automation with `use_blueprint`).
"""

from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from pathlib import Path
import shutil
from typing import Any

from homeassistant.components.blueprint import BLUEPRINT_SCHEMA, Blueprint
from homeassistant.components.persistent_notification import DOMAIN as PN_DOMAIN
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.helpers import (
    area_registry as ar,
    device_registry as dr,
    entity_registry as er,
    label_registry as lr,
)
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from homeassistant.util.yaml import load_yaml_dict
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

from custom_components.insighio_ota.const import DOMAIN, EVENT_OTA_STATUS

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints" / "automation" / DOMAIN
NIGHTLY = "nightly_rollout.yaml"
NOTIFY = "notify_ota_failure.yaml"
REPOSITORY = "https://github.com/insighio-ota/insighio_ota"


@pytest.fixture
def config_dir(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Give the test HA a configuration folder of its own, with our blueprints imported."""
    hass.config.config_dir = str(tmp_path)
    target = Path(hass.config.path("blueprints", "automation", DOMAIN))
    target.mkdir(parents=True)
    for blueprint in (NIGHTLY, NOTIFY):
        shutil.copy(BLUEPRINTS / blueprint, target / blueprint)
    return tmp_path


@pytest.fixture
def entry(hass: HomeAssistant) -> MockConfigEntry:
    """Return a config entry of ours that devices can belong to (not set up)."""
    entry = MockConfigEntry(domain=DOMAIN, title="insigh.io")
    entry.add_to_hass(hass)
    return entry


@pytest.fixture(autouse=True)
async def _stop_automations(hass: HomeAssistant) -> AsyncGenerator[None]:
    """Turn the automations off at the end: their time triggers would outlive the test."""
    yield
    if hass.services.has_service("automation", "turn_off"):
        await hass.services.async_call(
            "automation", "turn_off", {"entity_id": "all"}, blocking=True
        )


async def _automation(hass: HomeAssistant, blueprint: str, inputs: dict[str, Any]) -> None:
    assert await async_setup_component(hass, "persistent_notification", {})
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "alias": blueprint,
                "use_blueprint": {"path": f"{DOMAIN}/{blueprint}", "input": inputs},
            }
        },
    )
    await hass.async_block_till_done()
    [state] = hass.states.async_all("automation")
    assert state.state == STATE_ON, state


def _device(hass: HomeAssistant, entry: MockConfigEntry, device_id: str, name: str) -> str:
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, device_id)}, name=name
    )
    return device.id


# -- the blueprint files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [NIGHTLY, NOTIFY])
def test_blueprint_is_valid(name: str) -> None:
    """HA's own loader (which knows `!input`) and blueprint schema accept the file."""
    blueprint = Blueprint(
        load_yaml_dict(BLUEPRINTS / name), expected_domain="automation", schema=BLUEPRINT_SCHEMA
    )
    assert blueprint.domain == "automation"
    assert blueprint.metadata["description"]
    assert (
        blueprint.metadata["source_url"]
        == f"{REPOSITORY}/blob/main/blueprints/automation/{DOMAIN}/{name}"
    )
    assert blueprint.validate() is None  # the HA version under test is recent enough
    for key, spec in blueprint.inputs.items():
        assert spec.get("name"), key
        assert "selector" in spec, key


def test_every_blueprint_is_tested() -> None:
    """A new blueprint file needs its place in these tests."""
    assert sorted(path.name for path in BLUEPRINTS.glob("*.yaml")) == sorted([NIGHTLY, NOTIFY])


def test_nightly_rollout_inputs() -> None:
    """The inputs the README promises, with their defaults."""
    inputs = Blueprint(
        load_yaml_dict(BLUEPRINTS / NIGHTLY), expected_domain="automation", schema=BLUEPRINT_SCHEMA
    ).inputs
    assert {key: spec.get("default") for key, spec in inputs.items()} == {
        "start_time": "02:00:00",
        "devices": None,
        "canary_count": 1,
        "wave_size": 5,
        "failure_threshold_percent": 10,
    }
    assert inputs["devices"]["selector"]["target"]["device"] == [{"integration": DOMAIN}]


# -- notify me when an OTA fails -------------------------------------------------------------


def _status(state: str, device_id: str | None, reason: str | None) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "insighio_device_id": "0f0f0f0f-0000-4000-8000-000000000001",
        "file_id": "4f1c2a9e",
        "version": "1.2.0",
        "state": state,
        "reason": reason,
    }


def _notifications(hass: HomeAssistant) -> dict[str, Any]:
    return dict(hass.data.get(PN_DOMAIN, {}))


async def test_failure_notification_by_default(
    hass: HomeAssistant, config_dir: Path, entry: MockConfigEntry
) -> None:
    """A failed update ends in a persistent notification naming the device, version and reason."""
    device_id = _device(hass, entry, "0f0f0f0f-0000-4000-8000-000000000001", "Greenhouse")
    await _automation(hass, NOTIFY, {})

    hass.bus.async_fire(EVENT_OTA_STATUS, _status("failed", device_id, "not enough space"))
    await hass.async_block_till_done()

    notifications = _notifications(hass)
    notification = notifications["insighio_ota_failure_0f0f0f0f-0000-4000-8000-000000000001"]
    assert notification["title"] == "insigh.io OTA failed: Greenhouse"
    assert notification["message"] == ("The update of Greenhouse to 1.2.0 failed: not enough space")

    # Progress and success say nothing.
    for state in ("queued", "applied", "verified", "cancelled"):
        hass.bus.async_fire(EVENT_OTA_STATUS, _status(state, device_id, None))
    await hass.async_block_till_done()
    assert _notifications(hass) == notifications

    # A time-out replaces the device's notification.
    hass.bus.async_fire(EVENT_OTA_STATUS, _status("timed_out", device_id, None))
    await hass.async_block_till_done()
    [notification] = _notifications(hass).values()
    assert notification["message"] == (
        "The update of Greenhouse to 1.2.0 timed out: no reason given"
    )


async def test_failure_notification_with_own_actions(
    hass: HomeAssistant, config_dir: Path, entry: MockConfigEntry
) -> None:
    """Own actions (a phone's notify action) get the message; chosen outcomes only."""
    calls = async_mock_service(hass, "notify", "mobile_app_phone")
    device_id = _device(hass, entry, "0f0f0f0f-0000-4000-8000-000000000001", "Greenhouse")
    dr.async_get(hass).async_update_device(device_id, name_by_user="Tomatoes")
    await _automation(
        hass,
        NOTIFY,
        {
            "states": ["failed"],
            "notify_actions": [
                {
                    "action": "notify.mobile_app_phone",
                    "data": {"title": "{{ title }}", "message": "{{ message }}"},
                }
            ],
        },
    )

    hass.bus.async_fire(EVENT_OTA_STATUS, _status("timed_out", device_id, None))
    hass.bus.async_fire(EVENT_OTA_STATUS, _status("failed", device_id, "can not apply"))
    # A device HA does not know (another entry's, removed): its console id is shown.
    hass.bus.async_fire(EVENT_OTA_STATUS, _status("failed", None, "can not download"))
    await hass.async_block_till_done()

    assert [call.data for call in calls] == [
        {
            "title": "insigh.io OTA failed: Tomatoes",
            "message": "The update of Tomatoes to 1.2.0 failed: can not apply",
        },
        {
            "title": "insigh.io OTA failed: 0f0f0f0f-0000-4000-8000-000000000001",
            "message": (
                "The update of 0f0f0f0f-0000-4000-8000-000000000001 to 1.2.0 failed: "
                "can not download"
            ),
        },
    ]
    assert _notifications(hass) == {}


# -- nightly rollout of the newest package ---------------------------------------------------


class FakeActions:
    """Our actions as the blueprint calls them: canned responses, recorded rollouts."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Register list_packages, list_rollouts and start_rollout in our domain."""
        self.packages: list[dict[str, Any]] = [
            # Out of order on purpose: the newest is the highest position, not the last listed.
            {"file_id": "bbbb2222", "version": "1.2.0", "position": 2},
            {"file_id": "aaaa1111", "version": "1.1.0", "position": 1},
        ]
        self.rollouts: list[dict[str, Any]] = []
        self.started: list[dict[str, Any]] = []
        hass.services.async_register(
            DOMAIN, "list_packages", self._list_packages, supports_response=SupportsResponse.ONLY
        )
        hass.services.async_register(
            DOMAIN, "list_rollouts", self._list_rollouts, supports_response=SupportsResponse.ONLY
        )
        hass.services.async_register(
            DOMAIN,
            "start_rollout",
            self._start_rollout,
            supports_response=SupportsResponse.OPTIONAL,
        )

    async def _list_packages(self, call: ServiceCall) -> ServiceResponse:
        return {"packages": self.packages}

    async def _list_rollouts(self, call: ServiceCall) -> ServiceResponse:
        return {"rollouts": self.rollouts}

    async def _start_rollout(self, call: ServiceCall) -> ServiceResponse:
        self.started.append(dict(call.data))
        return {"state": "running"}


def _update_entity(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    device: str,
    *,
    state: str,
    latest: str,
    in_progress: bool = False,
) -> str:
    """Register a device's update entity of ours and give it a state."""
    entity = er.async_get(
        hass
    ).async_get_or_create(
        "update",
        DOMAIN,
        f"{device}_firmware",
        config_entry=entry,
        device_id=dr.async_get(hass).async_get(device).id,  # type: ignore[union-attr]
        suggested_object_id=f"{device[:6]}_firmware",
    )
    hass.states.async_set(
        entity.entity_id,
        state,
        {"installed_version": "1.0.0", "latest_version": latest, "in_progress": in_progress},
    )
    return entity.entity_id


def _next_local(hour: int, minute: int = 0) -> datetime:
    """Return the next hour:minute local time, late in its second.

    HA schedules a time trigger at a random microsecond of the second, so the moment fired is
    the end of that second.
    """
    now = dt_util.now()
    moment = now.replace(hour=hour, minute=minute, second=0, microsecond=999_999)
    return moment if moment > now else moment + timedelta(days=1)


@pytest.fixture
def fleet(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, str]:
    """Five devices of ours in every situation, and one entity of another integration."""
    devices = {
        name: _device(hass, entry, f"{name}-0000-4000-8000-000000000000", name)
        for name in ("outdated", "current", "otherhw", "busy", "byentity")
    }
    entities = {
        "outdated": _update_entity(
            hass, entry, devices["outdated"], state=STATE_ON, latest="1.2.0"
        ),
        "current": _update_entity(hass, entry, devices["current"], state=STATE_OFF, latest="1.2.0"),
        # The newest package is for other hardware: this device is offered an older one.
        "otherhw": _update_entity(hass, entry, devices["otherhw"], state=STATE_ON, latest="1.1.0"),
        "busy": _update_entity(
            hass, entry, devices["busy"], state=STATE_ON, latest="1.2.0", in_progress=True
        ),
        "byentity": _update_entity(
            hass, entry, devices["byentity"], state=STATE_ON, latest="1.2.0"
        ),
    }
    # Another entity of an outdated device (not an update entity) and someone else's update.
    er.async_get(hass).async_get_or_create(
        "sensor", DOMAIN, "outdated_status", config_entry=entry, device_id=devices["outdated"]
    )
    hass.states.async_set("update.router_firmware", STATE_ON, {"latest_version": "1.2.0"})
    return {**{f"device.{k}": v for k, v in devices.items()}, **entities}


async def _nightly(hass: HomeAssistant, fleet: dict[str, str], **inputs: Any) -> None:
    await _automation(
        hass,
        NIGHTLY,
        {
            "devices": {
                "device_id": [
                    fleet["device.outdated"],
                    fleet["device.current"],
                    fleet["device.otherhw"],
                    fleet["device.busy"],
                ],
                "entity_id": [fleet["byentity"], "update.router_firmware"],
            },
            **inputs,
        },
    )


async def test_nightly_rollout_starts_the_newest_package_for_outdated_devices(
    hass: HomeAssistant, config_dir: Path, fleet: dict[str, str]
) -> None:
    """At the chosen time: the newest package, to the devices offered it and not busy."""
    actions = FakeActions(hass)
    await _nightly(
        hass,
        fleet,
        start_time="03:30:00",
        canary_count=2,
        wave_size=10,
        failure_threshold_percent=20,
    )

    async_fire_time_changed(hass, dt_util.as_utc(_next_local(2)))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert actions.started == []

    async_fire_time_changed(hass, dt_util.as_utc(_next_local(3, 30)))
    await hass.async_block_till_done(wait_background_tasks=True)
    [started] = actions.started
    assert sorted(started.pop("entity_id")) == sorted([fleet["outdated"], fleet["byentity"]])
    assert started.pop("name").startswith("Nightly 1.2.0 ")
    assert started == {
        "file_id": "bbbb2222",
        "canary_count": 2,
        "wave_size": 10,
        "failure_threshold_percent": 20,
    }


async def test_nightly_rollout_defaults_at_two(
    hass: HomeAssistant, config_dir: Path, fleet: dict[str, str]
) -> None:
    """Only the devices are required: 02:00, canary 1, waves of 5, threshold 10 %."""
    actions = FakeActions(hass)
    await _nightly(hass, fleet)

    async_fire_time_changed(hass, dt_util.as_utc(_next_local(2)))
    await hass.async_block_till_done(wait_background_tasks=True)
    [started] = actions.started
    assert (
        started["canary_count"],
        started["wave_size"],
        started["failure_threshold_percent"],
    ) == (
        1,
        5,
        10,
    )


@pytest.mark.parametrize(
    "situation", ["no_package", "rollout_paused", "rollout_running", "all_current"]
)
async def test_nightly_rollout_starts_nothing(
    hass: HomeAssistant, config_dir: Path, fleet: dict[str, str], situation: str
) -> None:
    """No package, another rollout not over, or nothing outdated: no rollout is started."""
    actions = FakeActions(hass)
    if situation == "no_package":
        actions.packages = []
    elif situation.startswith("rollout_"):
        actions.rollouts = [{"name": "older", "state": situation.removeprefix("rollout_")}]
    else:
        for name in ("outdated", "byentity"):
            hass.states.async_set(fleet[name], STATE_OFF, {"latest_version": "1.2.0"})
    await _nightly(hass, fleet)

    async_fire_time_changed(hass, dt_util.as_utc(_next_local(2)))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert actions.started == []
    # A finished or aborted rollout does not stand in the way.
    if situation.startswith("rollout_"):
        actions.rollouts = [{"name": "older", "state": "finished"}]
        async_fire_time_changed(hass, dt_util.as_utc(_next_local(2) + timedelta(days=1)))
        await hass.async_block_till_done(wait_background_tasks=True)
        assert len(actions.started) == 1


async def test_nightly_rollout_by_area_and_label(
    hass: HomeAssistant, config_dir: Path, fleet: dict[str, str]
) -> None:
    """Areas and labels resolve to our update entities in them, directly or by their device."""
    kitchen = ar.async_get(hass).async_create("Kitchen")
    night = lr.async_get(hass).async_create("Night updates")
    dr.async_get(hass).async_update_device(fleet["device.outdated"], area_id=kitchen.id)
    dr.async_get(hass).async_update_device(fleet["device.current"], area_id=kitchen.id)
    er.async_get(hass).async_update_entity(fleet["byentity"], labels={night.label_id})
    actions = FakeActions(hass)
    await _automation(
        hass, NIGHTLY, {"devices": {"area_id": kitchen.id, "label_id": [night.label_id]}}
    )

    async_fire_time_changed(hass, dt_util.as_utc(_next_local(2)))
    await hass.async_block_till_done(wait_background_tasks=True)
    [started] = actions.started
    assert sorted(started["entity_id"]) == sorted([fleet["outdated"], fleet["byentity"]])

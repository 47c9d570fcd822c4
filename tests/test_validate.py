"""scripts/validate: the real tree is clean, and each rule catches its breakage in a copy."""

from collections.abc import Callable
import json
from pathlib import Path
import shutil
import struct
import subprocess
import sys
from typing import Any

import pytest

from scripts.validate import QUALITY_RULES, validate

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path("custom_components/insighio_ota")
EN = PACKAGE / "translations" / "en.json"


@pytest.fixture(name="tree")
def tree_fixture(tmp_path: Path) -> Path:
    """Return a copy of the integration and hacs.json, which the validator finds clean."""
    shutil.copytree(
        ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "hacs.json", tmp_path / "hacs.json")
    assert validate(tmp_path) == []
    return tmp_path


def edit_json(tree: Path, path: Path, change: Callable[[Any], Any]) -> None:
    data = json.loads((tree / path).read_text())
    change(data)
    (tree / path).write_text(json.dumps(data, indent=2))


def edit_text(tree: Path, path: Path, old: str, new: str) -> None:
    text = (tree / path).read_text()
    assert old in text, old
    (tree / path).write_text(text.replace(old, new, 1))


def png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + bytes(20)


def manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda tree: edit_json(tree, PACKAGE / "manifest.json", change)


def strings(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda tree: edit_json(tree, EN, change)


def reorder(data: dict[str, Any]) -> None:
    for key in reversed(list(data)[2:]):
        data[key] = data.pop(key)


def new_exception_in_code(tree: Path) -> None:
    with (tree / PACKAGE / "__init__.py").open("a") as module:
        module.write(
            "\n\ndef _never() -> None:\n"
            '    raise HomeAssistantError(translation_domain=DOMAIN, translation_key="brand_new")\n'
        )


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest key order": (
        manifest(reorder),
        "manifest.json: keys must be domain, name, then the others in alphabetical order",
    ),
    "manifest required key": (
        manifest(lambda d: d.pop("version")),
        "manifest.json: required key 'version' missing",
    ),
    "manifest unknown key": (
        manifest(lambda d: d.update(zz_extra=1)),
        "manifest.json: unknown key 'zz_extra'",
    ),
    "manifest codeowners type": (
        manifest(lambda d: d.update(codeowners="@me")),
        "manifest.json: 'codeowners' must be a list of @-names",
    ),
    "manifest mqtt dependency": (
        manifest(lambda d: d.update(dependencies=["http"])),
        "manifest.json: 'dependencies' must be a list of strings that names mqtt",
    ),
    "manifest config_flow": (
        manifest(lambda d: d.update(config_flow=False)),
        "manifest.json: 'config_flow' must be true",
    ),
    "manifest integration_type": (
        manifest(lambda d: d.update(integration_type="device")),
        "manifest.json: 'integration_type' must be 'hub'",
    ),
    "manifest iot_class": (
        manifest(lambda d: d.update(iot_class="cloud")),
        "manifest.json: 'iot_class' must be one of",
    ),
    "manifest version": (
        manifest(lambda d: d.update(version="one.two")),
        "manifest.json: 'version' must be a version",
    ),
    "manifest documentation": (
        manifest(lambda d: d.update(documentation="example.test")),
        "manifest.json: 'documentation' must be an https URL",
    ),
    "manifest mqtt topics": (
        manifest(lambda d: d.update(mqtt="channels/#")),
        "manifest.json: 'mqtt' must be a non-empty list of topic strings",
    ),
    "hacs unknown key": (
        lambda tree: edit_json(tree, Path("hacs.json"), lambda d: d.update(domains=["x"])),
        "hacs.json: unknown key 'domains' (HACS rejects it)",
    ),
    "hacs name": (
        lambda tree: edit_json(tree, Path("hacs.json"), lambda d: d.pop("name")),
        "hacs.json: required key 'name' missing",
    ),
    "hacs homeassistant version": (
        lambda tree: edit_json(tree, Path("hacs.json"), lambda d: d.update(homeassistant="new")),
        "hacs.json: 'homeassistant' is not a version",
    ),
    "invalid JSON": (
        lambda tree: (tree / PACKAGE / "icons.json").write_text('{"services": '),
        "icons.json: invalid JSON",
    ),
    "exception key missing": (
        strings(lambda d: d["exceptions"].pop("job_open")),
        "en.json: exceptions.job_open missing (used at tracker.py:",
    ),
    "exception key used in new code": (
        new_exception_in_code,
        "en.json: exceptions.brand_new missing (used at __init__.py:",
    ),
    "exception key unused": (
        strings(lambda d: d["exceptions"].update(never_raised={"message": "x"})),
        "en.json: exceptions.never_raised is not used",
    ),
    "issue key missing": (
        strings(lambda d: d["issues"].pop("rollout_threshold")),
        "en.json: issues.rollout_threshold missing (used at rollout.py:",
    ),
    "selector key missing": (
        strings(lambda d: d.pop("selector")),
        "en.json: selector.hardware missing",
    ),
    "config step missing": (
        strings(lambda d: d["config"]["step"].pop("user")),
        "en.json: config.step.user missing",
    ),
    "config error missing": (
        strings(lambda d: d["config"]["error"].pop("invalid_auth")),
        "en.json: config.error.invalid_auth missing",
    ),
    "config abort missing": (
        strings(lambda d: d["config"]["abort"].pop("already_configured")),
        "en.json: config.abort.already_configured missing",
    ),
    "config abort of reauth missing": (
        strings(lambda d: d["config"]["abort"].pop("reauth_successful")),
        "en.json: config.abort.reauth_successful missing",
    ),
    "options step unused": (
        strings(lambda d: d["options"]["step"].update(ghost={"title": "x"})),
        "en.json: options.step.ghost is not used",
    ),
    "options error of a helper missing": (
        strings(lambda d: d["options"]["error"].pop("invalid_version")),
        "en.json: config/options.error.invalid_version missing",
    ),
    "options abort renamed in code": (
        lambda tree: edit_text(
            tree, PACKAGE / "config_flow.py", 'reason="no_packages"', 'reason="no_package"'
        ),
        "en.json: options.abort.no_package missing",
    ),
    "menu option missing": (
        strings(lambda d: d["options"]["step"]["init"]["menu_options"].pop("settings")),
        "en.json: options.step.init.menu_options.settings missing",
    ),
    "menu option without step": (
        strings(lambda d: d["options"]["step"]["init"]["menu_options"].update(ghost="x")),
        "en.json: options.step.init.menu_options.ghost: no such step",
    ),
    "entity key missing": (
        strings(lambda d: d["entity"]["sensor"].pop("ota_status")),
        "en.json: entity.sensor.ota_status missing (used at sensor.py:",
    ),
    "entity key passed to a base class missing": (
        strings(lambda d: d["entity"]["sensor"].pop("jobs_pending")),
        "en.json: entity.sensor.jobs_pending missing",
    ),
    "entity key unused": (
        strings(lambda d: d["entity"]["sensor"].update(ghost={"name": "x"})),
        "en.json: entity.sensor.ghost is not used",
    ),
    "entity platform absent": (
        strings(lambda d: d["entity"].update(light={"lamp": {"name": "x"}})),
        "en.json: entity.light.lamp: the integration has no light",
    ),
    "unresolved reference": (
        strings(lambda d: d["config"]["abort"].update(already_configured="[%key:common::x%]")),
        "en.json: references are not resolved",
    ),
    "action not translated": (
        strings(lambda d: d["services"].pop("cancel")),
        "en.json: services.cancel missing",
    ),
    "action field not translated": (
        strings(lambda d: d["services"]["register_package"]["fields"]["file_id"].pop("name")),
        "en.json: services.register_package.fields.file_id.name missing",
    ),
    "action translated but not in services.yaml": (
        strings(lambda d: d["services"].update(ghost={"name": "x", "description": "y"})),
        "en.json: services.ghost is not in services.yaml",
    ),
    "registered action missing from services.yaml": (
        lambda tree: edit_text(tree, PACKAGE / "services.yaml", "\ncancel:", "\ncancelled:"),
        "services.yaml: action cancel (registered at services.py:",
    ),
    "services.yaml action not registered": (
        lambda tree: edit_text(tree, PACKAGE / "services.yaml", "\ncancel:", "\ncancelled:"),
        "services.yaml: action cancelled is not registered by the code",
    ),
    "icons.json action missing": (
        lambda tree: edit_json(tree, PACKAGE / "icons.json", lambda d: d["services"].pop("cancel")),
        "icons.json: services.cancel missing",
    ),
    "icons.json action not in services.yaml": (
        lambda tree: edit_json(
            tree, PACKAGE / "icons.json", lambda d: d["services"].update(ghost={"service": "x"})
        ),
        "icons.json: services.ghost is not in services.yaml",
    ),
    "brand icon size": (
        lambda tree: (tree / PACKAGE / "brand" / "icon.png").write_bytes(png(128, 128)),
        "brand/icon.png: is 128x128, must be 256x256",
    ),
    "brand icon not a PNG": (
        lambda tree: (tree / PACKAGE / "brand" / "icon.png").write_bytes(b"GIF89a" + bytes(30)),
        "brand/icon.png: not a PNG file",
    ),
    "brand icon missing": (
        lambda tree: (tree / PACKAGE / "brand" / "icon.png").unlink(),
        "brand/icon.png: missing",
    ),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_each_breakage_is_reported(tree: Path, name: str) -> None:
    """One line names the problem, with the file it is in."""
    breakage, expected = BREAKAGES[name]
    breakage(tree)
    problems = validate(tree)
    assert any(expected in line for line in problems), problems


def quality_scale(tree: Path, rules: dict[str, Any]) -> list[str]:
    every = {rule: "done" for tier in QUALITY_RULES.values() for rule in tier}
    text = json.dumps({"rules": {**every, **rules}})  # JSON is YAML
    (tree / PACKAGE / "quality_scale.yaml").write_text(text)
    return validate(tree)


def test_quality_scale(tree: Path) -> None:
    """Every rule listed, each done, or todo/exempt with a comment."""
    assert quality_scale(tree, {"discovery": {"status": "exempt", "comment": "why"}}) == []
    path = "custom_components/insighio_ota/quality_scale.yaml"
    assert quality_scale(tree, {"discovery": "exempt", "brands": {"status": "todo"}}) == [
        f"{path}: rule 'brands': todo needs a comment saying why",
        f"{path}: rule 'discovery': exempt needs a comment saying why",
    ]
    assert quality_scale(tree, {"stale-devices": "maybe", "made-up": "done"}) == [
        f"{path}: unknown rule 'made-up'",
        f"{path}: rule 'stale-devices': status must be done, todo or exempt",
    ]
    (tree / PACKAGE / "quality_scale.yaml").write_text("rules:\n  brands: done\n")
    assert f"{path}: rule 'strict-typing' missing" in validate(tree)
    (tree / PACKAGE / "quality_scale.yaml").write_text("rules: [")
    assert validate(tree)[0].startswith(f"{path}: invalid YAML")


def test_no_integration(tmp_path: Path) -> None:
    """A tree without an integration says so instead of failing."""
    assert validate(tmp_path) == [
        "custom_components: no integration (custom_components/<domain>/manifest.json)"
    ]


def test_real_tree_is_clean() -> None:
    """The command scripts/test runs exits 0 on this repository, and 1 on a broken copy."""
    run = subprocess.run(
        [sys.executable, ROOT / "scripts" / "validate.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout
    assert run.stdout.endswith("ok\n")


def test_broken_copy_exits_1(tree: Path) -> None:
    """The exit status tells CI."""
    (tree / "hacs.json").write_text("{}")
    run = subprocess.run(
        [sys.executable, ROOT / "scripts" / "validate.py", tree],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stdout == "hacs.json: required key 'name' missing\n"

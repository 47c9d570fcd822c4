"""Every message the integration can show exists in English, and every action is described."""

import json
from pathlib import Path
import re

import yaml

import custom_components.insighio_ota as integration

PACKAGE = Path(integration.__file__).parent
STRINGS = json.loads((PACKAGE / "translations" / "en.json").read_text())


def _code() -> str:
    return "\n".join(path.read_text() for path in PACKAGE.glob("*.py"))


def test_every_exception_key_is_translated() -> None:
    """A translated error whose key is missing would reach the user as a bare key."""
    used = set(re.findall(r'translation_key="([a-z0-9_]+)"', _code()))
    used |= set(re.findall(r'translation_key=\(\s*"([a-z0-9_]+)"', _code()))
    # Selectors use translation keys too; theirs live under "selector".
    known = STRINGS["exceptions"].keys() | STRINGS.get("selector", {}).keys()
    assert not used - known


def test_no_unused_exception_translations() -> None:
    """Messages nothing can raise only mislead translators."""
    code = _code()
    unused = {key for key in STRINGS["exceptions"] if f'"{key}"' not in code}
    assert not unused


def test_every_action_and_field_is_translated() -> None:
    """The actions UI shows a name and description for every action and field."""
    services = yaml.safe_load((PACKAGE / "services.yaml").read_text())
    for name, service in services.items():
        strings = STRINGS["services"][name]
        assert strings["name"]
        assert strings["description"]
        for field in (service or {}).get("fields", {}):
            assert strings["fields"][field]["name"], (name, field)
            assert strings["fields"][field]["description"], (name, field)

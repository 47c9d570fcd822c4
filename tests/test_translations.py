"""Every message the integration can show exists in English, and every action is described.

The checks live in scripts/validate.py (run first by scripts/test); here they run as a test, on
the translations alone: exception, issue, selector, entity and flow keys against the code, and
every action and field of services.yaml named and described.
"""

from pathlib import Path

from scripts.validate import Validator

ROOT = Path(__file__).resolve().parent.parent


def test_translations_match_the_code() -> None:
    """A key the code uses but en.json lacks reaches the user bare; an unused one misleads."""
    validator = Validator(ROOT)
    validator.check_translations()
    assert validator.problems == []

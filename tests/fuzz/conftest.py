"""Fuzz tests run under the suite's timeout in CI; an exploration of any size runs untimed."""

from pathlib import Path

import pytest

from .budget import exploring

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lift the per-test timeout from the fuzz tests when INSIGHIO_FUZZ_EXAMPLES asks for more.

    The suite's 120 s per test catches a hung test; an exploration of 100,000 examples is
    meant to take longer, and hypothesis bounds each example itself.
    """
    if not exploring():
        return
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.timeout(0))

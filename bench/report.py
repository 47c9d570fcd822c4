"""One printed line per figure: what was measured, its value, its target and PASS or MISS."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Figure:
    """A measured figure and the target it is held to (None: shown for context only)."""

    name: str
    value: float
    unit: str
    target: float | None = None
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        """Return whether the figure meets its target, None when it has none."""
        return None if self.target is None else self.value <= self.target

    def line(self) -> str:
        """Return the printed line: `name  value unit  (target <= X unit)  PASS|MISS  detail`."""
        value = f"{self.value:,.3g}" if abs(self.value) < 100 else f"{self.value:,.0f}"
        if self.target is None:
            verdict, target = "info", ""
        else:
            verdict = "PASS" if self.passed else "MISS"
            target = f"target <= {self.target:g} {self.unit}"
        text = f"{self.name:<52} {value:>10} {self.unit:<8} {target:<24} {verdict}"
        return f"{text}  {self.detail}".rstrip()

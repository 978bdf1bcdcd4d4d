"""A ratio measured over interleaved rounds: its median, its spread, and the bar it must meet."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Ratio:
    """``scenario`` over ``anchor``, once per round (same round, same conditions)."""

    scenario: str
    anchor: str
    per_round: tuple[float, ...]
    bar: float
    #: True for a throughput (the ratio must be at least ``bar``), False for a time (at most).
    at_least: bool

    @classmethod
    def of(
        cls,
        samples: dict[str, list[float]],
        scenario: str,
        anchor: str,
        bar: float,
        *,
        at_least: bool,
    ) -> Ratio:
        """The ratio of two scenarios' samples, round by round."""
        per_round = tuple(s / a for s, a in zip(samples[scenario], samples[anchor], strict=True))
        return cls(scenario, anchor, per_round, bar, at_least)

    @property
    def median(self) -> float:
        return statistics.median(self.per_round)

    @property
    def low(self) -> float:
        return min(self.per_round)

    @property
    def high(self) -> float:
        return max(self.per_round)

    @property
    def met(self) -> bool:
        return self.median >= self.bar if self.at_least else self.median <= self.bar

    @property
    def bar_text(self) -> str:
        """The bar as the tables print it: "≥ 0.97" or "≤ 1.02"."""
        return f"{'≥' if self.at_least else '≤'} {self.bar:.2f}"

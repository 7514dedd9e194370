"""Medians, same-round ratios to a baseline app, and the Markdown tables of an echo run.

The baseline is the raw ASGI app doing the same work: ``raw`` for the plain echo,
``raw_json`` for the typed echo.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

BASELINE = "raw"
"""The default baseline: the raw ASGI echo."""
CLIENT_BOUND_FRACTION = 0.9
SATURATED_FRACTION = 0.9
BUSY_MACHINE_FRACTION = 0.25


@dataclass
class Measurement:
    """One client run against one server: a (worker, round, app, conns) cell."""

    worker: str
    round: int
    app: str
    conns: int
    messages_per_s: float | None = None
    client_cpu_fraction: float | None = None
    server_cpu_fraction: float | None = None
    messages_per_server_cpu_s: float | None = None
    other_cpu_fraction: float | None = None
    connected: int = 0
    errors: int = 0
    failure: str | None = None
    server_tracebacks: int = 0
    client: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the run produced a rate worth comparing."""
        return self.failure is None and bool(self.messages_per_s) and self.connected > 0


@dataclass
class AppSummary:
    """One app across the rounds of one (worker, conns) group."""

    app: str
    median_messages_per_s: float | None
    median_ratio: float | None
    ratios: list[float]
    median_cpu_ratio: float | None
    valid_rounds: int
    max_client_cpu_fraction: float | None
    median_server_cpu_fraction: float | None
    max_other_cpu_fraction: float | None
    errors: int
    failures: list[str] = field(default_factory=list)


@dataclass
class GroupSummary:
    """All apps on one hypercorn worker class at one connection count."""

    worker: str
    conns: int
    apps: list[AppSummary]

    def app(self, name: str) -> AppSummary | None:
        """The summary of app `name`, if it was measured."""
        return next((a for a in self.apps if a.app == name), None)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _round_ratios(
    cells: list[Measurement],
    app: str,
    metric: Callable[[Measurement], float | None],
    baseline: str,
) -> list[float]:
    """``metric(app) ÷ metric(baseline)`` for every round in which both ran cleanly."""
    raw = {m.round: metric(m) for m in cells if m.app == baseline and m.ok}
    ratios = []
    for m in sorted(cells, key=lambda m: m.round):
        value, base = metric(m), raw.get(m.round)
        if m.app == app and m.ok and value and base:
            ratios.append(value / base)
    return ratios


def _rate_of(m: Measurement) -> float | None:
    return m.messages_per_s


def _efficiency_of(m: Measurement) -> float | None:
    return m.messages_per_server_cpu_s


def _summarize_app(cells: list[Measurement], app: str, baseline: str) -> AppSummary:
    mine = [m for m in cells if m.app == app]
    ok = [m for m in mine if m.ok]
    ratios = _round_ratios(cells, app, _rate_of, baseline)
    cpu = [m.client_cpu_fraction for m in ok if m.client_cpu_fraction is not None]
    server_cpu = [m.server_cpu_fraction for m in ok if m.server_cpu_fraction is not None]
    other_cpu = [m.other_cpu_fraction for m in ok if m.other_cpu_fraction is not None]
    return AppSummary(
        app=app,
        median_messages_per_s=_median([m.messages_per_s for m in ok if m.messages_per_s]),
        median_ratio=_median(ratios),
        ratios=[round(r, 4) for r in ratios],
        median_cpu_ratio=_median(_round_ratios(cells, app, _efficiency_of, baseline)),
        valid_rounds=len(ok),
        max_client_cpu_fraction=max(cpu) if cpu else None,
        median_server_cpu_fraction=_median(server_cpu),
        max_other_cpu_fraction=max(other_cpu) if other_cpu else None,
        errors=sum(m.errors for m in mine),
        failures=[f"round {m.round}: {m.failure}" for m in mine if m.failure],
    )


def summarize(
    measurements: Iterable[Measurement],
    workers: Sequence[str],
    apps: Sequence[str],
    conns: Sequence[int],
    baseline: str = BASELINE,
) -> list[GroupSummary]:
    """Group measurements by worker and connection count and summarize each app.

    Args:
        measurements: Every measurement of the run.
        workers: Worker classes, in report order.
        apps: Apps, in report order.
        conns: Connection counts, in report order.
        baseline: The app every ratio divides by, round by round.

    Returns:
        One group per (worker, conns), apps in the given order.
    """
    everything = list(measurements)
    groups = []
    for worker in workers:
        for count in conns:
            cells = [m for m in everything if m.worker == worker and m.conns == count]
            summaries = [_summarize_app(cells, a, baseline) for a in apps]
            groups.append(GroupSummary(worker, count, summaries))
    return groups


def client_bound(measurements: Iterable[Measurement]) -> list[Measurement]:
    """Measurements in which the client's CPU time exceeded 90% of the wall time."""
    return [
        m
        for m in measurements
        if m.client_cpu_fraction is not None and m.client_cpu_fraction > CLIENT_BOUND_FRACTION
    ]


def unsaturated(measurements: Iterable[Measurement], conns: int) -> list[Measurement]:
    """Measurements at `conns` connections in which the server's core was not kept busy.

    At the highest connection count the server should use its whole core; when it does not,
    something else ran there and that round's figure (not its per-CPU figure) is suspect.
    """
    return [
        m
        for m in measurements
        if m.conns == conns
        and m.server_cpu_fraction is not None
        and m.server_cpu_fraction < SATURATED_FRACTION
    ]


def busy_machine(measurements: Iterable[Measurement]) -> list[Measurement]:
    """Measurements during which other processes used more than a quarter of a core."""
    return [
        m
        for m in measurements
        if m.other_cpu_fraction is not None and m.other_cpu_fraction > BUSY_MACHINE_FRACTION
    ]


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _overview(groups: Sequence[GroupSummary], apps: Sequence[str], baseline: str) -> list[str]:
    others = [a for a in apps if a != baseline]
    lines = [
        f"| worker | conns | {baseline} msg/s | " + " | ".join(others) + " |",
        "|---|---:|---:|" + "---:|" * len(others),
    ]
    for group in groups:
        raw = group.app(baseline)
        cells = [_ratio(s.median_ratio) if (s := group.app(a)) else "—" for a in others]
        rate = _rate(raw.median_messages_per_s if raw else None)
        lines.append(f"| {group.worker} | {group.conns} | {rate} | " + " | ".join(cells) + " |")
    return lines


def _details(group: GroupSummary, baseline: str) -> list[str]:
    plural = "connection" if group.conns == 1 else "connections"
    lines = [
        f"### hypercorn {group.worker}, {group.conns} {plural}",
        "",
        f"| app | median msg/s | ratio ÷ {baseline} | ratios by round | ratio per server CPU-s "
        "| server CPU | client CPU max | other load max | errors |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in group.apps:
        by_round = " ".join(f"{r:.2f}" for r in s.ratios) or "—"
        lines.append(
            f"| {s.app} | {_rate(s.median_messages_per_s)} | {_ratio(s.median_ratio)} "
            f"| {by_round} | {_ratio(s.median_cpu_ratio)} "
            f"| {_percent(s.median_server_cpu_fraction)} "
            f"| {_percent(s.max_client_cpu_fraction)} | {_percent(s.max_other_cpu_fraction)} "
            f"| {s.errors} |"
        )
    return lines


def render_markdown(
    groups: Sequence[GroupSummary], apps: Sequence[str], baseline: str = BASELINE
) -> str:
    """The run as Markdown: an overview of median ratios, then one table per group.

    Args:
        groups: The output of `summarize`.
        apps: Apps, in report order.
        baseline: The app the ratios divide by (as given to `summarize`).

    Returns:
        Markdown text.
    """
    lines = [f"## Median ratio to `{baseline}` (raw ASGI), same round (higher is better)", ""]
    if baseline in apps:
        lines += _overview(groups, apps, baseline)
    else:
        lines.append(f"(no ratios: the {baseline} app was not part of this run)")
    for group in groups:
        lines += ["", *_details(group, baseline)]
    return "\n".join(lines) + "\n"

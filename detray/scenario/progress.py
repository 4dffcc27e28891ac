"""The live progress line of ``detray simulate`` on a terminal.

Owns: ``LiveProgress``, a rich ``Live`` display on stderr showing virtual
time (a bar towards ``expect.max_makespan_s`` when there is one), task
attempts done, trace events and wall time. It costs the simulation
nothing per event: rich's own refresh thread (a few times a second) reads
three counters of the running cluster (``env.now``, ``executor.finishes``,
``len(trace)``), which the simulation keeps anyway. Must not: change the
cluster, add SimPy events (they would change the trace and hide deadlocks),
or read the clock inside user code (it runs in rich's thread, which the
simulator's time patches leave real).

While the display is up, what the program prints goes through rich's
redirection so it scrolls above the progress line (stdout only when stdout
is the same terminal).
"""

from __future__ import annotations

import sys
from time import perf_counter as _wall_clock  # bound before the simulator patches time
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

REFRESH_PER_S = 4


def wanted(quiet: bool) -> bool:
    """A progress display only for a person watching: stderr is a terminal and not --quiet."""
    return not quiet and sys.stderr.isatty()


class _Status:
    def __init__(self, name: str, horizon_s: float | None) -> None:
        self.name = name
        self.horizon_s = horizon_s
        self.cluster: Any = None
        self.started_at = _wall_clock()

    def __rich__(self) -> RenderableType:
        wall_s = _wall_clock() - self.started_at
        cluster = self.cluster
        if cluster is None:
            return Text(f"{self.name}: starting the program ({wall_s:.1f} s)", style="dim")
        now_s = float(cluster.env.now)
        done = cluster.executor.finishes
        events = len(cluster.trace)
        grid = Table.grid(padding=(0, 1))
        cells: list[RenderableType] = [Text(self.name, style="bold")]
        if self.horizon_s:
            grid.add_column()
            cells.append(ProgressBar(total=self.horizon_s, completed=min(now_s, self.horizon_s), width=30))
        grid.add_column()
        grid.add_column()
        of = f" of {self.horizon_s:g}" if self.horizon_s else ""
        cells.append(
            Text(f"t={now_s:.3f}{of} s virtual | {done:,} tasks done | {events:,} events | {wall_s:.1f} s wall")
        )
        grid.add_row(*cells)
        return Group(grid)


class LiveProgress:
    """``with LiveProgress(...) as progress: ... progress.attach(cluster)``; a no-op when disabled."""

    def __init__(self, name: str, *, horizon_s: float | None, enabled: bool) -> None:
        self.enabled = enabled
        self._status = _Status(name, horizon_s)
        self._live: Live | None = None
        if enabled:
            console = Console(file=sys.stderr, stderr=True)
            self._live = Live(
                self._status,
                console=console,
                refresh_per_second=REFRESH_PER_S,
                transient=True,
                redirect_stdout=sys.stdout.isatty(),
                redirect_stderr=True,
            )

    def attach(self, cluster: Any) -> None:
        self._status.cluster = cluster

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()

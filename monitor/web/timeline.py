"""Geometry of the trial page's status timeline: status bands and an enrollment line.

Pure: version points in, coordinates out; the template draws them as inline SVG (no
JavaScript, no chart library). One column per version: a colored band for the recruitment
status (labelled where it changes) above a line of the target enrollment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trialwatch.monitor.events import humanize
from trialwatch.monitor.views import VersionPoint

WIDTH = 760
HEIGHT = 230
LEFT, RIGHT = 56, 16
BAND_TOP, BAND_HEIGHT = 24, 30
PLOT_TOP, PLOT_BOTTOM = 84, 186
AXIS_Y = 206

STATUS_COLORS = {
    "NOT_YET_RECRUITING": "#9ecae1",
    "RECRUITING": "#31a354",
    "ENROLLING_BY_INVITATION": "#74c476",
    "ACTIVE_NOT_RECRUITING": "#fd8d3c",
    "SUSPENDED": "#e6550d",
    "TERMINATED": "#de2d26",
    "WITHDRAWN": "#a50f15",
    "COMPLETED": "#636363",
}
UNKNOWN_COLOR = "#d9d9d9"


@dataclass(frozen=True)
class Band:
    x: float
    width: float
    color: str
    status: str
    label: str | None  # shown where the status changes
    version: int


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    count: int
    version: int
    label: str | None


@dataclass(frozen=True)
class Tick:
    x: float
    version: str
    date: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    bands: list[Band]
    dots: list[Dot]
    path: str
    ticks: list[Tick]
    y_labels: list[tuple[float, str]]
    band_top: int = BAND_TOP
    band_height: int = BAND_HEIGHT
    axis_y: int = AXIS_Y
    plot_top: int = PLOT_TOP
    plot_bottom: int = PLOT_BOTTOM
    left: int = LEFT

    @property
    def summary(self) -> str:
        """The chart in words (the SVG's accessible description)."""
        statuses = [b.label for b in self.bands if b.label]
        counts = [str(d.count) for d in self.dots if d.label]
        return (f"{len(self.bands)} versions; status: {' → '.join(statuses) or 'unknown'}; "
                f"enrollment: {' → '.join(counts) or 'unknown'}")


def build_timeline(points: Sequence[VersionPoint]) -> Timeline:
    n = max(len(points), 1)
    column = (WIDTH - LEFT - RIGHT) / n
    label_every = max(1, round(n / 12))  # about a dozen labels at most
    bands, ticks = [], []
    previous: str | None = None
    for i, point in enumerate(points):
        status = point.status or "UNKNOWN"
        x = LEFT + i * column
        bands.append(Band(x, column, STATUS_COLORS.get(status, UNKNOWN_COLOR),
                          humanize(status) if point.status else "Unknown",
                          humanize(status) if status != previous else None, point.version))
        previous = status
        if i % label_every == 0 or i == n - 1:
            date = point.last_update_posted or point.fetched_at.date().isoformat()
            ticks.append(Tick(x + column / 2, f"v{point.version}", date))
    counts = [p.enrollment for p in points if p.enrollment is not None]
    top = max(counts, default=0)
    low = min(counts, default=0)
    span = max(top - low, 1)

    def y(count: int) -> float:
        if top == low:
            return (PLOT_TOP + PLOT_BOTTOM) / 2
        return PLOT_BOTTOM - (count - low) / span * (PLOT_BOTTOM - PLOT_TOP)

    dots: list[Dot] = []
    path: list[str] = []
    last: int | None = None
    for i, point in enumerate(points):
        if point.enrollment is None:
            last = None
            continue
        x, yy = LEFT + (i + 0.5) * column, y(point.enrollment)
        path.append(f"{'L' if last is not None else 'M'}{x:.1f},{yy:.1f}")
        label = str(point.enrollment) if point.enrollment != last else None
        dots.append(Dot(x, yy, point.enrollment, point.version, label))
        last = point.enrollment
    y_labels = [(y(top), str(top))] + ([(y(low), str(low))] if low != top else [])
    return Timeline(WIDTH, HEIGHT, bands, dots, " ".join(path), ticks,
                    y_labels if counts else [])

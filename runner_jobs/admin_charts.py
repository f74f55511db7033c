"""Server-rendered SVG charts for the admin dashboard: no JavaScript, no CDN, nothing to load.
Every label is escaped by ``format_html``."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 44
MARGIN_BOTTOM = 28
MARGIN_TOP = 12
PLOT_WIDTH = WIDTH - MARGIN_LEFT - 8
PLOT_HEIGHT = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM


def _n(x: float) -> str:
    return f"{x:.1f}"


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    values: Sequence[float]


def _svg(title: str, body: SafeString, height: int = HEIGHT) -> SafeString:
    return format_html(
        '<svg class="rj-chart" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{t}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>{t}</title>{b}</svg>',
        w=WIDTH,
        h=height,
        t=title,
        b=body,
    )


def _y_axis(top_value: float, suffix: str) -> SafeString:
    """Gridlines and labels at 0, 1/2 and the top of the scale."""
    ticks = []
    for fraction in (0.0, 0.5, 1.0):
        y = MARGIN_TOP + PLOT_HEIGHT * (1 - fraction)
        value = top_value * fraction
        label = f"{value:.0f}{suffix}" if value >= 10 or value == 0 else f"{value:.1f}{suffix}"
        ticks.append((MARGIN_LEFT, _n(y), WIDTH - 8, _n(y), MARGIN_LEFT - 6, _n(y + 4), label))
    return format_html_join(
        "",
        '<line class="rj-grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<text class="rj-axis" x="{}" y="{}" text-anchor="end">{}</text>',
        ticks,
    )


def _x_labels(labels: Sequence[str], slot: float, every: int) -> SafeString:
    y = HEIGHT - MARGIN_BOTTOM + 16
    return format_html_join(
        "",
        '<text class="rj-axis" x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (_n(MARGIN_LEFT + slot * (i + 0.5)), y, label)
            for i, label in enumerate(labels)
            if i % every == 0
        ),
    )


def stacked_bar_chart(
    *, title: str, labels: Sequence[str], series: Sequence[Series], label_every: int = 3
) -> SafeString:
    """One stacked bar per label (e.g. per hour), one segment per series."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = max([*totals, 1])
    slot = PLOT_WIDTH / max(len(labels), 1)
    bars = []
    for i, label in enumerate(labels):
        y = float(MARGIN_TOP + PLOT_HEIGHT)
        for s in series:
            value = s.values[i]
            if not value:
                continue
            h = PLOT_HEIGHT * value / top
            y -= h
            bars.append(
                (
                    s.css_class,
                    _n(MARGIN_LEFT + slot * i + slot * 0.15),
                    _n(y),
                    _n(slot * 0.7),
                    _n(h),
                    f"{label}: {value:g} {s.name}",
                )
            )
    body = format_html(
        "{}{}{}",
        _y_axis(top, ""),
        format_html_join(
            "",
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            bars,
        ),
        _x_labels(labels, slot, label_every),
    )
    return _svg(title, body)


def line_chart(
    *,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    suffix: str = "",
    top: float | None = None,
    label_every: int = 3,
) -> SafeString:
    """A line through the points that have a value (None leaves a gap in the line)."""
    known = [v for v in values if v is not None]
    scale_top = top if top is not None else max([*known, 1])
    slot = PLOT_WIDTH / max(len(labels), 1)
    segments: list[list[tuple[str, str, str]]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            segments.append([])
            continue
        x = MARGIN_LEFT + slot * (i + 0.5)
        y = MARGIN_TOP + PLOT_HEIGHT * (1 - value / scale_top)
        segments[-1].append((_n(x), _n(y), f"{labels[i]}: {value:.1f}{suffix}"))
    lines = format_html_join(
        "",
        '<polyline class="rj-line" points="{}"/>',
        ((" ".join(f"{x},{y}" for x, y, _ in seg),) for seg in segments if seg),
    )
    dots = format_html_join(
        "",
        '<circle class="rj-dot" cx="{}" cy="{}" r="3"><title>{}</title></circle>',
        (point for seg in segments for point in seg),
    )
    body = format_html(
        "{}{}{}{}", _y_axis(scale_top, suffix), lines, dots, _x_labels(labels, slot, label_every)
    )
    return _svg(title, body)


def horizontal_bar_chart(*, title: str, rows: Sequence[tuple[str, float, str]]) -> SafeString:
    """One labelled bar per row ``(label, value, css_class)``."""
    row_height = 26
    height = MARGIN_TOP * 2 + row_height * max(len(rows), 1)
    top = max([value for _, value, _ in rows] + [1])
    label_width = 90
    bar_space = WIDTH - label_width - 90
    items = []
    for i, (label, value, css_class) in enumerate(rows):
        y = MARGIN_TOP + i * row_height
        w = bar_space * value / top
        items.append(
            (
                label_width - 8,
                y + 17,
                label,
                css_class,
                label_width,
                y + 4,
                _n(max(w, 1 if value else 0)),
                f"{label}: {value:,.0f}",
                _n(label_width + w + 6),
                y + 17,
                f"{value:,.0f}",
            )
        )
    body = format_html_join(
        "",
        '<text class="rj-axis" x="{}" y="{}" text-anchor="end">{}</text>'
        '<rect class="{}" x="{}" y="{}" width="{}" height="18"><title>{}</title></rect>'
        '<text class="rj-value" x="{}" y="{}">{}</text>',
        items,
    )
    return _svg(title, body if rows else mark_safe(""), height)

"""The overview charts of the HTML report, drawn with plotly (imported lazily: an optional extra).

Every figure is returned as plotly's own JSON (``plotly.io.to_json``), which the page embeds and
plotly.js draws. Large data is reduced before it reaches a figure (histograms are binned here with
numpy, lists are cut to their worst entries), so the page's size does not grow with the number of
gaps measured.
"""

from __future__ import annotations

import html
import itertools
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from analyzer.errors import ConfigError
from analyzer.model import Report, Session
from analyzer.report.console import printable

NS = 1_000_000_000

GREEN, AMBER, RED = "#16a34a", "#d97706", "#dc2626"
BLUE, SLATE, PURPLE, TEAL, GREY = "#2563eb", "#64748b", "#7c3aed", "#0d9488", "#9ca3af"
BAND_OPACITY = 0.10

RATIO_BIN = 0.05
RATIO_MAX = 3.0
"""Gap / K histogram: bins of 0.05 from 0 to 3, then one bin for everything at or past 3."""

HIST_HEIGHT = 240
"""Height of the two overview histograms, in pixels."""

CLIENT_BARS = 30
"""The client chart shows the worst this many clients (the table lists more)."""

FONT = {
    "family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "size": 12,
    "color": "#1f2937",
}

INSTALL_HINT = "pip install 'mqtt-keepalive[html]'"


def load_plotly() -> Any:
    """``plotly.graph_objects``, or a ConfigError that says how to install it."""
    try:
        import plotly.graph_objects as go
        import plotly.io  # noqa: F401 - to_json
    except ImportError as exc:
        raise ConfigError(
            f"the HTML report needs plotly, which is not installed: {INSTALL_HINT}"
        ) from exc
    return go


def plotly_js() -> str:
    """plotly.js itself, to be inlined once in the page."""
    load_plotly()
    from plotly.offline import get_plotlyjs

    js = str(get_plotlyjs())
    # inline in <script>: a "</script" (any case) would end the element early
    return re.sub(r"</(script)", lambda m: "<\\/" + m.group(1), js, flags=re.IGNORECASE)


def to_json(fig: Any) -> str:
    import plotly.io as pio

    return str(pio.to_json(fig, validate=False, pretty=False))


def text(value: object) -> str:
    """A string for plotly's hover and labels: plotly reads a little HTML there, so escape."""
    return html.escape(str(value), quote=False)


def zone_color(ratio: float | None) -> str:
    if ratio is None or np.isnan(ratio):
        return GREY
    return GREEN if ratio <= 1.0 else AMBER if ratio <= 1.5 else RED


def base_layout(height: int, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "template": "none",
        "height": height,
        "font": FONT,
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "hoverlabel": {"align": "left"},
        "legend": {
            "orientation": "h",
            "x": 0,
            "y": 1.02,
            "yanchor": "bottom",
            "font": {"size": 11},
        },
    }
    layout.update(extra)
    return layout


def _deadline_lines(
    fig: Any, axis: str = "x", label: bool = True, position: str = "top right"
) -> None:
    """Vertical (axis="x") or horizontal (axis="y") lines at 1.0 and 1.5 x K."""
    for value, color, name in ((1.0, AMBER, "K"), (1.5, RED, "1.5 x K")):
        kw: dict[str, Any] = {"line": {"color": color, "width": 2, "dash": "dash"}}
        if label:
            kw.update(
                annotation_text=name, annotation_font_color=color, annotation_position=position
            )
        if axis == "x":
            fig.add_vline(x=value, **kw)
        else:
            fig.add_hline(y=value, **kw)


def client_margin_figure(clients: pd.DataFrame) -> tuple[str, int, int]:
    """Each client's longest silence / K, worst clients first, coloured by deadline zone.

    Returns the figure's JSON, how many clients with a known ratio were left out, its height.
    """
    go = load_plotly()
    known = clients[clients["max_gap_over_k"].notna()]
    shown = known.head(CLIENT_BARS)
    left_out = len(known) - len(shown)
    names = _unique([_short(str(c)) for c in shown["client_id"]])
    ratios = [float(r) for r in shown["max_gap_over_k"]]
    p95 = [None if pd.isna(v) else float(v) for v in shown["p95_gap_over_k"]]
    verdict = [
        _verdict(r, int(e), int(w)) for r, e, w in zip(ratios, shown["errors"], shown["warnings"])
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=ratios,
            y=names,
            orientation="h",
            name="longest silence / K",
            marker={"color": [zone_color(r) for r in ratios]},
            text=[f"{r:.2f} x K  {v}" for r, v in zip(ratios, verdict)],
            textposition="outside",
            cliponaxis=False,
            customdata=[
                [text(printable(str(c), 200)), int(s), int(e), int(w)]
                for c, s, e, w in zip(
                    shown["client_id"], shown["sessions"], shown["errors"], shown["warnings"]
                )
            ],
            hovertemplate=(
                "<b>%{customdata[0]}</b><br>longest silence %{x:.3f} x K<br>"
                "%{customdata[1]} session(s), %{customdata[2]} error(s), "
                "%{customdata[3]} warning(s)<extra></extra>"
            ),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=p95,
            y=names,
            mode="markers",
            name="95th percentile gap / K",
            marker={"symbol": "line-ns-open", "size": 16, "color": "#111827", "line": {"width": 2}},
            hovertemplate="p95 gap %{x:.3f} x K<extra></extra>",
        )
    )
    top = max([RATIO_MAX * 0.6, *ratios]) * 1.35
    fig.add_vrect(x0=0, x1=1, fillcolor=GREEN, opacity=BAND_OPACITY, line_width=0)
    fig.add_vrect(x0=1, x1=1.5, fillcolor=AMBER, opacity=BAND_OPACITY, line_width=0)
    fig.add_vrect(x0=1.5, x1=top, fillcolor=RED, opacity=BAND_OPACITY, line_width=0)
    _deadline_lines(fig, "x", position="top")
    fig.update_layout(
        **base_layout(
            _client_chart_height(len(names)),
            bargap=0.35,
            showlegend=False,
            xaxis={
                "title": "longest silence, as a multiple of the session's Keep Alive (K)",
                "range": [0, top],
                "zeroline": False,
                "gridcolor": "#e5e7eb",
            },
            yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
            margin={"l": 20, "r": 30, "t": 30, "b": 50},
        )
    )
    return to_json(fig), left_out, _client_chart_height(len(names))


def _client_chart_height(bars: int) -> int:
    return max(200, 110 + 34 * bars)


def _verdict(ratio: float, errors: int, warnings: int) -> str:
    if ratio > 1.5:
        return "silent past 1.5 x K"
    if ratio > 1.0:
        return "late (past K)"
    if errors or warnings:
        return "on time, other findings"
    return "on time"


def _short(value: str, limit: int = 40) -> str:
    return text(printable(value, limit))


def _unique(labels: list[str]) -> list[str]:
    """Category labels made unique (two long ids may share their first 40 characters)."""
    seen: Counter[str] = Counter()
    out = []
    for label in labels:
        seen[label] += 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


GAPS_AT_ONCE = 1 << 18
"""Gap samples binned together at most (2 MiB of floats)."""


def gap_ratio_figure(report: Report) -> tuple[str, dict[str, int]]:
    """Histogram of every sampled client gap / K, and of each session's longest silence / K.

    Binned here (``RATIO_BIN`` wide up to ``RATIO_MAX``, the rest in one last bin), so 10,000
    sessions of 256 samples cost the page some 60 numbers; and binned as read, a few hundred
    thousand samples at a time (``GAPS_AT_ONCE``), so a long capture's samples are never all in
    memory at once. Returns the JSON and counts.
    """
    ratios = GapRatios()
    for s in report.sessions:
        ratios.add(s)
    return ratios.figure()


class GapRatios:
    """`gap_ratio_figure` gathered session by session, for a reader that makes other things of
    the sessions on the same pass (the HTML report)."""

    def __init__(self) -> None:
        self.edges = np.append(np.arange(0.0, RATIO_MAX + RATIO_BIN / 2, RATIO_BIN), np.inf)
        self.gap_counts = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.samples: list[np.ndarray] = []
        self.held = self.gaps = 0
        self.longest: list[float] = []

    def add(self, s: Session) -> None:
        k = s.effective_keep_alive_s
        if not k:
            return
        if s.gap_samples_ns:
            self.samples.append(np.asarray(s.gap_samples_ns, dtype=float) / (k * NS))
            self.held += len(self.samples[-1])
            if self.held >= GAPS_AT_ONCE:
                self._bin()
        if s.max_gap_ns is not None:
            self.longest.append(s.max_gap_ns / (k * NS))

    def _bin(self) -> None:
        if self.samples:
            self.gap_counts += np.histogram(np.concatenate(self.samples), self.edges)[0]
            self.gaps, self.samples, self.held = self.gaps + self.held, [], 0

    def figure(self) -> tuple[str, dict[str, int]]:
        go = load_plotly()
        self._bin()
        edges, gap_counts, gaps, longest = self.edges, self.gap_counts, self.gaps, self.longest
        longest_counts, _ = np.histogram(np.asarray(longest, dtype=float), edges)
        centers = [round(float(x), 4) for x in edges[:-2] + RATIO_BIN / 2] + [RATIO_MAX + RATIO_BIN]
        labels = [f"{a:.2f}-{b:.2f}" for a, b in itertools.pairwise(edges[:-1])] + [
            f">= {RATIO_MAX:.1f}"
        ]
        fig = go.Figure()
        fig.add_trace(
            go.Bar(
                x=centers,
                y=[int(c) for c in gap_counts],
                width=RATIO_BIN * 0.95,
                name="client gaps (sampled, every session)",
                marker={"color": [zone_color(c) for c in centers], "opacity": 0.75},
                customdata=labels,
                hovertemplate="gap / K %{customdata}: %{y} gap(s)<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=centers,
                y=[int(c) if c else None for c in longest_counts],
                mode="markers",
                name="longest silence of each session (incl. silences the broker or capture ended)",
                marker={"symbol": "circle-open", "size": 11, "color": "#111827", "line": {"width": 2}},
                customdata=labels,
                hovertemplate="longest silence / K %{customdata}: %{y} session(s)<extra></extra>",
            )
        )
        fig.add_vrect(x0=0, x1=1, fillcolor=GREEN, opacity=BAND_OPACITY, line_width=0)
        fig.add_vrect(x0=1, x1=1.5, fillcolor=AMBER, opacity=BAND_OPACITY, line_width=0)
        fig.add_vrect(
            x0=1.5, x1=RATIO_MAX + 2 * RATIO_BIN, fillcolor=RED, opacity=BAND_OPACITY, line_width=0
        )
        _deadline_lines(fig, "x")
        fig.update_layout(
            **base_layout(
                HIST_HEIGHT,
                barmode="overlay",
                xaxis={
                    "title": f"gap / K (the last bar holds everything >= {RATIO_MAX:.0f} x K)",
                    "range": [0, RATIO_MAX + 2 * RATIO_BIN],
                    "gridcolor": "#e5e7eb",
                    "zeroline": False,
                },
                yaxis={
                    "title": "count (log)",
                    "type": "log",
                    "gridcolor": "#e5e7eb",
                    "rangemode": "tozero",
                },
                margin={"l": 60, "r": 20, "t": 60, "b": 50},
            )
        )
        return to_json(fig), {"gaps": gaps, "sessions": len(longest)}


def keep_alive_figure(report: Report) -> str:
    """Sessions per effective Keep Alive value (unknown and 0 shown as such)."""
    go = load_plotly()
    counts: Counter[int | None] = Counter(s.effective_keep_alive_s for s in report.sessions)
    known = sorted(k for k in counts if k is not None)
    keys: list[int | None] = known + ([None] if None in counts else [])
    labels = ["unknown" if k is None else "0 (off)" if k == 0 else f"{k} s" for k in keys]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[counts[k] for k in keys],
            marker={"color": BLUE},
            text=[counts[k] for k in keys],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="K = %{x}: %{y} session(s)<extra></extra>",
            name="sessions",
        )
    )
    fig.update_layout(
        **base_layout(
            HIST_HEIGHT,
            showlegend=False,
            xaxis={"title": "effective Keep Alive (K)", "type": "category"},
            yaxis={"title": "sessions", "gridcolor": "#e5e7eb", "rangemode": "tozero"},
            margin={"l": 60, "r": 20, "t": 30, "b": 50},
        )
    )
    return to_json(fig)

"""One session's heartbeat against its deadlines, as a plotly figure.

Top row: the client's silence as a multiple of its Keep Alive (K) over time, a sawtooth that rises
from the end of each client packet and drops at the start of the next one (how the analyzer
measures gaps), over bands that turn amber at K and red at 1.5 x K: the K and 1.5 x K deadlines
that every client packet starts anew. Each peak is the packet that ended the gap (a diamond for a
PINGREQ), coloured by the zone it reached. Findings sit where they happened (on the deadline line
they crossed, or on the curve) with their rule id; frames and message are in the hover.

Middle row: every packet in two lanes, client and broker; each PINGREQ is joined to its PINGRESP
and an unanswered PINGREQ is a red cross. Bottom row: each PINGREQ's PINGRESP latency in ms. A
vertical line through all rows marks the end of the session and says who ended it.

The figure is plotly's JSON figure format built as plain dicts and lists (``plotly.io.to_json``
with validation off: building 200 validated ``go.Figure`` objects would cost seconds; the unit
tests validate the same dicts with ``go.Figure``). Dense sessions are thinned before drawing
(``MAX_GAPS_DRAWN`` gaps: the longest half, then an even spread of the rest;
``MAX_PACKETS_DRAWN`` packet markers; ``MAX_FINDINGS_DRAWN`` findings), and the card says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analyzer.model import EndReason, Finding, PacketType, Session, Severity
from analyzer.report.html.charts import (
    AMBER,
    BAND_OPACITY,
    BLUE,
    FONT,
    GREEN,
    GREY,
    NS,
    PURPLE,
    RED,
    SLATE,
    TEAL,
    text,
    to_json,
)
from analyzer.report.packets import SessionPackets

TIMELINE_HEIGHT = 450
MAX_GAPS_DRAWN = 400
MAX_PACKETS_DRAWN = 800
MAX_PING_LINKS = 200
MAX_FINDINGS_DRAWN = 300
MAX_FINDING_LINES = 60
"""Vertical lines (layout shapes) for at most this many finding times."""
X_DIGITS = 3
"""Times on the x axis are drawn to the millisecond (hovers with frames give the exact packet)."""
MIN_LINK_SHARE = 0.003
"""A PINGREQ is joined to its PINGRESP by a line only when the latency is visible at the chart's
scale (this share of the session's duration); the latency row shows every one anyway."""
MAX_LABELLED_FINDINGS = 40
"""Findings get a visible rule id label up to this many; past it only markers (and hovers)."""

SEVERITY_COLORS = {Severity.ERROR: RED, Severity.WARNING: AMBER, Severity.INFO: TEAL}
INK = "#111827"
GRID = "#eef0f3"

END_TEXT = {
    EndReason.CLIENT_DISCONNECT: "client sent DISCONNECT",
    EndReason.SERVER_DISCONNECT: "broker sent DISCONNECT",
    EndReason.CLIENT_FIN: "client closed (FIN)",
    EndReason.SERVER_FIN: "broker closed (FIN)",
    EndReason.CLIENT_RST: "client reset (RST)",
    EndReason.SERVER_RST: "broker reset (RST)",
    EndReason.IDLE_EVICTED: "idle, no end seen",
    EndReason.CAPTURE_END: "capture ended",
}

ROW1 = {"xaxis": "x", "yaxis": "y"}
ROW2 = {"xaxis": "x", "yaxis": "y2"}
ROW3 = {"xaxis": "x", "yaxis": "y3"}
LOST_Y = 0.0
"""Where an unanswered PINGREQ sits in the latency row (its label reads "no PINGRESP")."""
DOMAINS = {"y": [0.45, 1.0], "y2": [0.22, 0.37], "y3": [0.0, 0.12]}


@dataclass
class TimelineFacts:
    """What the session card says next to the chart."""

    notes: list[str] = field(default_factory=list)
    ping_latency_ms: list[float] = field(default_factory=list)
    unanswered: int = 0


def end_text(s: Session) -> str:
    """How the session ended and at which frame, in words (no network data)."""
    return f"{END_TEXT[s.end_reason]}, frame {s.end_frame}"


def _ints(values: Any, dtype: Any = np.int64) -> np.ndarray:
    if not len(values):
        return np.zeros(0, np.int64)
    return np.frombuffer(values, dtype=dtype).astype(np.int64)


def _spread(candidates: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``candidates``, evenly spread."""
    if len(candidates) <= n:
        return candidates
    return candidates[np.linspace(0, len(candidates) - 1, n).astype(np.int64)]


def _list(values: Any, digits: int | None = 4) -> list[Any]:
    """A JSON-ready list: numpy values rounded, NaN as None (plotly's gap)."""
    arr = np.asarray(values, dtype=float)
    if digits is not None:
        arr = np.round(arr, digits)
    return [None if math.isnan(v) else v for v in arr.tolist()]


def _frames(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).tolist()]


class _Timeline:
    """Builds one figure; ``x`` values are seconds since the session's first frame."""

    def __init__(self, s: Session, findings: list[Finding], packets: SessionPackets | None) -> None:
        self.s, self.findings = s, findings
        self.k = s.effective_keep_alive_s or 0
        self.unit = self.k * NS if self.k else NS
        self.traces: list[dict[str, Any]] = []
        self.shapes: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.facts = TimelineFacts()
        self.curve = (np.zeros(0), np.zeros(0))
        self.packets = packets
        self.lost_y = False
        empty = np.zeros(0, np.int64)
        self.ts_f = self.ts_l = self.first = self.kinds = empty
        self.client = np.zeros(0, bool)
        if packets is not None and len(packets):
            self.ts_f, self.ts_l = _ints(packets.ts_first_ns), _ints(packets.ts_last_ns)
            self.first = _ints(packets.first_frame)
            self.kinds = _ints(packets.type, np.uint8)
            self.client = np.frombuffer(packets.from_client, dtype=np.uint8).astype(bool)
            if packets.capped:
                self.facts.notes.append(
                    f"long session: its first {len(packets):,} of {packets.total:,} packets were "
                    "kept for drawing; after them (the grey dotted line) only client silences "
                    "longer than K / 2 and the last client packet are drawn"
                )
                if packets.late_gaps_dropped:
                    self.facts.notes.append(
                        f"{packets.late_gaps_dropped:,} more long silences after the cap are "
                        "not drawn (the findings still are)"
                    )
        elif packets is None:
            self.facts.notes.append(
                "no packet timeline for this session (its capture was not "
                "read again, e.g. standard input): findings and the end only"
            )

    def x(self, ns: Any) -> np.ndarray:
        return (np.asarray(ns, dtype=np.int64) - self.s.start_ns) / NS

    def xs(self, ns: Any) -> list[Any]:
        return _list(self.x(ns), X_DIGITS)

    def add(self, row: dict[str, str], **trace: Any) -> None:
        trace.setdefault("type", "scatter")
        self.traces.append({**row, **trace})

    # -- row 1: the silence sawtooth -----------------------------------------------------------

    def sawtooth(self) -> float:
        """Draw the silences; returns the largest silence drawn (in K, or seconds)."""
        s, client, ts_f, ts_l, kinds = self.s, self.client, self.ts_f, self.ts_l, self.kinds
        ci = np.flatnonzero(client & (ts_f <= s.end_ns))
        if not len(ci):
            return 0.0
        starts = ts_l[ci[:-1]].copy()
        ends = ts_f[ci[1:]].copy()
        ender_kind = kinds[ci[1:]].copy()
        ender_frame = self.first[ci[1:]].copy()
        start_frame = self.first[ci[:-1]].copy()
        if s.server_keep_alive_s is not None and len(starts):
            connack = np.flatnonzero(~client & (kinds == PacketType.CONNACK))
            if len(connack) and ts_l[connack[0]] > starts[0]:
                starts[0] = ts_l[connack[0]]
        # gaps past the cap (long ones only), then the silence up to the end of the session
        capped = self.packets is not None and self.packets.capped
        last_ts, last_kind, last_frame = (
            int(ts_l[ci[-1]]),
            int(kinds[ci[-1]]),
            int(self.first[ci[-1]]),
        )
        breaks = np.zeros(len(starts), bool)
        if capped:
            p = self.packets
            assert p is not None
            cut = float(self.x([ts_f[-1]])[0])
            self.shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": cut,
                    "x1": cut,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": GREY, "width": 1.5, "dash": "dot"},
                }
            )
            late_start, late_end = _ints(p.late_start_ns), _ints(p.late_end_ns)
            if len(late_end):
                starts = np.concatenate([starts, late_start])
                ends = np.concatenate([ends, late_end])
                ender_kind = np.concatenate([ender_kind, _ints(p.late_end_type, np.uint8)])
                ender_frame = np.concatenate([ender_frame, _ints(p.late_end_frame)])
                start_frame = np.concatenate([start_frame, _ints(p.late_start_frame)])
                breaks = np.concatenate([breaks, np.ones(len(late_end), bool)])
            if p.last_client is not None and p.last_client.ts_last_ns > last_ts:
                last_ts, last_kind = p.last_client.ts_last_ns, int(p.last_client.type)
                last_frame = p.last_client.first_frame
        if s.end_ns > last_ts and last_kind != PacketType.DISCONNECT:
            starts, ends = np.append(starts, last_ts), np.append(ends, s.end_ns)
            ender_kind = np.append(ender_kind, -1)
            ender_frame = np.append(ender_frame, s.end_frame)
            start_frame = np.append(start_frame, last_frame)
            breaks = np.append(breaks, capped)
        if not len(starts):
            return 0.0
        ratio = (ends - starts) / self.unit
        keep = np.arange(len(ratio))
        if len(ratio) > MAX_GAPS_DRAWN:
            longest = np.argsort(-ratio, kind="stable")[: MAX_GAPS_DRAWN // 2]
            spread = _spread(np.setdiff1d(keep, longest), MAX_GAPS_DRAWN - len(longest))
            keep = np.union1d(longest, spread)
            breaks[keep[1:][np.diff(keep) > 1]] = True
            self.facts.notes.append(
                f"dense session: {len(keep):,} of {len(ratio):,} silences "
                f"drawn (the {len(longest):,} longest and an even spread of "
                "the rest)"
            )
        starts, ends, ratio, breaks = starts[keep], ends[keep], ratio[keep], breaks[keep]
        ender_kind, ender_frame, start_frame = (
            ender_kind[keep],
            ender_frame[keep],
            start_frame[keep],
        )
        # each gap: (start, 0) -> (end, ratio) -> (end, 0), with a break (None) before a gap
        # that does not follow the previous one
        nan = np.full(len(ratio), np.nan)
        zero = np.zeros_like(ratio)
        gap_x = np.column_stack([nan, starts, ends, ends])
        gap_y = np.column_stack([nan, zero, ratio, zero])
        rows = np.ones(gap_x.shape, bool)
        rows[:, 0] = breaks
        first_x = ts_l[ci[0]] if s.server_keep_alive_s is None else starts[0]
        xs = np.concatenate([[first_x], gap_x[rows]])
        ys = np.concatenate([[0.0], gap_y[rows]])
        xs_s = np.where(np.isnan(xs), np.nan, (xs - s.start_ns) / NS)
        self.curve = (xs_s, ys)
        self.add(
            ROW1,
            x=_list(xs_s, X_DIGITS),
            y=_list(ys, 3),
            mode="lines",
            connectgaps=False,
            name="client silence" + (" / K" if self.k else " (s)"),
            line={"color": SLATE, "width": 1.5},
            hoverinfo="skip",
        )
        self.peaks(ends, ratio, (ends - starts) / NS, ender_kind, ender_frame, start_frame)
        i0 = int(ci[0])
        self.add(
            ROW1,
            x=self.xs([ts_f[i0]]),
            y=[0],
            mode="markers",
            showlegend=False,
            name=PacketType(int(kinds[i0])).name,
            marker={"symbol": "star", "size": 12, "color": BLUE},
            hovertemplate=f"{PacketType(int(kinds[i0])).name} #{int(self.first[i0])}: the "
            "first silence starts at its end<extra></extra>",
        )
        return float(ratio.max())

    def peaks(
        self,
        ends: np.ndarray,
        ratio: np.ndarray,
        gap_s: np.ndarray,
        ender_kind: np.ndarray,
        ender_frame: np.ndarray,
        start_frame: np.ndarray,
    ) -> None:
        """A marker where each gap ended, per kind of packet that ended it (or the session end)."""
        share = " = %{y:.2f} x K" if self.k else ""
        zone = np.digitize(ratio, [1.0, 1.5], right=True) if self.k else np.zeros(len(ratio), int)
        colors = (GREEN, AMBER, RED) if self.k else (BLUE, BLUE, BLUE)
        for kind, z in sorted(
            set(zip(ender_kind.tolist(), zone.tolist())),
            key=lambda v: (v[0] != PacketType.PINGREQ, v),
        ):
            mask = (ender_kind == kind) & (zone == z)
            if kind < 0:
                what = f"the session end ({text(end_text(self.s))})"
            else:
                what = PacketType(kind).name + " #%{customdata[1]}"
            is_ping = kind == PacketType.PINGREQ
            self.add(
                ROW1,
                x=self.xs(ends[mask]),
                y=_list(ratio[mask], 3),
                mode="markers",
                name="silence ended by a PINGREQ"
                if is_ping
                else "silence ended by another packet or the end",
                showlegend=False,
                marker={
                    "symbol": "diamond" if is_ping else "circle",
                    "size": 10 if is_ping else 8,
                    "line": {"width": 1, "color": INK},
                    "color": colors[z],
                },
                customdata=[
                    [a, b, c]
                    for a, b, c in zip(
                        _frames(start_frame[mask]),
                        _frames(ender_frame[mask]),
                        _list(gap_s[mask], 3),
                    )
                ],
                hovertemplate=f"{what}<br>after %{{customdata[2]:.3f}} s of client silence"
                f"{share}<br>(from the end of frame #%{{customdata[0]}})"
                "<br>at %{x:.3f} s<extra></extra>",
            )

    def deadlines(self, top: float) -> None:
        if not self.k:
            return  # the card's verdict says why; the axis is in seconds
        for y0, y1, color, alpha in (
            (0, 1, GREEN, BAND_OPACITY),
            (1, 1.5, AMBER, BAND_OPACITY * 1.4),
            (1.5, max(top, 1.5) * 2, RED, BAND_OPACITY),
        ):
            self.shapes.append(
                {
                    "type": "rect",
                    "xref": "x domain",
                    "x0": 0,
                    "x1": 1,
                    "yref": "y",
                    "y0": y0,
                    "y1": y1,
                    "fillcolor": color,
                    "opacity": alpha,
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
        deadline = f"1.5 x K = {1.5 * self.k:g} s: the broker must close"
        for value, color, label in (
            (1.0, AMBER, f"K = {self.k} s: the client must have sent"),
            (1.5, RED, deadline),
        ):
            self.shapes.append(
                {
                    "type": "line",
                    "xref": "x domain",
                    "x0": 0,
                    "x1": 1,
                    "yref": "y",
                    "y0": value,
                    "y1": value,
                    "line": {"color": color, "width": 1.5, "dash": "dash"},
                }
            )
            self.annotations.append(
                {
                    "xref": "x domain",
                    "x": 0.005,
                    "yref": "y",
                    "y": value,
                    "text": label,
                    "showarrow": False,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "font": {"color": color, "size": 11},
                }
            )

    # -- rows 2 and 3: the packet lanes and the PINGRESP latency -------------------------------

    def lanes(self) -> None:
        kinds, client, ts_f, ts_l, first = self.kinds, self.client, self.ts_f, self.ts_l, self.first
        if not len(kinds):
            self.add(ROW3, x=[], y=[], mode="markers", showlegend=False, hoverinfo="skip")
            self.annotations.append(
                {
                    "xref": "x domain",
                    "x": 0.5,
                    "yref": "y2 domain",
                    "y": 0.5,
                    "showarrow": False,
                    "text": "no packets to draw",
                    "font": {"color": GREY},
                }
            )
            return
        # an empty trace in each row, so that every subplot exists even with nothing to draw
        self.add(ROW2, x=[], y=[], mode="markers", showlegend=False, hoverinfo="skip")
        self.add(ROW3, x=[], y=[], mode="markers", showlegend=False, hoverinfo="skip")
        self.annotations.append(
            {
                "xref": "x domain",
                "x": 0,
                "yref": "y3 domain",
                "y": 1.0,
                "yanchor": "bottom",
                "xanchor": "left",
                "showarrow": False,
                "text": "PINGRESP latency (ms)",
                "font": {"color": SLATE, "size": 11},
            }
        )
        pending: list[int] = []
        pairs: list[tuple[int, int]] = []
        pings = (kinds == PacketType.PINGREQ) & client
        pongs = (kinds == PacketType.PINGRESP) & ~client
        for i in np.flatnonzero(pings | pongs).tolist():
            if pings[i]:
                pending.append(i)
            elif pending:
                pairs.append((pending.pop(0), i))
        self.facts.unanswered = len(pending)
        req = np.array([p[0] for p in pairs], dtype=np.int64)
        resp = np.array([p[1] for p in pairs], dtype=np.int64)
        latency_ms = (ts_f[resp] - ts_l[req]) / 1e6 if len(req) else np.zeros(0)
        self.facts.ping_latency_ms = latency_ms.tolist()

        shown = np.arange(len(kinds))
        if len(shown) > MAX_PACKETS_DRAWN:
            shown = np.union1d(
                _spread(np.flatnonzero(pings), MAX_PACKETS_DRAWN // 4),
                _spread(shown, MAX_PACKETS_DRAWN - MAX_PACKETS_DRAWN // 4),
            )
            self.facts.notes.append(f"packet lanes: {len(shown):,} of {len(kinds):,} packets drawn")
        visible = np.zeros(len(kinds), bool)
        visible[shown] = True
        pairs_shown = visible[req] if len(req) else np.zeros(0, bool)

        r, p = req[pairs_shown], resp[pairs_shown]
        lat = latency_ms[pairs_shown]
        if len(r):
            lat_list = _list(lat, 3)
            req_x = self.xs(ts_f[r])
            self.add(
                ROW2,
                x=req_x,
                y=[1] * len(r),
                mode="markers",
                name="client PINGREQ",
                marker={
                    "symbol": "diamond",
                    "size": 10,
                    "color": BLUE,
                    "line": {"width": 0.5, "color": INK},
                },
                customdata=[[a, b] for a, b in zip(_frames(first[r]), lat_list)],
                hovertemplate="PINGREQ #%{customdata[0]}, answered after "
                "%{customdata[1]:.3f} ms<br>at %{x:.3f} s<extra></extra>",
            )
            self.add(
                ROW2,
                x=self.xs(ts_f[p]),
                y=[0] * len(p),
                mode="markers",
                name="broker PINGRESP",
                marker={
                    "symbol": "diamond",
                    "size": 10,
                    "color": GREEN,
                    "line": {"width": 0.5, "color": INK},
                },
                customdata=_frames(first[p]),
                hovertemplate="PINGRESP #%{customdata}<br>at %{x:.3f} s<extra></extra>",
            )
            span_ns = max(1, self.s.end_ns - self.s.start_ns)
            visible_lat = np.flatnonzero(lat * 1e6 >= MIN_LINK_SHARE * span_ns)
            slowest = np.sort(
                visible_lat[np.argsort(-lat[visible_lat], kind="stable")][:MAX_PING_LINKS]
            )
            if len(slowest):
                rl, pl = r[slowest], p[slowest]
                link_x = np.column_stack(
                    [self.x(ts_l[rl]), self.x(ts_f[pl]), np.full(len(rl), np.nan)]
                )
                self.add(
                    ROW2,
                    x=_list(link_x.ravel(), X_DIGITS),
                    y=[1, 0, None] * len(rl),
                    mode="lines",
                    name="PINGREQ -> PINGRESP",
                    showlegend=False,
                    line={"color": GREEN, "width": 1.5},
                    hoverinfo="skip",
                    connectgaps=False,
                )
            self.add(
                ROW3,
                x=req_x,
                y=lat_list,
                mode="lines+markers",
                name="PINGRESP latency (ms)",
                showlegend=False,
                line={"color": GREEN, "width": 1},
                marker={"symbol": "diamond", "size": 6, "color": GREEN},
                hovertemplate="PINGRESP after %{y:.3f} ms<br>(PINGREQ at %{x:.3f} s)"
                "<extra></extra>",
            )
        answered = np.zeros(len(kinds), bool)
        answered[req] = True
        answered[resp] = True
        for side, lane_y, color, symbol in (
            (True, 1, SLATE, "circle"),
            (False, 0, PURPLE, "square"),
        ):
            who = "client" if side else "broker"
            others = visible & (client == side) & ~answered
            if side:
                others &= ~pings  # unanswered PINGREQs get their own trace below
            first_of_side = True
            for kind in sorted(set(kinds[others].tolist())):
                idx = np.flatnonzero(others & (kinds == kind))
                self.add(
                    ROW2,
                    x=self.xs(ts_f[idx]),
                    y=[lane_y] * len(idx),
                    mode="markers",
                    name=f"{who} packet (not a ping)",
                    legendgroup=f"{who}-other",
                    showlegend=first_of_side,
                    marker={
                        "symbol": symbol,
                        "size": 8,
                        "color": color,
                        "line": {"width": 0.5, "color": INK},
                    },
                    customdata=_frames(first[idx]),
                    hovertemplate=f"{who} {PacketType(kind).name} #%{{customdata}}"
                    "<br>at %{x:.3f} s<extra></extra>",
                )
                first_of_side = False
        lost = np.array(pending, dtype=np.int64)
        lost = lost[visible[lost]] if len(lost) else lost
        if len(lost):
            frames = _frames(first[lost])
            self.add(
                ROW2,
                x=self.xs(ts_f[lost]),
                y=[1] * len(lost),
                mode="markers",
                name="PINGREQ never answered",
                marker={
                    "symbol": "x",
                    "size": 14,
                    "color": RED,
                    "line": {"width": 1, "color": INK},
                },
                customdata=frames,
                hovertemplate="PINGREQ #%{customdata}: no PINGRESP<br>at %{x:.3f} s<extra></extra>",
            )
            self.lost_y = True
            self.add(
                ROW3,
                x=self.xs(ts_f[lost]),
                y=[LOST_Y] * len(lost),
                mode="markers+text",
                text=["no PINGRESP"] * len(lost),
                showlegend=False,
                textposition="middle right",
                textfont={"color": RED, "size": 11},
                name="PINGREQ never answered",
                marker={"symbol": "x", "size": 12, "color": RED},
                customdata=frames,
                hovertemplate="PINGREQ #%{customdata}: no PINGRESP<extra></extra>",
            )
        if not pings.any():
            self.annotations.append(
                {
                    "xref": "x domain",
                    "x": 0.5,
                    "yref": "y3 domain",
                    "y": 0.5,
                    "showarrow": False,
                    "text": "the client sent no PINGREQ",
                    "font": {"color": GREY, "size": 11},
                }
            )

    # -- findings and the end ------------------------------------------------------------------

    def marks(self, top: float) -> None:
        findings = self.findings
        if len(findings) > MAX_FINDINGS_DRAWN:
            ranked = sorted(findings, key=lambda f: (-int(f.severity), f.ts_ns))
            findings = sorted(ranked[:MAX_FINDINGS_DRAWN], key=lambda f: f.ts_ns)
            self.facts.notes.append(
                f"{len(findings):,} of {len(self.findings):,} findings marked "
                "on the chart (the worst first); all are listed below"
            )
        by_time: dict[int, list[Finding]] = {}
        for f in findings:
            by_time.setdefault(f.ts_ns, []).append(f)
        xs, ys, labels, hovers, colors = [], [], [], [], []
        cx, cy = self.curve
        ok = ~np.isnan(cx) if len(cx) else np.zeros(0, bool)
        for n, (ts, group) in enumerate(sorted(by_time.items())):
            fx = round(float(self.x([ts])[0]), 4)
            lead = max(group, key=lambda f: f.severity)
            if self.k and lead.limit_s and lead.gap_s is not None and lead.gap_s >= lead.limit_s:
                fy = lead.limit_s / self.k
            elif ok.any():
                fy = float(np.interp(fx, cx[ok], cy[ok]))
            else:
                fy = top * 0.5
            xs.append(fx)
            ys.append(round(min(max(fy, 0.0), top * 0.97), 4))
            labels.append(" ".join(dict.fromkeys(f.rule_id for f in group)))
            hovers.append(
                "<br>".join(
                    f"<b>{text(f.rule_id)} {text(f.rule)}</b> ({f.severity.label}), frames "
                    f"{f.frames[0]}-{f.frames[1]}<br>{text(f.message)}"
                    for f in group
                )
            )
            colors.append(SEVERITY_COLORS[lead.severity])
            if n < MAX_FINDING_LINES:
                self.shapes.append(
                    {
                        "type": "line",
                        "xref": "x",
                        "yref": "paper",
                        "x0": fx,
                        "x1": fx,
                        "y0": 0,
                        "y1": 1,
                        "line": {"color": colors[-1], "width": 1, "dash": "dot"},
                    }
                )
        if xs:
            labelled = len(xs) <= MAX_LABELLED_FINDINGS
            self.add(
                ROW1,
                x=xs,
                y=ys,
                mode="markers+text" if labelled else "markers",
                name="finding",
                text=labels,
                textposition="top left",
                textfont={"size": 11, "color": INK},
                marker={
                    "symbol": "triangle-down",
                    "size": 13,
                    "color": colors,
                    "line": {"width": 1, "color": INK},
                },
                customdata=hovers,
                hovertemplate="%{customdata}<br>at %{x:.3f} s<extra></extra>",
            )
        s = self.s
        end_x = round(float(self.x([s.end_ns])[0]), 4)
        who = RED if s.end_reason.by_server else BLUE if s.end_reason.by_client else GREY
        self.shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": end_x,
                "x1": end_x,
                "y0": 0,
                "y1": 1,
                "line": {"color": who, "width": 2},
            }
        )
        self.annotations.append(
            {
                "x": end_x,
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "yanchor": "bottom",
                "xanchor": "right",
                "showarrow": False,
                "text": f"<b>end: {text(end_text(s))}</b>",
                "font": {"color": who, "size": 12},
            }
        )
        self.add(
            ROW2,
            x=[end_x],
            y=[0 if s.end_reason.by_server else 1],
            mode="markers",
            name="session end",
            marker={
                "symbol": "x-thin",
                "size": 16,
                "color": who,
                "line": {"width": 3, "color": who},
            },
            hovertemplate=f"end: {text(end_text(s))} at %{{x:.3f}} s<extra></extra>",
        )

    def spec(self) -> dict[str, Any]:
        peak = self.sawtooth()
        top = max(1.8, peak * 1.18)
        if self.k:
            top = max([top, *(f.gap_s / self.k * 1.1 for f in self.findings if f.gap_s)])
        else:
            top = max(1.0, peak * 1.18)
        self.deadlines(top)
        self.lanes()
        self.marks(top)
        lat = self.facts.ping_latency_ms
        lat_top = max(lat) * 1.3 if lat else 1.0
        lat_range = [0, round(lat_top, 4)]
        if self.lost_y:
            lat_range[0] = -round(lat_top * 0.6, 4)
        layout = {
            "template": "none",
            "height": TIMELINE_HEIGHT,
            "font": FONT,
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "hoverlabel": {"align": "left"},
            "hovermode": "closest",
            "margin": {"l": 78, "r": 20, "t": 58, "b": 46},
            "legend": {
                "orientation": "h",
                "x": 0,
                "y": 1.07,
                "yanchor": "bottom",
                "font": {"size": 11},
            },
            "xaxis": {
                "anchor": "y3",
                "gridcolor": GRID,
                "zeroline": False,
                "title": {"text": "seconds since the session's first frame"},
            },
            "yaxis": {
                "domain": DOMAINS["y"],
                "range": [0, round(top, 3)],
                "gridcolor": GRID,
                "zeroline": False,
                "title": {"text": "silence / K" if self.k else "silence (s)"},
            },
            "yaxis2": {
                "domain": DOMAINS["y2"],
                "tickvals": [0, 1],
                "ticktext": ["broker", "client"],
                "range": [-0.6, 1.6],
                "showgrid": False,
                "zeroline": False,
                "fixedrange": True,
            },
            "yaxis3": {
                "domain": DOMAINS["y3"],
                "range": lat_range,
                "gridcolor": GRID,
                "zeroline": False,
                "nticks": 3,
                "fixedrange": True,
            },
            "shapes": self.shapes,
            "annotations": self.annotations,
        }
        return {"data": self.traces, "layout": layout}


def timeline_spec(
    s: Session, findings: list[Finding], packets: SessionPackets | None
) -> tuple[dict[str, Any], TimelineFacts]:
    """The session's figure as plotly's figure dict, and the facts its card prints."""
    builder = _Timeline(s, findings, packets)
    return builder.spec(), builder.facts


def timeline_figure(
    s: Session, findings: list[Finding], packets: SessionPackets | None
) -> tuple[str, TimelineFacts]:
    """The session's figure as plotly JSON, and the facts its card prints."""
    spec, facts = timeline_spec(s, findings, packets)
    return to_json(spec), facts

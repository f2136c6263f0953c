"""Live monitoring: a source -> one `CaptureAnalysis` -> `tick()` on the wall clock -> outputs.

The engine only knows network time (frame timestamps). Between frames the runner advances it with
the wall clock: network time = newest frame timestamp + the wall time elapsed since that frame
arrived, so a client that goes silent is reported when its deadline passes, not at its next packet.
To stay honest when frames arrive late (a pipe from `tcpdump` without `--immediate-mode` delivers
them in blocks up to 1 s old), the runner measures each frame's delivery lag (arrival on the
monotonic clock minus its capture timestamp) and advances time from the largest lag seen recently
(`LagTracker`): a deadline is declared only once any frame captured before it would have arrived.
Without lag (a local interface), this is exactly "last frame ts + wall time since it arrived".

`tick()` runs at least every `TICK_S` of wall time and after every batch of frames; every finding
it returns is handed to `on_finding` at once. The run ends on `stop()` (SIGINT), the duration or
the end of the source; then `finish()` and the final `Report`, as `analyze` builds it.

A run may last weeks, so nothing here grows with the sessions that ended: the analysis spools
them and their findings to disk as offline (`analyzer.spool`, read back with `since` for what came
since the last look), and forgets what it said early of a session once that session ends.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from analyzer.engine import CaptureAnalysis, Options
from analyzer.errors import InputError
from analyzer.model import CaptureSummary, Finding, Report, Session
from analyzer.ruleset.model import apply_suppressions
from analyzer.sources.stream import CaptureWriter, LiveFrame
from analyzer.spool import since

NS = 1_000_000_000
TICK_S = 0.2
LAG_MARGIN_NS = 20_000_000
"""Network time stays this far behind the newest evidence: frames of one batch arrive a few ms
apart, and the engine takes a frame more than 10 ms older than its clock for a clock step."""
LATE_NS = 5_000_000
"""A frame this much older than network time arrived after the clock passed it."""
LAG_WINDOW_NS = 30 * NS
"""How long a large delivery lag is remembered."""


class Source(Protocol):
    path: str
    kind: str
    frames: int

    def start(self) -> None: ...
    def poll(self, timeout_s: float) -> list[LiveFrame] | None: ...
    def dropped(self) -> int | None: ...
    def stats(self) -> str: ...
    def close(self) -> None: ...


def parse_duration(text: str) -> float:
    """`90`, `30s`, `10m`, `2h`, `1h30m`, `1.5s` -> seconds (InputError when unreadable)."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InputError(f"--duration {text!r}: expected a number of seconds or e.g. 30s, 10m, 2h, 1h30m")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * unit[u] for n, u in parts)


class LagTracker:
    """The delivery lag of frames (monotonic arrival minus capture timestamp). Its maximum over the
    last `LAG_WINDOW_NS` of arrivals decides how far network time may run ahead of the newest
    frame: with it, a frame still in flight cannot contradict a deadline declared passed."""

    def __init__(self) -> None:
        self._window: deque[tuple[int, int]] = deque()  # (arrival, lag), lags decreasing
        self.last_ts_ns = 0

    def batch(self, oldest_ts_ns: int, newest_ts_ns: int, arrival_ns: int) -> None:
        """A batch of frames arrived; its oldest frame had the largest lag."""
        lag = arrival_ns - oldest_ts_ns
        window = self._window
        while window and window[-1][1] <= lag:
            window.pop()
        window.append((arrival_ns, lag))
        while window[0][0] < arrival_ns - LAG_WINDOW_NS:
            window.popleft()
        self.last_ts_ns = max(self.last_ts_ns, newest_ts_ns)

    @property
    def lag_ns(self) -> int | None:
        return self._window[0][1] if self._window else None

    def network_now(self, mono_ns: int) -> int | None:
        """Network time now (None before the first frame): never before the newest frame."""
        if not self._window:
            return None
        return max(self.last_ts_ns, mono_ns - self._window[0][1] - LAG_MARGIN_NS)


@dataclass
class LiveResult:
    analysis: CaptureAnalysis
    report: Report
    ended_by: str
    """"interrupt", "duration" or "end of input"."""
    reported: int = 0
    """Findings reported as they became certain (`on_finding`), each once."""
    kernel_drops: int | None = None


class _Reader:
    """What `CaptureAnalysis.summary` reads from a capture reader."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.format = fmt
        self.linktypes: set[int] = set()
        self.bytes_read = 0
        self.warnings: list[str] = []
        self.error: str | None = None


class LiveRunner:
    """Runs one source through one `CaptureAnalysis` until stopped."""

    def __init__(
        self,
        source: Source,
        options: Options,
        *,
        on_finding: Callable[[Finding], None] = lambda f: None,
        on_session: Callable[[Session], None] = lambda s: None,
        on_tick: Callable[[CaptureAnalysis, int], None] | None = None,
        writer: CaptureWriter | None = None,
        duration_s: float | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.source = source
        self.options = options
        self.analysis = CaptureAnalysis(source.path, options)
        """Its sessions and findings are spools: a run of weeks keeps them on disk, not in memory."""
        self.on_finding = on_finding
        self.on_session = on_session
        self.on_tick = on_tick
        self.writer = writer
        self.duration_s = duration_s
        self.clock = monotonic_ns
        self.lag = LagTracker()
        self.reader = _Reader(source.path, "live" if source.kind == "interface" else "stream")
        self.reported = 0
        self._stop: str | None = None
        self._sessions_seen = 0
        self.late_frames = 0
        self.late_max_ns = 0
        self._today = options.today or dt.date.today()

    def stop(self, why: str = "interrupt") -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stop = self._stop or why

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> LiveResult:
        clock = self.clock
        started = clock()
        deadline = None if self.duration_s is None else started + int(self.duration_s * NS)
        analysis = self.analysis
        frame = analysis.frame
        lag = self.lag
        linktypes = self.reader.linktypes
        writer = self.writer
        frame_no = 0
        size = 0
        next_tick = started + int(TICK_S * NS)
        ended_by = "end of input"
        try:
            while True:
                if self._stop is not None:
                    ended_by = self._stop
                    break
                now = clock()
                if deadline is not None and now >= deadline:
                    ended_by = "duration"
                    break
                wait = (next_tick - now) / NS
                if deadline is not None:
                    wait = min(wait, (deadline - now) / NS)
                frames = self.source.poll(max(0.0, min(wait, TICK_S)))
                if frames is None:
                    break
                if frames:
                    arrival = clock()
                    oldest = newest = frames[0][0]
                    for ts_ns, linktype, data, wire_len in frames:
                        frame_no += 1
                        size += len(data)
                        if linktype not in linktypes:
                            linktypes.add(linktype)
                        if ts_ns < oldest:
                            oldest = ts_ns
                        elif ts_ns > newest:
                            newest = ts_ns
                        if ts_ns < analysis.now_ns - LATE_NS and ts_ns >= lag.last_ts_ns - LATE_NS:
                            # captured before the clock we ticked to, delivered late: not a clock
                            # step of the capture, so take network time back to the frames' own
                            self._late(analysis.now_ns - ts_ns)
                            analysis.rewind(max(lag.last_ts_ns, ts_ns))
                        frame(frame_no, ts_ns, linktype, data)
                        if writer is not None:
                            writer.write(ts_ns, linktype, data, wire_len)
                    self.reader.bytes_read = size
                    lag.batch(oldest, newest, arrival)
                now = clock()
                if frames or now >= next_tick:
                    self._tick(now)
                    next_tick = now + int(TICK_S * NS)
        finally:
            self.source.close()
        return self._finish(ended_by)

    def _late(self, behind_ns: int) -> None:
        self.late_frames += 1
        self.late_max_ns = max(self.late_max_ns, behind_ns)

    def _tick(self, mono_ns: int) -> None:
        net = self.lag.network_now(mono_ns)
        fresh = self.analysis.tick(net if net is not None else 0)
        if fresh:
            kept, _suppressed, _warnings = apply_suppressions(
                fresh, self.options.ruleset.suppressions, self._today)
            self._report(kept)
        self._new_sessions()
        if self.writer is not None:
            self.writer.flush()
        if self.on_tick is not None:
            self.on_tick(self.analysis, net or 0)

    def _report(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.reported += 1
            self.on_finding(f)

    def _new_sessions(self) -> None:
        """The sessions ended since the last call (in the order they ended: before `finish`)."""
        sessions = self.analysis.sessions
        for session in since(sessions, self._sessions_seen):
            self.on_session(session)
        self._sessions_seen = len(sessions)

    def _finish(self, ended_by: str) -> LiveResult:
        analysis = self.analysis
        suppressions = self.options.ruleset.suppressions
        # what the frames produced since the last tick; then what ending every open session
        # produced (intervals and sessions ended by the end of the capture), each finding once
        self._report(apply_suppressions(analysis.tick(analysis.now_ns), suppressions, self._today)[0])
        analysis.end_sessions()
        self._report(apply_suppressions(analysis.tick(analysis.now_ns), suppressions, self._today)[0])
        self._new_sessions()
        analysis.finish()  # (the records in stream order)
        final_kept, suppressed, warnings = apply_suppressions(analysis.findings, suppressions,
                                                              self._today)
        drops = self.source.dropped()
        if self.writer is not None:
            self.writer.close()
            if self.writer.error:
                self.reader.warnings.append(self.writer.error)
            if self.writer.skipped:
                self.reader.warnings.append(
                    f"{self.writer.skipped} frames of a second link type left out of {self.writer.path} "
                    "(a pcap holds one link type; name it .pcapng to keep them)")
        source_reader = getattr(self.source, "reader", None)
        if source_reader is not None:  # a pipe: the file reader knows its format and problems
            self.reader.format = source_reader.format
            for warning in source_reader.warnings:
                if warning.startswith("capture cut short"):  # a live stream that breaks off
                    self.reader.error = self.reader.error or "the stream broke off: " + warning
                else:
                    self.reader.warnings.append(warning)
            self.reader.error = source_reader.error or self.reader.error
            self.reader.bytes_read = source_reader.bytes_read
        if self.late_frames:
            self.reader.warnings.append(
                f"{self.late_frames} frames arrived up to {self.late_max_ns / NS:.3f} s after the live "
                "clock had passed their timestamps (a buffering source: use tcpdump --immediate-mode "
                "-U); findings reported early for their sessions may be premature")
        if drops:
            self.reader.warnings.append(f"the kernel dropped {drops} frames: verdicts on the "
                                        "affected sessions may be wrong (capture gaps)")
        summary: CaptureSummary = analysis.summary(self.reader)  # type: ignore[arg-type]
        report = Report((summary,), analysis.sessions, final_kept, self.options.ruleset.info,
                        suppressed, tuple(warnings))
        return LiveResult(analysis, report, ended_by, self.reported, drops)

"""The HTML report in a real browser: Debian's chromium, headless, offline.

The report of three shipped captures (a silent client, a late pinger, a compliant pinger) is opened
from a file; the page must raise no console error, plotly must draw (``main-svg`` in the DOM), the
sessions list must be filled by the page's script (and honour a filter in the URL), and the
screenshot must show the three verdict colours of the overview. The screenshot is kept as
``tests/artifacts/html-report.png`` so a person can look at it.

chromium is installed with apt-get when it is missing and the tests run as root; otherwise (or if
it cannot be installed, e.g. offline) the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from analyzer.engine import Options, analyze
from analyzer.report.html import detail_sessions, render_html
from analyzer.report.packets import collect_timelines

pytest.importorskip("plotly")

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "captures"
ARTIFACT = ROOT / "tests" / "artifacts" / "html-report.png"
THREE = [
    str(CAPTURES / n) for n in ("silent-client.pcap", "late-pinger.pcap", "compliant-pinger.pcap")
]
WINDOW = (1400, 2600)
RED, AMBER, GREEN = (0xDC, 0x26, 0x26), (0xD9, 0x77, 0x06), (0x16, 0xA3, 0x4A)
"""The zone colours of the overview's client bars (charts.RED, AMBER, GREEN)."""
CONSOLE = re.compile(r"CONSOLE|Uncaught")


def _install_chromium() -> str | None:
    found = shutil.which("chromium")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (
        ["apt-get", "install", "-y", "-qq", "chromium"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium"],
    ):
        try:
            subprocess.run(attempt, env=env, capture_output=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if shutil.which("chromium"):
            break
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _install_chromium()
    if path is None:
        pytest.skip("chromium is not installed and cannot be (needs root and Debian's package)")
    return path


def run_chromium(
    chromium: str, tmp: Path, url: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    args = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *extra,
        url,
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def png_pixels(path: Path) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Width, height and a count of RGB colours of an 8-bit RGB/RGBA non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: Counter[tuple[int, int, int]] = Counter()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        if y % 2 == 0:  # every other row is plenty to count colours
            colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp]))
        prev = line
    return width, height, colours


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    options = Options()
    report = analyze(THREE, options)
    chosen, _ = detail_sessions(report, "all")
    timelines = collect_timelines(THREE, options, {s.session_id for s in chosen})
    path = tmp_path_factory.mktemp("html") / "report.html"
    with path.open("w", encoding="utf-8") as out:
        render_html(report, out, timelines=timelines, detail="all")
    return path


def test_console_errors_are_detected(chromium: str, tmp_path: Path) -> None:
    """The check below can fail: a page that throws shows up in chromium's log."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>null.f();</script></body></html>")
    result = run_chromium(chromium, tmp_path, broken.as_uri(), "--dump-dom")
    assert console_errors(result.stderr), result.stderr[-2000:]


def test_report_opens_draws_and_shows_the_verdicts(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    shot = tmp_path / "report.png"
    result = run_chromium(chromium, tmp_path, page.as_uri(), f"--screenshot={shot}")
    assert not console_errors(result.stderr), console_errors(result.stderr)
    assert shot.exists() and shot.stat().st_size > 50_000
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    width, height, colours = png_pixels(shot)
    assert (width, height) == WINDOW
    assert len(colours) > 50, "a blank or flat screenshot"
    # the client bars: red for the silent client, amber for the late one, green for the
    # compliant one (the shortest bar, 0.6 x K, is some 60 x 30 pixels; every other row counted)
    for name, colour in (("red", RED), ("amber", AMBER), ("green", GREEN)):
        assert colours[colour] > 300, f"too little {name} on the screenshot"

    dom = run_chromium(chromium, tmp_path, page.as_uri(), "--dump-dom")
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    html = dom.stdout
    assert html.count('class="main-svg"') >= 4, "plotly drew nothing"
    body = html[html.index('id="sessions-table"') :]
    body = body[: body.index("</table>")]
    assert body.count("<tr>") == 1 + 3, "the sessions list was not filled"
    for client in ("ka-silent-client", "ka-late-pinger", "ka-compliant-pinger"):
        assert client in body
    assert "3 of 3 sessions match" in html


def test_a_filter_in_the_url_hides_the_other_sessions(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    dom = run_chromium(chromium, tmp_path, page.as_uri() + "?q=late-pinger", "--dump-dom")
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    html = dom.stdout
    assert "1 of 3 sessions match" in html
    cards = re.findall(r'<section class="card (\w+)( hidden)?" id="s-\d"', html)
    assert cards == [("error", " hidden"), ("warning", ""), ("ok", " hidden")], cards
    dom = run_chromium(chromium, tmp_path, page.as_uri() + "?sev=ok", "--dump-dom")
    assert "1 of 3 sessions match" in dom.stdout and "ka-compliant-pinger" in dom.stdout

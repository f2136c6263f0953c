"""The page around the charts: escaping, embedded JSON, the stylesheet and the small filter script.

Everything from the network (client ids, capture names, messages) goes through ``esc`` (HTML text
and attributes) or ``script_json`` (JSON inside ``<script>``: ``<``, ``>`` and ``&`` become
``\\u003c`` and friends, so a ``</script>`` in a client id cannot end the script element). Control
characters are shown as ``\\x..`` like on the terminal (``console.printable``).
"""

from __future__ import annotations

import html
import json
from typing import Any

from analyzer.report.console import printable

_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def esc(value: object, max_chars: int | None = None) -> str:
    """Any value as HTML text or attribute content; None is an empty string."""
    if value is None:
        return ""
    return html.escape(printable(str(value), max_chars), quote=True)


def script_json(value: Any) -> str:
    """JSON text that is safe inside a ``<script type="application/json">`` element.

    Accepts a ready JSON string (plotly's) or any JSON-able value. The replaced characters can
    only occur inside JSON strings, where the ``\\uXXXX`` forms mean the same thing.
    """
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), allow_nan=False)
    )
    for raw, safe in _JSON_ESCAPES.items():
        text = text.replace(raw, safe)
    return text


def data_script(element_id: str, value: Any) -> str:
    return f'<script type="application/json" id="{esc(element_id)}">{script_json(value)}</script>'


def plot_div(element_id: str, eager: bool = False, height: int = 430) -> str:
    """Where plotly.js draws figure ``element_id``; the height is reserved before it draws."""
    eager_attr = ' data-eager="1"' if eager else ""
    return (
        f'<div class="plot" style="height:{int(height)}px" data-fig="{esc(element_id)}"'
        f"{eager_attr}></div>"
    )


def table(headers: list[str], rows: list[str], css: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


CSS = """
:root { --red:#dc2626; --amber:#d97706; --green:#16a34a; --teal:#0d9488; --blue:#2563eb;
  --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
header.top { background:#111827; color:#f9fafb; padding:18px 28px; }
header.top h1 { margin:0 0 4px; font-size:22px; }
header.top .sub { color:#cbd5e1; font-size:13px; }
main { padding:18px 28px 40px; max-width:1600px; margin:0 auto; }
h2 { font-size:18px; margin:20px 0 8px; }
.tiles { display:flex; gap:12px; flex-wrap:wrap; margin:6px 0 8px; }
.tile { background:#fff; border:1px solid var(--line); border-radius:8px; padding:6px 14px;
  min-width:130px; }
.tile b { display:block; font-size:24px; line-height:1.1; }
.tile span { color:var(--muted); font-size:12px; }
.tile.error b { color:var(--red); } .tile.warning b { color:var(--amber); }
.tile.info b { color:var(--teal); } .tile.ok b { color:var(--green); }
.panel { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px;
  margin:10px 0; }
.panel h3 { margin:2px 0 6px; font-size:15px; }
.grid2 { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:12px; }
.grid21 { display:grid; grid-template-columns:minmax(0,3fr) minmax(0,2fr); gap:12px;
  align-items:start; }
.grid21 > .panel { margin:10px 0; }
@media (max-width:1000px) { .grid2, .grid21 { grid-template-columns:1fr; } }
header.top nav { margin-top:6px; font-size:13px; }
header.top nav a { color:#93c5fd; margin-right:14px; text-decoration:none; }
.help { color:var(--muted); font-size:12.5px; margin:4px 0; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { background:#f3f4f6; font-weight:600; position:sticky; top:0; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
code { font-size:12px; background:#f3f4f6; padding:1px 4px; border-radius:3px;
  word-break:break-all; }
.badge { display:inline-block; border-radius:10px; padding:0 8px; font-size:11.5px; font-weight:600;
  color:#fff; background:var(--muted); white-space:nowrap; }
.badge.error { background:var(--red); } .badge.warning { background:var(--amber); }
.badge.info { background:var(--teal); } .badge.ok { background:var(--green); }
.chip { display:inline-block; border:1px solid var(--line); border-radius:4px; padding:0 5px;
  margin:1px 2px 1px 0; font-size:11.5px; background:#f9fafb; white-space:nowrap; }
.z-green { color:var(--green); font-weight:600; } .z-amber { color:var(--amber); font-weight:600; }
.z-red { color:var(--red); font-weight:700; } .z-none { color:var(--muted); }
.filters { display:flex; gap:10px; flex-wrap:wrap; align-items:center; background:#fff;
  border:1px solid var(--line); border-radius:8px; padding:8px 12px; position:sticky; top:0;
  z-index:5; }
.filters input[type=search] { min-width:280px; padding:5px 8px; }
.filters select { padding:4px 6px; }
#shown { color:var(--muted); }
.scroll { max-height:520px; overflow:auto; border:1px solid var(--line); border-radius:6px;
  background:#fff; }
.scroll.short { max-height:300px; border:0; }
td.cid { word-break:break-all; }
.rulename { white-space:nowrap; }
#more { margin:8px 0; padding:4px 12px; }
.card { background:#fff; border:1px solid var(--line); border-left:6px solid var(--green);
  border-radius:8px; padding:10px 14px; margin:14px 0; }
.card.error { border-left-color:var(--red); } .card.warning { border-left-color:var(--amber); }
.card.info { border-left-color:var(--teal); }
.card h3 { display:inline; font-size:16px; margin:0 6px 0 4px; word-break:break-all; }
.card .sid { color:var(--muted); font-size:12.5px; }
.card .verdict { font-size:15px; margin:4px 0 2px; }
.card .facts { color:#374151; font-size:12.5px; margin:4px 0; }
.card .notes { color:#92400e; font-size:12.5px; margin:2px 0; }
.plot { width:100%; }
details summary { cursor:pointer; color:var(--blue); margin:4px 0; }
.hidden { display:none !important; }
footer { color:var(--muted); font-size:12px; margin-top:30px; }
"""

JS = """
(function () {
  'use strict';
  var config = {displaylogo: false, responsive: true, displayModeBar: 'hover',
                modeBarButtonsToRemove: ['lasso2d', 'select2d']};
  function draw(el) {
    if (el.getAttribute('data-drawn') || typeof Plotly === 'undefined') { return; }
    el.setAttribute('data-drawn', '1');
    var spec = JSON.parse(document.getElementById(el.getAttribute('data-fig')).textContent);
    Plotly.newPlot(el, spec.data, spec.layout, config);
  }
  var plots = Array.prototype.slice.call(document.querySelectorAll('.plot[data-fig]'));
  plots.forEach(function (el) { if (el.getAttribute('data-eager')) { draw(el); } });
  if ('IntersectionObserver' in window) {
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { io.unobserve(e.target); draw(e.target); }
      });
    }, {rootMargin: '900px 0px'});
    plots.forEach(function (el) { if (!el.getAttribute('data-drawn')) { io.observe(el); } });
  } else {
    plots.forEach(draw);
  }

  // The sessions list: rows come from JSON and are set as text (never parsed as HTML).
  var PAGE = 500;
  var dataEl = document.getElementById('sessions-data');
  var data = dataEl ? JSON.parse(dataEl.textContent) : {captures: [], ends: {}, rows: []};
  var sessions = data.rows;
  sessions.forEach(function (r) {
    r.search = [r[1], r[2], r[3], data.captures[r[4]], r[5]].filter(function (x) {
      return x; }).join(' ').toLowerCase();
    r.rules = r[13].map(function (c) { return c[0]; }).join(' ');
  });
  var tbody = document.querySelector('#sessions-table tbody');
  var more = document.getElementById('more');
  var q = document.getElementById('q'), rule = document.getElementById('rule'),
      sev = document.getElementById('sev'), shown = document.getElementById('shown');
  var cards = Array.prototype.slice.call(document.querySelectorAll('section.card'));
  var limit = PAGE, matched = [];
  function cell(tr, text, cls) {
    var td = document.createElement('td');
    if (cls) { td.className = cls; }
    if (text !== null && text !== undefined) { td.textContent = String(text); }
    tr.appendChild(td);
    return td;
  }
  function span(parent, cls, text) {
    var el = document.createElement('span');
    el.className = cls; el.textContent = text; parent.appendChild(el);
    return el;
  }
  function zone(ratio) {
    if (ratio === null) { return 'num z-none'; }
    return 'num ' + (ratio <= 1.0 ? 'z-green' : ratio <= 1.5 ? 'z-amber' : 'z-red');
  }
  function row(r) {
    var tr = document.createElement('tr');
    span(cell(tr, null), 'badge ' + r[0], r[0]);
    if (r[1] === null) { cell(tr, '(no CONNECT seen)', 'z-none'); }
    else if (r[1] === '') {
      cell(tr, r[2] ? '"" (assigned ' + r[2] + ')' : '"" (empty)', 'z-none');
    }
    else { cell(tr, r[1], 'cid'); }
    cell(tr, r[3]); cell(tr, r[6]); cell(tr, r[7]);
    cell(tr, r[8] === null ? '-' : r[8].toFixed(2), zone(r[8]));
    cell(tr, r[9] + ' / ' + r[10], 'num');
    cell(tr, (data.ends[r[11]] || r[11]) + ', frame ' + r[12]);
    var chips = cell(tr, null);
    r[13].forEach(function (c) { span(chips, 'chip', c[1] > 1 ? c[0] + ' \u00d7' + c[1] : c[0]); });
    var link = cell(tr, null);
    if (r[14] >= 0) {
      var a = document.createElement('a');
      a.href = '#s-' + r[14]; a.textContent = 'chart'; link.appendChild(a);
    }
    return tr;
  }
  function has(list, word) { return (' ' + list + ' ').indexOf(' ' + word + ' ') >= 0; }
  function filters() {
    return {text: q ? q.value.trim().toLowerCase() : '', rule: rule ? rule.value : '',
            sev: sev ? sev.value : ''};
  }
  function ok(f, search, rules, sevs) {
    return (!f.text || search.indexOf(f.text) >= 0) && (!f.rule || has(rules, f.rule)) &&
           (!f.sev || has(sevs, f.sev));
  }
  function render() {
    if (!tbody) { return; }
    var frag = document.createDocumentFragment();
    matched.slice(0, limit).forEach(function (r) { frag.appendChild(row(r)); });
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    tbody.appendChild(frag);
    var listed = Math.min(limit, matched.length);
    shown.textContent = matched.length + ' of ' + sessions.length + ' sessions match' +
      (listed < matched.length ? ' (the first ' + listed + ' listed)' : '');
    if (more) { more.classList.toggle('hidden', listed >= matched.length); }
  }
  function apply() {
    var f = filters();
    matched = sessions.filter(function (r) { return ok(f, r.search, r.rules, r[15]); });
    limit = PAGE;
    render();
    cards.forEach(function (el) {
      el.classList.toggle('hidden', !ok(f, el.getAttribute('data-search'),
                                        el.getAttribute('data-rules'),
                                        el.getAttribute('data-sevs')));
    });
  }
  // a link can carry a filter: report.html?q=<client id>&rule=KA101&sev=warning
  if (window.URLSearchParams && window.location.search) {
    var params = new URLSearchParams(window.location.search);
    if (q && params.get('q')) { q.value = params.get('q'); }
    if (rule && params.get('rule')) { rule.value = params.get('rule'); }
    if (sev && params.get('sev')) { sev.value = params.get('sev'); }
  }
  [q, rule, sev].forEach(function (el) {
    if (el) { el.addEventListener('input', apply); el.addEventListener('change', apply); }
  });
  if (more) { more.addEventListener('click', function () { limit += PAGE; render(); }); }
  apply();
})();
"""

"""The HTML shell of the reports: inline CSS and JavaScript, so one file opens offline from a file:// URL.

The script sorts and filters the per-slide table, opens a slide's images on a row click, and reads the same
actions from the URL hash (`#sort=p_macro:desc&flag=wrong&q=node&slide=ID`, or `click=KEY` to click a header), so a
link can reopen a view.
Script errors are recorded on <body data-errors> and shown in a banner, so a test can read them from the DOM.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

CSS = """
:root{--fg:#1d232a;--mut:#5b6670;--bd:#d5dbe1;--bg:#f6f8fa;--acc:#1f5fa8;--bad:#b3261e;--warn:#9a6700}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;background:#fff}
header{background:#18324f;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#c9d6e3}
main{padding:8px 24px 40px;max-width:1900px}
h2{font-size:17px;border-bottom:1px solid var(--bd);padding-bottom:4px;margin-top:28px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--bd);border-radius:6px;padding:8px 12px;min-width:150px;background:var(--bg)}
.card b{display:block;font-size:20px}.card span{color:var(--mut);font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:14px}
svg.chart{border:1px solid var(--bd);border-radius:6px;background:#fff}
svg .ct{font-size:12px;font-weight:600;text-anchor:middle}svg .xt{font-size:10px;text-anchor:middle;fill:#444}
svg .yt{font-size:10px;text-anchor:end;fill:#444}svg .xl{font-size:11px;text-anchor:middle;fill:#333}
svg .lg{font-size:10px;fill:#333}svg .frame{fill:none;stroke:#999}svg .grid{stroke:#eee}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid var(--bd);padding:3px 8px;text-align:right;white-space:nowrap}
#slides{font-size:13px}#slides th,#slides td{padding:2px 5px}#slides td.fl{white-space:normal;min-width:90px}
ul.notes{font-size:12px;max-width:1100px;padding-left:18px}
th{background:var(--bg);text-align:center}td.t{text-align:left}
table.cm td{min-width:56px;text-align:center}
#slides th{cursor:pointer;user-select:none;position:sticky;top:0}
#slides th[aria-sort=ascending]::after{content:" \\25B2"}#slides th[aria-sort=descending]::after{content:" \\25BC"}
#slides tbody tr{cursor:pointer}#slides tbody tr:hover{background:#eef4fb}
#slides tbody tr.sel{background:#dbe9f8}
tr.wrong td.pred{color:var(--bad);font-weight:600}
.flag{display:inline-block;border-radius:3px;padding:0 4px;margin-right:3px;font-size:11px;background:#eee}
.flag.wrong{background:#fbe3e1;color:var(--bad)}.flag.low_confidence{background:#fff4d6;color:var(--warn)}
.flag.no_tiles{background:#e8e8e8}
.tools{display:flex;gap:10px;align-items:center;margin:8px 0}
.tools input,.tools select{padding:4px 6px;border:1px solid var(--bd);border-radius:4px}
.split{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.tablebox{max-height:640px;overflow:auto;border:1px solid var(--bd);flex:0 1 auto;max-width:100%}
#detail{flex:1 1 440px;max-width:min(1340px,100%);box-sizing:border-box;border:1px solid var(--bd);
border-radius:6px;padding:10px;
min-height:200px;display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:4px 18px;
align-items:start}
#detail>.head{grid-column:1/-1;min-width:0;overflow-wrap:anywhere}#detail figure{margin:0;max-width:640px}
#detail img{width:100%;display:block;margin:4px 0 10px;border:1px solid var(--bd)}
#detail h3{margin:0 0 6px;font-size:15px}.legend{height:10px;border-radius:2px;
background:linear-gradient(90deg,#30123b,#4686fb,#1be5b5,#a4fc3c,#fbb938,#e4460a,#7a0403)}
.scale{display:flex;justify-content:space-between;font-size:11px;color:var(--mut)}
.muted{color:var(--mut)}.note{color:var(--warn)}
#errors{display:none;background:#fbe3e1;color:var(--bad);padding:8px 24px}
"""

SCRIPT = r"""
(function () {
  var errors = [];
  function record(message) {
    errors.push(String(message));
    document.body.setAttribute('data-errors', errors.join(' | '));
    var box = document.getElementById('errors');
    box.style.display = 'block';
    box.textContent = 'Script error: ' + errors.join(' | ');
  }
  window.addEventListener('error', function (e) { record(e.message || e); });
  window.addEventListener('unhandledrejection', function (e) { record(e.reason); });
  function ready() { document.body.setAttribute('data-ready', '1'); }
  var table = document.getElementById('slides');
  if (!table) { ready(); return; }
  var body = table.tBodies[0], heads = table.tHead.rows[0].cells, state = {key: null, dir: 1};
  var q = document.getElementById('q'), flag = document.getElementById('flag');
  var count = document.getElementById('count'), detail = document.getElementById('detail');
  function rows() { return Array.prototype.slice.call(body.rows); }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c];
    });
  }
  function value(row, i, numeric) {
    var cell = row.cells[i], v = cell.getAttribute('data-v');
    if (v === null) v = cell.textContent;
    if (!numeric) return v.toLowerCase();
    var f = parseFloat(v);
    return isNaN(f) ? -Infinity : f;
  }
  function sortBy(key, dir) {
    var index = -1;
    for (var i = 0; i < heads.length; i++) {
      heads[i].removeAttribute('aria-sort');
      if (heads[i].getAttribute('data-key') === key) index = i;
    }
    if (index < 0) return;
    var numeric = heads[index].getAttribute('data-type') === 'num';
    rows().sort(function (a, b) {
      var x = value(a, index, numeric), y = value(b, index, numeric);
      return x < y ? -dir : x > y ? dir : 0;
    }).forEach(function (r) { body.appendChild(r); });
    heads[index].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
    state.key = key;
    state.dir = dir;
  }
  function applyFilter() {
    var text = q.value.trim().toLowerCase(), wanted = flag.value, shown = 0;
    rows().forEach(function (r) {
      var ok = (!text || r.getAttribute('data-text').indexOf(text) >= 0) &&
        (!wanted || (' ' + (r.getAttribute('data-flags') || '') + ' ').indexOf(' ' + wanted + ' ') >= 0);
      r.style.display = ok ? '' : 'none';
      if (ok) shown++;
    });
    count.textContent = shown + ' of ' + body.rows.length + ' slides';
  }
  function image(src, alt) {
    return src ? '<img loading="lazy" src="' + esc(src) + '" alt="' + esc(alt) + '">' : '';
  }
  function open(row) {
    if (!row) return;
    rows().forEach(function (r) { r.classList.remove('sel'); });
    row.classList.add('sel');
    var d = row.dataset, html = '<div class="head"><h3>' + esc(d.slide) + '</h3><div class="muted">' +
      esc(d.summary) + '</div>';
    if (d.note) html += '<p class="note">' + esc(d.note) + '</p>';
    if (!d.heat && !d.thumb) html += '<p class="muted">No images: write the report with --job JOB.</p>';
    html += '</div>';
    if (d.heat) {
      html += '<figure><b>Attention</b><div class="legend"></div><div class="scale"><span>lowest</span>' +
        '<span>percentile within slide</span><span>highest</span></div>' + image(d.heat, 'attention of ' + d.slide);
      if (d.tiles) html += '<b>Top attended tiles</b>' + image(d.tiles, 'top tiles of ' + d.slide);
      html += '</figure>';
    }
    if (d.thumb) {
      html += '<figure><b>Thumbnail</b> <span class="muted">(tissue contour green, tiles blue)</span>' +
        image(d.thumb, 'thumbnail of ' + d.slide) + '</figure>';
    }
    detail.innerHTML = html;
    detail.setAttribute('data-slide', d.slide);
  }
  function find(id) {
    return rows().filter(function (r) { return r.dataset.slide === id; })[0] || null;
  }
  function fromHash() {
    var params = {};
    decodeURIComponent(location.hash.replace(/^#/, '')).split('&').forEach(function (pair) {
      var i = pair.indexOf('=');
      if (i > 0) params[pair.slice(0, i)] = pair.slice(i + 1);
    });
    if (params.sort) {
      var parts = params.sort.split(':');
      sortBy(parts[0], parts[1] === 'desc' ? -1 : 1);
    }
    if (params.click) {
      params.click.split(',').forEach(function (key) {
        var th = table.tHead.querySelector('th[data-key="' + key + '"]');
        if (th) th.click();
      });
    }
    if (params.q !== undefined) q.value = params.q;
    if (params.flag !== undefined) flag.value = params.flag;
    applyFilter();
    if (params.slide) open(find(params.slide));
  }
  Array.prototype.forEach.call(heads, function (th) {
    th.addEventListener('click', function () {
      var key = th.getAttribute('data-key');
      sortBy(key, state.key === key ? -state.dir : (th.getAttribute('data-type') === 'num' ? -1 : 1));
    });
  });
  body.addEventListener('click', function (e) { open(e.target.closest('tr')); });
  q.addEventListener('input', applyFilter);
  flag.addEventListener('change', applyFilter);
  window.addEventListener('hashchange', fromHash);
  fromHash();
  if (!detail.getAttribute('data-slide')) {
    open(rows().filter(function (r) { return r.style.display !== 'none'; })[0]);
  }
  ready();
})();
"""


def page(title: str, subtitle: str, sections: list[str], data: dict[str, Any] | None = None) -> str:
    """A whole HTML document; `data` (if any) is embedded as JSON for readers of the file, not fetched."""
    embedded = ""
    if data is not None:
        text = json.dumps(data, sort_keys=True).replace("</", "<\\/")
        embedded = f'<script type="application/json" id="report-data">{text}</script>'
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><div id='errors'></div><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<main>{''.join(sections)}</main>{embedded}<script>{SCRIPT}</script></body></html>\n"
    )


def section(title: str, body: str, anchor: str = "") -> str:
    ident = f" id='{escape(anchor)}'" if anchor else ""
    return f"<section{ident}><h2>{escape(title)}</h2>{body}</section>"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain HTML table; cells are already-escaped HTML, the first column left-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=t' if i == 0 else ''}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

"""The HTML page of `tetra processtree --html FILE`: one file, inline CSS and script, nothing fetched.

The tree travels as JSON in a `<script type="application/json">` element and the script builds the
nested lists from it: a large cache stays one compact document, and the page can filter (the box,
or `#filter=TEXT` in the address), fold and show only the branches with policy events.
"""

from __future__ import annotations

import html

import orjson

from tetragon import __version__
from tetragon.cli.tetra_processtree import ProcessNode

__all__ = ["render_html"]

_STYLE = """
body { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; margin: 1em 1.5em;
  color: #1d2330; background: #fbfbfd; }
h1 { font-size: 16px; margin: 0 0 .3em; }
#bar { position: sticky; top: 0; background: #fbfbfd; padding: .4em 0; border-bottom: 1px solid #dde; }
#bar input[type=search] { width: 26em; font: inherit; padding: 2px 6px; }
#bar button, #bar label { margin-left: .8em; font: inherit; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 1.4em; border-left: 1px dotted #aab; }
ul.tree { padding-left: 0; border-left: 0; }
li.proc > details > summary, li.proc > div.row { cursor: default; white-space: nowrap; }
li.proc > details > summary { cursor: pointer; }
li.proc > div.row { padding-left: 1.05em; }
.cmd { font-weight: 600; }
.args { color: #4a5468; }
.pid { color: #2a6bb0; margin-left: .6em; }
.exec-id { color: #7a8190; margin-left: .6em; font-size: 11px; }
.badge { display: none; margin-left: .6em; padding: 0 .45em; border-radius: 3px; font-size: 11px; }
li.policy-event > details > summary, li.policy-event > div.row { background: #ffe3e0; }
li.policy-event > details > summary .badge.policy, li.policy-event > div.row .badge.policy
  { display: inline; background: #c62828; color: #fff; }
li.exited > details > summary .cmd, li.exited > div.row .cmd
  { color: #8a8f99; text-decoration: line-through; }
li.exited > details > summary .badge.exited, li.exited > div.row .badge.exited
  { display: inline; background: #ccd; color: #333; }
li.hidden { display: none; }
"""

_SCRIPT = """
(function () {
  "use strict";
  // rows come parents first, each naming its parent's index (-1: a root)
  var rows = JSON.parse(document.getElementById("tree-data").textContent);
  var top = document.getElementById("tree");
  var items = [], lists = [], kids = rows.map(function () { return 0; }), flagged = 0;
  rows.forEach(function (n) { if (n.parent >= 0) kids[n.parent] += 1; });
  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }
  rows.forEach(function (node, i) {
    if (node.policy_event) flagged += 1;
    var li = document.createElement("li");
    li.className = "proc" + (node.policy_event ? " policy-event" : "") + (node.exited ? " exited" : "");
    li.dataset.pid = String(node.pid);
    li.dataset.execId = node.exec_id;
    var row = document.createElement(kids[i] ? "summary" : "div");
    if (!kids[i]) row.className = "row";
    row.appendChild(span("cmd", node.binary));
    if (node.arguments) row.appendChild(span("args", " " + node.arguments));
    row.appendChild(span("pid", "pid " + node.pid));
    row.appendChild(span("exec-id", node.exec_id));
    row.appendChild(span("badge policy", "policy event"));
    row.appendChild(span("badge exited", "exited"));
    row.title = "started " + node.start_time + ", refcnt " + node.refcnt;
    if (kids[i]) {
      var details = document.createElement("details");
      details.open = true;
      details.appendChild(row);
      lists[i] = details.appendChild(document.createElement("ul"));
      li.appendChild(details);
    } else {
      li.appendChild(row);
    }
    items.push(li);
    (node.parent < 0 ? top : lists[node.parent]).appendChild(li);
  });
  var texts = rows.map(function (n) {
    return [n.binary, n.arguments, n.pid, n.exec_id].join(" ").toLowerCase();
  });
  document.getElementById("summary").textContent =
    rows.length + " processes, " + flagged + " with policy events";
  var box = document.getElementById("filter"), only = document.getElementById("only-policy");
  // a process stays visible when it, or one of its descendants, matches: children are visited
  // before their parent by walking the rows backwards
  function refresh() {
    var text = box.value.trim().toLowerCase(), keep = rows.map(function () { return false; });
    var shown = 0;
    for (var i = rows.length - 1; i >= 0; i--) {
      var self = (!text || texts[i].indexOf(text) >= 0) && (!only.checked || rows[i].policy_event);
      keep[i] = keep[i] || self;
      if (keep[i] && rows[i].parent >= 0) keep[rows[i].parent] = true;
      items[i].classList.toggle("hidden", !keep[i]);
      if (keep[i]) shown += 1;
    }
    document.getElementById("shown").textContent = shown === rows.length ? "" : "· " + shown + " shown";
  }
  function fold(open) {
    top.querySelectorAll("details").forEach(function (d) { d.open = open; });
  }
  box.addEventListener("input", refresh);
  only.addEventListener("change", refresh);
  document.getElementById("expand").addEventListener("click", function () { fold(true); });
  document.getElementById("collapse").addEventListener("click", function () { fold(false); });
  var m = /(?:^#|&)filter=([^&]*)/.exec(location.hash);
  if (m) box.value = decodeURIComponent(m[1]);
  if (/(?:^#|&)policy-events\\b/.test(location.hash)) only.checked = true;
  refresh();
})();
"""


def _rows(roots: list[ProcessNode]) -> list[dict[str, object]]:
    """The forest flattened, parents first, each row naming its parent's index (-1 for a root):
    nested JSON would stop at the serializer's depth limit on a deep chain."""
    rows: list[dict[str, object]] = []
    stack = [(root, -1) for root in reversed(roots)]
    while stack:
        node, parent = stack.pop()
        stack.extend((child, len(rows)) for child in reversed(node.children))
        rows.append(
            {
                "exec_id": node.exec_id,
                "pid": node.pid,
                "binary": node.binary,
                "arguments": node.arguments,
                "start_time": node.start_time,
                "refcnt": node.refcnt,
                "exited": node.exited,
                "policy_event": node.policy_event,
                "parent": parent,
            }
        )
    return rows


def render_html(roots: list[ProcessNode], source: str) -> str:
    # `<` escaped so no string in the data can close the script element
    data = orjson.dumps(_rows(roots)).decode().replace("<", "\\u003c")
    title = f"Process tree of {source}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div id="bar">
<input type="search" id="filter" placeholder="filter: binary, arguments, pid, exec id">
<label><input type="checkbox" id="only-policy"> only policy events</label>
<button type="button" id="expand">expand all</button><button type="button" id="collapse">collapse all</button>
<span id="summary"></span> <span id="shown"></span>
</div>
<noscript>This page builds the tree with its inline script; the data is in the tree-data element.</noscript>
<ul class="tree" id="tree"></ul>
<p class="foot">tetra {html.escape(__version__)} processtree: the agent's process cache (GetDebug).</p>
<script type="application/json" id="tree-data">{data}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""

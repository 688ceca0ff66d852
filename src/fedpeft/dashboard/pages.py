"""The dashboard's HTML: Jinja2 templates with autoescaping, kept in code so the wheel needs
no package data, and one small script that refreshes the live part of a page.

Each page is complete as served (a browser without script still sees the state at load
time); the script re-fetches the page's `live` fragment every few seconds and swaps it in.
"""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

from fedpeft.dashboard.charts import line_chart

REFRESH_SECONDS = 3

LIVE_SCRIPT = """\
(function () {
  const live = document.getElementById("live");
  if (!live) { return; }
  const source = live.dataset.source;
  async function refresh() {
    try {
      const response = await fetch(source, {credentials: "same-origin", cache: "no-store"});
      if (response.ok) { live.innerHTML = await response.text(); }
      document.body.dataset.refreshed = String(Date.now());
    } catch (error) { /* the server restarts or the network blinks: try again next time */ }
  }
  setInterval(refresh, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_SECONDS * 1000))

STYLE = """\
body { font-family: system-ui, sans-serif; margin: 1.2rem 2rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
.status-running { color: #0b7285; font-weight: 600; } .status-completed { color: #2b8a3e; }
.status-failed { color: #c92a2a; font-weight: 600; } .status-unreadable { color: #e67700; }
.charts { display: flex; flex-wrap: wrap; gap: .8rem; }
svg.chart { background: #fff; border: 1px solid #e3e3e3; }
svg .title { font-size: 12px; font-weight: 600; } svg .tick, svg .legend { font-size: 10px; fill: #555; }
svg .frame { fill: none; stroke: #bbb; } svg .grid { stroke: #eee; }
svg .target { stroke: #c92a2a; stroke-dasharray: 5 4; }
.problem { color: #e67700; } .refusal { color: #c92a2a; } .muted { color: #777; }
"""

_BASE = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{% block title %}fedpeft dashboard{% endblock %}</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><p class="muted"><a href="/">all runs</a> · fedpeft dashboard of {{ runs_dir }}</p>
{% block body %}{% endblock %}
<script src="/static/live.js"></script></body></html>
"""

_INDEX = """\
{% extends "base.html" %}
{% block body %}<h1>Runs</h1>
<div id="live" data-source="/live/runs">{% include "runs_table.html" %}</div>
{% endblock %}
"""

_RUNS_TABLE = """\
{% if runs %}<table id="runs"><tr><th>run</th><th>kind</th><th>status</th><th>rounds</th>
<th>test accuracy</th><th>test macro_f1</th><th>test loss</th><th>epsilon</th><th>started (UTC)</th><th>note</th></tr>
{% for run in runs %}<tr data-run="{{ run.id }}">
<td><a href="/runs/{{ run.id | urlencode }}">{{ run.id }}</a></td><td>{{ run.kind or "" }}</td>
<td class="status-{{ run.status }}">{{ run.status }}</td>
<td>{{ run.rounds_done }}{% if run.rounds_planned %}/{{ run.rounds_planned }}{% endif %}</td>
{% for m in ("accuracy", "macro_f1", "loss") %}<td>{{ "%.4f" | format(run.final[m]) if m in run.final else "" }}</td>{% endfor %}
<td>{% if run.epsilon is not none %}{{ "%.3f" | format(run.epsilon) }}{% if run.target_epsilon %} / {{ run.target_epsilon }}{% endif %}{% endif %}</td>
<td>{{ (run.started or "")[:16] | replace("T", " ") }}</td>
<td class="problem">{{ run.note }}</td></tr>
{% endfor %}</table>{% else %}<p>No run folders in {{ runs_dir }} yet.</p>{% endif %}
"""

_RUN = """\
{% extends "base.html" %}
{% block title %}{{ run.id }} · fedpeft{% endblock %}
{% block body %}<h1>Run {{ run.id }}</h1>
<div id="live" data-source="/live/runs/{{ run.id | urlencode }}">{% include "run_live.html" %}</div>
{% endblock %}
"""

_RUN_LIVE = """\
<p><span class="status-{{ run.status }}">{{ run.status }}</span> · {{ run.kind or "kind not recorded" }} ·
round {{ run.rounds_done }}{% if run.rounds_planned %} of {{ run.rounds_planned }}{% endif %}
{% if run.updated_seconds_ago is not none %} · last record {{ run.updated_seconds_ago | round | int }} s ago{% endif %}</p>
{% if run.error %}<p class="refusal">{{ run.error }}</p>{% endif %}
{% for problem in run.problems %}<p class="problem">{{ problem }}</p>{% endfor %}
<h2>Curves</h2><div class="charts">
{% for name in run.charts %}<div data-chart="{{ name }}">{{ svgs[name] | safe }}</div>{% endfor %}
{% if not run.charts %}<p class="muted">No round recorded yet.</p>{% endif %}</div>
<h2>Protections in force</h2><table>
{% for name, value in run.protections %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<h2>Rounds: who took part, refusals and failures</h2>
<table id="rounds"><tr><th>round</th><th>update accepted from</th><th>evaluated by</th><th>refused or failed</th></tr>
{% for r in run.rounds | reverse %}<tr><td>{{ r.round }}</td><td>{{ r.contributed | join(", ") }}</td>
<td>{{ r.evaluated | join(", ") }}</td><td class="refusal">{% for f in r.failures %}{{ f.institution }} ({{ f.phase }}): {{ f.reason }}<br>{% endfor %}</td></tr>
{% endfor %}</table>
<h2>Files</h2>{% if run.files %}<ul>
{% for f in run.files %}<li><a href="/runs/{{ run.id | urlencode }}/files/{{ f }}">{{ f }}</a></li>{% endfor %}</ul>
{% else %}<p class="muted">No files to link yet.</p>{% endif %}
{% if "report.html" not in run.files and run.status == "completed" %}<p class="muted">No report yet:
<code>fedpeft report {{ run.folder }}</code> writes one.</p>{% endif %}
"""

ENVIRONMENT = Environment(
    loader=DictLoader({"base.html": _BASE, "index.html": _INDEX, "runs_table.html": _RUNS_TABLE,
                       "run.html": _RUN, "run_live.html": _RUN_LIVE}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def chart_svgs(charts: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The SVG markup of each chart of a run (escaped inside `line_chart`)."""
    return {name: line_chart(chart["title"], chart["series"], chart.get("target"),
                             chart.get("from_zero", False)) for name, chart in charts.items()}

"""The report as one standalone HTML file: inline CSS, plots embedded as base64 PNG.

Every piece of text is HTML-escaped, quotes included, and the page's Content-Security-Policy
allows no script and no outside resource at all: even a name that slipped through escaping
could not run or fetch anything. The file opens offline, e.g. from an e-mail attachment.
"""

from __future__ import annotations

import base64
from html import escape

from fedpeft.report.document import (
    Block,
    Bullets,
    Command,
    Document,
    Fields,
    Figure,
    Heading,
    Line,
    Paragraph,
    Table,
    printable,
)

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
.subtitle { color: #59636e; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
table.fields th { white-space: nowrap; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: .88em; background: #f6f8fa; border-radius: 4px; }
code { padding: 1px 4px; word-break: break-all; }
pre { padding: 10px 14px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.good { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 700; }
.warn { color: #9a6700; font-weight: 600; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #59636e; font-size: .9em; }
@media print { main { max-width: none; } h2 { break-after: avoid; } }
"""


def render_html(document: Document) -> str:
    body = [f"<h1>{_esc(document.title)}</h1>",
            f'<p class="subtitle">{_line(document.subtitle)}</p>']
    for section in document.sections:
        body.append(f"<section>\n<h2>{_esc(section.title)}</h2>")
        body += [_block(block) for block in section.blocks]
        body.append("</section>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(document.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body><main>",
        *body,
        "</main></body>",
        "</html>",
        "",
    ])


def _block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h3>{_esc(block.text)}</h3>"
    if isinstance(block, Paragraph):
        return f"<p>{_line(block.content)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_line(item)}</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, Fields):
        rows = "".join(f"<tr><th>{_esc(name)}</th><td>{_line(value)}</td></tr>"
                       for name, value in block.items)
        return f'<table class="fields">{rows}</table>'
    if isinstance(block, Table):
        head = "".join(f"<th>{_esc(h)}</th>" for h in block.headers)
        rows = "".join("<tr>" + "".join(f"<td>{_line(cell)}</td>" for cell in row) + "</tr>"
                       for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Command):
        return f"<pre><code>{_esc(block.text)}</code></pre>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.data).decode("ascii")
        return (f'<figure><img alt="{_esc(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_esc(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def _line(content: Line) -> str:
    parts = []
    for span in content:
        text = _esc(span.text)
        if span.style == "code":
            parts.append(f"<code>{text}</code>")
        elif span.style == "bold":
            parts.append(f"<strong>{text}</strong>")
        elif span.style in ("good", "bad", "warn"):
            parts.append(f'<strong class="{span.style}">{text}</strong>')
        else:
            parts.append(text)
    return "".join(parts)


def _esc(text: str) -> str:
    return escape(printable(text), quote=True)

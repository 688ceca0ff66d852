"""The report as Markdown (GitHub-flavoured tables), readable as plain text too.

Every piece of text is escaped: Markdown punctuation gets a backslash and `<`, `>`, `&` become
entities, because Markdown passes raw HTML through and a run folder's names are untrusted.
"""

from __future__ import annotations

import html

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

PLOTS_DIR = "report"
"""The folder, next to `report.md`, that the Markdown's images point into."""

_SPECIAL = set("\\`*_[]|~")


def render_markdown(document: Document) -> str:
    out = [f"# {_escape(document.title)}", "", _line(document.subtitle), ""]
    for section in document.sections:
        out += [f"## {_escape(section.title)}", ""]
        for block in section.blocks:
            out += [*_block(block), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _block(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return [f"### {_escape(block.text)}"]
    if isinstance(block, Paragraph):
        return [_line(block.content)]
    if isinstance(block, Bullets):
        return [f"- {_line(item)}" for item in block.items]
    if isinstance(block, Fields):
        return _table(("item", "value"), [((_escape(name)), _line(value))
                                          for name, value in block.items])
    if isinstance(block, Table):
        return _table(block.headers, [[_line(cell) for cell in row] for row in block.rows])
    if isinstance(block, Command):
        return ["```sh", printable(block.text), "```"]
    if isinstance(block, Figure):
        return [f"![{_escape(block.caption)}]({PLOTS_DIR}/{block.filename})"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def _table(headers: tuple[str, ...], rows: list) -> list[str]:
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |",
             "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _line(content: Line) -> str:
    parts = []
    for span in content:
        if span.style == "code" and _codeable(span.text):
            parts.append(f"`{span.text}`")
        elif span.style in ("bold", "good", "bad", "warn"):
            parts.append(f"**{_escape(span.text)}**")
        else:
            parts.append(_escape(span.text))
    return "".join(parts)


def _codeable(text: str) -> bool:
    """Text that can go in a code span as it is (hashes, paths, commands): nothing that
    would end the span or a table cell, or that a renderer could read as markup."""
    return bool(text) and text.isprintable() and not any(c in text for c in "`|<>&\\")


def _escape(text: str) -> str:
    text = html.escape(printable(text), quote=False)
    return "".join(f"\\{char}" if char in _SPECIAL else char for char in text)

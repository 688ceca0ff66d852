"""A report as plain data: sections of paragraphs, tables and figures.

The wording is decided once (`content.py`) and rendered twice (`markdown.py`, `html.py`). All
text here is plain text, never markup: each renderer escapes every character it emits, so a
name taken from a run folder (an institution, a ledger owner, a failure reason) cannot inject
Markdown or HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Style = Literal["", "bold", "code", "good", "bad", "warn"]


@dataclass(frozen=True)
class Span:
    """A run of text in one style: `code` for hashes, keys and commands; `good`/`bad`/`warn`
    for verdicts (bold, and coloured in HTML)."""

    text: str
    style: Style = ""


Line = tuple[Span, ...]


def line(*parts: str | Span) -> Line:
    """A line of text: plain strings and styled spans."""
    return tuple(part if isinstance(part, Span) else Span(part) for part in parts if part != "")


def code(text: str) -> Span:
    return Span(text, "code")


def bold(text: str) -> Span:
    return Span(text, "bold")


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    content: Line


@dataclass(frozen=True)
class Bullets:
    items: tuple[Line, ...]


@dataclass(frozen=True)
class Fields:
    """Name/value pairs, shown as a two-column table."""

    items: tuple[tuple[str, Line], ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Line, ...], ...]


@dataclass(frozen=True)
class Command:
    """A command to copy into a shell, shown as a code block."""

    text: str


@dataclass(frozen=True)
class Figure:
    """A PNG written to the report's plot folder as `filename`, embedded in HTML."""

    filename: str
    data: bytes
    caption: str


Block = Heading | Paragraph | Bullets | Fields | Table | Command | Figure


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: Line
    sections: tuple[Section, ...]


def printable(text: str) -> str:
    """`text` on one line, control characters replaced: a forged name must not be able to
    break a table row, a heading or a terminal."""
    return "".join(
        " " if char in "\n\r\t" else (char if char.isprintable() else "?") for char in text
    )

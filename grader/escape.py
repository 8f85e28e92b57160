"""Learner-derived text, made safe for each place an instructor reads it.

A learner chooses their file names, their code and their exception messages,
so any of them may carry terminal escape sequences, spreadsheet formulas,
Markdown that closes a code block, or HTML. Every sink has one function here,
and every writer calls the one for its sink: the terminal summary, CSV cells,
Markdown review pages and HTML pages.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata

# C0 and C1 controls (tab and newline are handled per sink), DEL, and the
# bidirectional overrides that can make text read differently than it is.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """Text for a terminal: every control character shown as `\\x1b`, never obeyed."""
    return _CONTROLS.sub(_visible, str(text))


def one_line(text: str) -> str:
    """A name or id on one line: NFC-normalised, controls shown, newlines as spaces."""
    text = unicodedata.normalize("NFC", str(text)).replace("\r\n", " ").replace("\n", " ")
    return terminal(text.replace("\t", " "))


def csv_cell(text: str) -> str:
    """A text cell a spreadsheet will not evaluate (OWASP: CSV injection)."""
    text = str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def html(text: str) -> str:
    """Text inside an HTML element or attribute value."""
    return _html.escape(terminal(str(text)), quote=True)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def markdown_text(text: str) -> str:
    """Inline Markdown (a heading, a table cell): no markup, links, HTML or line breaks."""
    escaped = _MD_SPECIAL.sub(r"\\\1", _html.escape(terminal(str(text)), quote=False))
    return escaped.replace("\n", "<br>")


def markdown_code(code: str, language: str = "python") -> str:
    """A fenced block that nothing inside it can close: the fence outgrows every run
    of backticks or tildes in the code."""
    code = terminal(str(code).replace("\r\n", "\n").replace("\t", "    "))
    longest = max((len(run) for run in re.findall(r"`+|~+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"

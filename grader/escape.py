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


# What has a meaning inside a line: code spans, emphasis, links and images, tables,
# strikethrough, backslash escapes. `_` only where it can open or close emphasis,
# so `03_loss_scaling.ipynb` stays readable in the raw file.
_MD_INLINE = re.compile(r"[\\`*\[\]()|~!]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# What starts a block when it begins a line: a heading, quote, list or rule.
_MD_BLOCK = re.compile(r"^(\s*)(?:([#>+\-=])|(\d+)([.)]))")


def markdown_text(text: str) -> str:
    """Inline Markdown (a heading, a table cell, a list item): no markup, links, HTML
    or line breaks; safe at the start of a line too."""
    escaped = _MD_INLINE.sub(lambda m: "\\" + m.group(), _html.escape(terminal(str(text)), quote=False))
    escaped = _MD_BLOCK.sub(lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2)
                                                    else m.group(3) + "\\" + m.group(4)), escaped)
    return escaped.replace("\n", "<br>")


def markdown_code(code: str, language: str = "python") -> str:
    """A fenced block that nothing inside it can close: the fence outgrows every run
    of backticks or tildes in the code."""
    code = terminal(str(code).replace("\r\n", "\n").replace("\t", "    "))
    longest = max((len(run) for run in re.findall(r"`+|~+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"

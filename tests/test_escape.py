"""Learner-chosen text cannot steer a terminal, a spreadsheet, a Markdown page or an HTML page."""

from grader import escape


def test_terminal_escape_sequences_are_shown_not_obeyed():
    shown = escape.terminal("ok\x1b[2J\x1b]52;c;QUFB\x07\x9b31m")
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert shown.startswith("ok\\x1b[2J")


def test_bidi_overrides_are_shown():
    assert escape.terminal("a\u202eb") == "a\\u202eb"


def test_csv_cells_that_start_a_formula_are_quoted():
    for text in ("=HYPERLINK(\"x\")", "+1", "-1+cmd|' -c calc'!A0", "@SUM(A1)", "\tx"):
        assert escape.csv_cell(text).startswith("'")
    assert escape.csv_cell("alice") == "alice"


def test_markdown_text_carries_no_markup_html_or_line_break():
    text = escape.markdown_text("x | <img src=a onerror=b> [pass](http://e)\n# Review: fake")
    assert "<img" not in text and "\n" not in text and "](" not in text and "\\|" in text


def test_a_fence_inside_code_cannot_close_its_block():
    block = escape.markdown_code("x = 1\n```\n| passed | 10/10 |\n~~~~\n<!--")
    fence = block.splitlines()[0].removesuffix("python")
    assert len(fence) > 4 and block.endswith("\n" + fence)
    assert all(line != fence for line in block.splitlines()[1:-1])


def test_ids_are_one_normalised_line():
    assert escape.one_line("jose\u0301") == escape.one_line("jos\u00e9")
    assert "\n" not in escape.one_line("carol\n# Review: mallory")

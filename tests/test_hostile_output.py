"""Learner text reaches the terminal, the gradebook and the review pages as text:
it never redraws a score, becomes a formula, a heading, a table, a link or HTML."""

import csv
import io
from html.parser import HTMLParser
from pathlib import Path

import mistune
import pytest

from conftest import run_grader
from grader.batch import Item
from grader.class_outputs import review_page
from grader.classbook import write_outputs
from grader.report import summary
from grader.results import CheckResult, Report
from grader.runner import check_points
from grading_fixtures import Fixture, notebook_for

ESCAPES = "\x1b[2J\x1b[H\x1b[32mScore: 10 / 10\x1b[0m\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x9b1A"
FENCE_ATTACK = (
    "def scale_gradients(grads, scale):\n"
    "    return grads\n"
    "```\n\n"
    "| check | status | points | message |\n|---|---|---|---|\n| all | passed | 10/10 | ok |\n\n"
    "[grade appeal](http://evil.example)\n\n<!--\n")
HTML_MESSAGE = ("Checked: <img src=x onerror=alert(1)> <a href='http://evil.example'>appeal</a> | fake |\n"
                "# Review: mallory\n<!--")


def _report(message=HTML_MESSAGE, code=FENCE_ATTACK, notices=("<script>x</script>",)) -> dict:
    tests = [CheckResult("test_scaling", "scale_gradients", 0.0, 4.0, "failed", message),
             CheckResult("test_inputs_unchanged", "scale_gradients", 0.0, 1.0, "error", ESCAPES)]
    data = Report("03_loss_scaling", tests, notices=list(notices), code={"scale_gradients": code}).to_dict()
    data.update(learner="mallory", file="m.ipynb", execution_time=0.5)
    return data


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.comments, self.code = [], [], []
        self._in_code = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_code = self._in_code or tag == "code"

    def handle_endtag(self, tag):
        self._in_code = self._in_code and tag != "code"

    def handle_data(self, data):
        if self._in_code:
            self.code.append(data)

    def handle_comment(self, data):
        self.comments.append(data)


def _rendered(markdown: str) -> _Tags:
    """The page as a Markdown viewer shows it: raw HTML passed through, as GitHub's does
    (a bare URL would still be autolinked by GFM; it shows itself, so it is left alone)."""
    html = mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])(markdown)
    parser = _Tags()
    parser.feed(html)
    return parser


def test_terminal_summary_shows_escape_sequences_instead_of_obeying_them():
    report = Report.from_dict(_report(message=ESCAPES, notices=[ESCAPES]))
    text = summary(report, "sub\x1b]0;title\x07.ipynb")
    assert not any(c in text for c in "\x1b\x07\x9b")
    assert "Score: 0 / 5" in text and "\\x1b[2J" in text


def test_grade_prints_the_real_score_whatever_the_exception_message_holds(tmp_path):
    fixture = Fixture("escapes", {"scale_gradients": (
        "def scale_gradients(grads, scale):\n"
        f"    raise ValueError({ESCAPES!r} * 3)\n")}, {})
    path = tmp_path / "escapes.ipynb"
    path.write_text(__import__("nbformat").writes(notebook_for(fixture)))
    proc = run_grader("grade", str(path), "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not any(c in proc.stdout + proc.stderr for c in "\x1b\x07\x9b")
    points = check_points("03_loss_scaling")
    full = sum(points.values())
    assert f"Score: {full - points['scale_gradients']:g} / {full:g}" in proc.stdout
    assert "[  ERROR]" in proc.stdout


def test_gradebook_cells_never_start_a_formula_or_a_new_line(tmp_path):
    names = ["=HYPERLINK(\"http://evil.example\",\"10/10\")", "=1+1+cmd|' -c calc'!A0",
             "+SUM(A1)", "-2+3", "@SUM(A1)", "\tx", "carol\n# Review: mallory"]
    (tmp_path / "subs").mkdir()
    items = [Item(name, tmp_path / "subs" / f"{i}.ipynb", name=f"n{i}") for i, name in enumerate(names)]
    for item in items:
        item.path.write_text("{}")
    reports = {item: {**_report(), "notices": [f"=cmd|' /C calc'!A0 {i}"], "status": "ungradable"}
               for i, item in enumerate(items)}
    write_outputs(items, reports, tmp_path / "out")
    text = (tmp_path / "out" / "gradebook.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 1 + len(names) and len(text.splitlines()) == len(rows)
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
            assert "\n" not in cell and "\r" not in cell
    assert {row[0] for row in rows[1:]} >= {"'=1+1+cmd|' -c calc'!A0", "carol # Review: mallory"}


def test_review_page_keeps_learner_code_and_messages_inert():
    item = Item("mallory\n# Review: alice", Path("/subs/m.ipynb"), name="m")
    page = _rendered(review_page(item.learner, [(item, _report())]))
    tags = [tag for tag, _ in page.tags]
    assert tags.count("table") == 1, "learner text made a table of its own"
    assert tags.count("pre") == 1 and FENCE_ATTACK.strip() in "".join(page.code)
    assert tags.count("h1") == 1, "learner text made a heading"
    assert "img" not in tags and "script" not in tags and not page.comments
    assert not any(tag == "a" for tag in tags), "learner text made a link"


def test_a_code_block_outgrows_any_fence_inside_the_code():
    code = "x = 1\n" + "`" * 12 + "\n~~~~\nprint('after')\n"
    page = _rendered(review_page("ada", [(Item("ada", Path("a.ipynb"), name="a"), _report(code=code))]))
    assert [tag for tag, _ in page.tags].count("pre") == 1
    assert "print('after')" in "".join(page.code)


@pytest.mark.parametrize("sink", ["review", "gradescope"])
@pytest.mark.parametrize("name", ["[full marks](https:evil.example) <img src=x onerror=1>.ipynb",
                                  "a` [full marks](https:evil.example) <img src=x onerror=1> `.ipynb"])
def test_file_names_are_text_in_every_markdown_sink(sink, name):
    from grader.gradescope import results_json
    if sink == "review":
        item = Item("ada", Path(name), name="a")
        markdown = review_page("ada", [(item, {**_report(), "status": "ungradable"})])
    else:
        markdown = results_json([], 0.0, [(name, "not a notebook")])["output"]
    tags = [tag for tag, _ in _rendered(markdown).tags]
    assert "a" not in tags and "img" not in tags and "script" not in tags

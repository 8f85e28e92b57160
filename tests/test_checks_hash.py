"""The hidden checks' hash covers a lesson's helper modules, so editing one marks results stale."""

import hashlib

from grader.receipt import checks_sha256
from grader.runner import checks_file


def test_a_lesson_without_helpers_hashes_its_checks_file_alone():
    path = checks_file("04_dynamic_loss_scaling")
    assert not list(path.parent.glob("lesson04_*.py"))
    assert checks_sha256.__wrapped__("04_dynamic_loss_scaling") == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_lesson_with_helper_modules_hashes_them_too():
    lesson = "08_a_real_model_end_to_end"
    path = checks_file(lesson)
    helpers = sorted(path.parent.glob("lesson08_*.py"))
    assert len(helpers) >= 2
    expected = hashlib.sha256(path.read_bytes())
    for helper in helpers:
        expected.update(b"\0" + helper.name.encode() + b"\0" + helper.read_bytes())
    assert checks_sha256.__wrapped__(lesson) == expected.hexdigest()
    assert expected.hexdigest() != hashlib.sha256(path.read_bytes()).hexdigest()

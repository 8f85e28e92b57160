"""Spread the suite over pytest-xdist workers (`make test` runs with `-n auto`).

nbval runs a notebook's cells in order, in one kernel, so every cell of a
notebook must reach the same worker; and a test module's module-scoped fixture
(a graded class, say) should be built once, not once per worker. So items are
scheduled in groups: one notebook, or one test module, per group. The modules
in SPREAD, and the lesson claim tests, hold slow, independent items and are
dealt out one item at a time instead.
"""

import pytest

SPREAD = ("tests/test_portability.py", "tests/test_learner_notebooks_run.py",
          "tests/test_grading_fixtures.py")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: absent when it is not loaded
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class NotebookOrModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in SPREAD or path.endswith("_claims.py") else path

    return NotebookOrModuleScheduling(config, log)

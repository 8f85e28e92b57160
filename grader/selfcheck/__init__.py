"""Public self-checks, shipped to learners: they run in the notebook's own kernel."""

from grader.selfcheck.core import SelfCheck

__all__ = ["SelfCheck"]

"""Public helpers that lessons run: code a learner may read, import and reuse.

Everything here ships in the learner bundle (the `release` command), so it must
hold nothing of the hidden checks or the solutions. Each module serves one
lesson's demonstrations (for example, starting worker processes for a
distributed run) and says which lesson in its docstring.
"""

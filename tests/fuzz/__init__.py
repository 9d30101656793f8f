"""The fuzz suite: every input family of the app, with counters (see conftest.py)."""

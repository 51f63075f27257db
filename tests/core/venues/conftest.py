"""Lets these tests import the margin strategies of ``tests/core/test_margin.py`` by name.

tests/core's own modules do (``from test_margin import scenarios``) because
pytest puts their directory on ``sys.path``; run on their own, these tests
need it put there too.
"""

import sys
from pathlib import Path

_CORE_TESTS = str(Path(__file__).resolve().parents[1])
if _CORE_TESTS not in sys.path:
    sys.path.insert(0, _CORE_TESTS)

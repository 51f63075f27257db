"""The key layout: trigger sets in the order the scripts read them, lease keys unchanged."""

from __future__ import annotations

import re

import pytest

from monitor.core.triggers import TriggerSet
from monitor.state.keys import PUBLISHERS, Keys
from monitor.state.transport import script_source

pytestmark = pytest.mark.unit


def _keys_line(script: str) -> list[str]:
    """The names a script's ``-- KEYS:`` comment lists, in order."""
    found = re.search(r"^-- KEYS: (.*)$", script_source(script), re.MULTILINE)
    assert found is not None
    return [name.strip() for name in found.group(1).split(",")]


def test_commit_takes_the_trigger_sets_in_trigger_set_order() -> None:
    """commit.lua's KEYS[2..5] are the sets :meth:`Keys.all_triggers` gives, in its order."""
    keys = Keys("liqmon")
    assert [
        "liqmon:{BTCUSDT}:trig:long:down",
        "liqmon:{BTCUSDT}:trig:long:up",
        "liqmon:{BTCUSDT}:trig:short:down",
        "liqmon:{BTCUSDT}:trig:short:up",
    ] == keys.all_triggers("BTCUSDT")
    assert [s.name_part for s in TriggerSet] == _keys_line("commit.lua")[1:5]


def test_lease_and_heartbeat_keys_keep_their_names() -> None:
    """The monitors' and the publishers' lease keys are those earlier versions wrote."""
    keys = Keys("liqmon")
    assert "liqmon:{BTCUSDT}:lease" == keys.lease("BTCUSDT")
    assert "liqmon:monitors" == keys.heartbeats()
    assert "liqmon:publishers:{BTCUSDT}:lease" == keys.lease("BTCUSDT", PUBLISHERS)
    assert "liqmon:publishers:monitors" == keys.heartbeats(PUBLISHERS)

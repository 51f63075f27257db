"""The configuration as the rest of liqmon imports it: the settings types and the loaders.

The model lives in :mod:`monitor.config.model` (one type per table), the
environment overrides in :mod:`monitor.config.environment`, reading files
and includes in :mod:`monitor.config.loading`, and the one translation of a
validation error into ``FILE: KEY: PROBLEM`` in :mod:`monitor.config.problems`.
"""

from __future__ import annotations

from monitor.config.loading import DEFAULT_PATH, EXAMPLE_PATH, load_settings, parse_settings
from monitor.config.model import (
    DEAD_LETTER_OVERHEAD_BYTES,
    PUBLISHERS,
    HttpSettings,
    Limits,
    MqttSettings,
    RedisSettings,
    Settings,
)

__all__ = [
    "DEAD_LETTER_OVERHEAD_BYTES",
    "DEFAULT_PATH",
    "EXAMPLE_PATH",
    "PUBLISHERS",
    "HttpSettings",
    "Limits",
    "MqttSettings",
    "RedisSettings",
    "Settings",
    "load_settings",
    "parse_settings",
]

"""Loading: a TOML file, its includes and the environment overrides, validated once at start.

A file may start with ``include = "OTHER.toml"`` to be read as OTHER.toml
with its own keys laid on top (see :func:`_resolve_include`), so a variant
such as ``config/liqmon.docker.toml`` says only how it differs. The
``LIQMON_*`` variables (:mod:`monitor.config.environment`) are laid on top
of that, and the result is validated by :class:`~monitor.config.model.ConfigFile`.

Every problem is reported as ``FILE: KEY: PROBLEM`` through
:class:`monitor.core.errors.ConfigError`; the daemon refuses to start rather than
run with a table it would misread. Decimals may be written as TOML strings
(recommended: ``"0.004"``) or numbers; numbers are read from their text, never
through a binary float.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from monitor.config.environment import Environment
from monitor.config.model import ConfigFile, Settings
from monitor.config.problems import config_error
from monitor.core.errors import ConfigError

DEFAULT_PATH = Path("config/liqmon.toml")
"""Where the commands look when ``--config`` is not given (relative to the working directory)."""

EXAMPLE_PATH = Path(__file__).with_name("liqmon.toml")
"""The complete example configuration, installed with the package (the repository's
``config/liqmon.toml``, which it links to): public tier tables for five symbols."""


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``path``, then apply ``LIQMON_*`` environment overrides.

    ``environ`` None reads the process environment; a mapping is read instead of it.
    """
    document = _read(path, "file not found (pass --config FILE)")
    return parse_settings(_resolve_include(document, path, ()), str(path), environ)


def parse_settings(
    document: Mapping[str, Any], source: str, environ: Mapping[str, str] | None
) -> Settings:
    """Validate a decoded TOML document named ``source`` (see :func:`load_settings`)."""
    overrides = Environment.read(environ).overrides()
    try:
        model = ConfigFile.model_validate(_overridden(document, overrides))
    except ValidationError as error:
        raise config_error(error, source) from None
    return model.settings(source)


def _overridden(document: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with the environment's keys laid on its tables (a table that is not
    one is left as it is, for the model to report)."""
    tables = {
        name: keys for name, keys in overrides.items() if isinstance(document.get(name, {}), dict)
    }
    return _merged(document, tables)


def _read(path: Path, missing: str) -> dict[str, Any]:
    """One TOML file, decoded; ``missing`` is the problem reported when it does not exist."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle, parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def _resolve_include(
    document: dict[str, Any], path: Path, including: tuple[Path, ...]
) -> dict[str, Any]:
    """``document`` laid over the file its ``include`` key names (relative to ``path``).

    An included file may include another; a file that includes itself, even
    through others, is refused. The including file wins key by key, tables are
    merged down to their leaves, and an array (brackets, ``[[sources]]``)
    replaces the included one whole.
    """
    if "include" not in document:
        return document
    name = document.pop("include")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: include: must be a file name, got {name!r}")
    chain = (*including, path.resolve())
    target = path.parent / name
    if target.resolve() in chain:
        files = " -> ".join(str(link) for link in (*chain, target.resolve()))
        raise ConfigError(f"{path}: include: {name!r} closes a cycle ({files})")
    included = _read(target, f"file not found (included by {path})")
    return _merged(_resolve_include(included, target, chain), document)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys laid on top, tables merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged

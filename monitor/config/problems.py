"""How a configuration problem is raised inside the model and reported outside it.

Inside the pydantic models every check raises :func:`problem`, whose text is
the exact sentence an operator reads. Outside, :func:`config_error` is the
one place a :class:`pydantic.ValidationError` becomes a
:class:`~monitor.core.errors.ConfigError` of one line, ``FILE: KEY: PROBLEM``
(``VARIABLE: PROBLEM`` for an environment override): the key is the error's
location in the document (``symbols.BTCUSDT.brackets[0].mmr``) and the problem
is the check's sentence, or a fixed one for the few errors pydantic raises
itself (an unknown key, a missing one, a scalar where a table belongs).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from monitor.core.errors import ConfigError

KIND = "liqmon_config"
"""The pydantic error type of every problem liqmon's own checks raise."""

_BUILTIN = {
    "extra_forbidden": "unknown key",
    "unexpected_keyword_argument": "unknown key",
    "missing": "is required",
    "missing_keyword_argument": "is required",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dataclass_type": "must be a table",
    "dict_type": "must be a table",
}
"""The sentences for the errors pydantic raises before liqmon's checks run."""


def problem(text: str, at: str = "") -> PydanticCustomError:
    """A validation error reading exactly ``text``.

    ``at`` names the key below the one being validated when a check of a whole
    table blames one of its keys (``"dead_letter_max_bytes"`` from the limits
    table, ``"BTCUSDT"`` from the symbols); ``"[2]"`` names an array element.
    """
    # The text goes in as a context value, so braces in it are never read as a template.
    return PydanticCustomError(KIND, "{text}", {"text": text, "at": at})


def config_error(error: ValidationError, source: str | None) -> ConfigError:
    """The first of ``error``'s problems as one ``SOURCE: KEY: PROBLEM`` line.

    ``source`` is the file name, or None for the environment (whose locations
    are the variables' names). The first problem is the one of the earliest
    key in the order the model declares them.
    """
    first = error.errors(include_url=False)[0]
    key = key_of(first["loc"], _at(first))
    text = _BUILTIN.get(first["type"], first["msg"])
    line = f"{key}: {text}" if key else text
    return ConfigError(f"{source}: {line}" if source is not None else line)


def key_of(loc: Sequence[int | str], at: str = "") -> str:
    """A dotted key with array indexes in brackets: ``sources[0].symbols.XRPUSDT``."""
    key = ""
    for part in (*loc, *([at] if at else [])):
        if isinstance(part, int):
            key += f"[{part}]"
        elif part.startswith("[") or not key:
            key += part
        else:
            key += f".{part}"
    return key


def _at(error: ErrorDetails) -> str:
    at = (error.get("ctx") or {}).get("at", "")
    return at if isinstance(at, str) else ""

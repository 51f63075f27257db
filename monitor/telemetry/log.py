"""Structured logging: JSON lines in production, readable console in a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson
import structlog


def configure(level: str = "info", json: bool | None = None) -> None:
    """Set up structlog once. ``json`` defaults to True unless stderr is a terminal.

    ``LIQMON_LOG_FORMAT=json|console`` and ``LIQMON_LOG_LEVEL`` override.
    """
    fmt = os.environ.get("LIQMON_LOG_FORMAT")
    if json is None:
        json = fmt == "json" if fmt else not sys.stderr.isatty()
    level = os.environ.get("LIQMON_LOG_LEVEL", level)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        # Tracebacks without frame locals: locals can hold credentials.
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        logger_factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer())
        logger_factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )

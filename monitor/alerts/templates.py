"""The text of a chat or e-mail message: a route's ``template`` filled from the item.

``{field}`` names a field of the event or alert as published (``{type}``,
``{symbol}``, ``{qty}``, ``{mark_price}``, ``{liquidation_price}``...),
plus ``{notional}`` (``qty × mark_price``) and ``{detail}`` (an alert's
details as ``key=value`` pairs). A field the item does not have reads
``-``: a template written for margin calls still renders a price alert.
A summary's text is its own (see :mod:`monitor.alerts.folding`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from monitor.alerts.items import SUMMARY, Item
from monitor.core.wire import decimal_str

DEFAULT_EVENT = (
    "{type} {symbol} {side} {qty} @ {mark_price} (liq {liquidation_price}, "
    "ratio {margin_ratio}) acct {account}"
)
DEFAULT_ALERT = "{type} {symbol} {detail}"
DEFAULT_TITLE = "liqmon {type} {symbol}"
MISSING = "-"


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return MISSING


class _Formatter(string.Formatter):
    """``str.format`` without attribute or index lookups: a template reads fields only."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        return kwargs[field_name], field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        return MISSING if value is None else super().format_field(value, format_spec)


_FORMATTER = _Formatter()


def fields_of(item: Item) -> Mapping[str, Any]:
    """The values a template may name."""
    fields = _Fields(item.doc)
    notional = item.notional
    fields["notional"] = decimal_str(notional) if notional is not None else MISSING
    detail = item.doc.get("detail")
    if isinstance(detail, dict):
        fields["detail"] = " ".join(f"{key}={value}" for key, value in detail.items())
    return fields


def render(template: str | None, item: Item) -> str:
    """The message for ``item``: the template filled, or the default for its kind."""
    if item.type == SUMMARY:
        return str(item.doc.get("text", ""))
    default = DEFAULT_ALERT if item.is_alert else DEFAULT_EVENT
    return _fill(template or default, default, item)


def _fill(template: str, default: str, item: Item) -> str:
    """``template`` filled; the default when a format spec does not suit a value (``{qty:.2f}``
    on a decimal string): one odd field must not stop a route."""
    fields = fields_of(item)
    try:
        return _FORMATTER.vformat(template, (), fields)
    except ValueError:
        return _FORMATTER.vformat(default, (), fields)


def title(template: str | None, item: Item) -> str:
    """The message's title (e-mail subject, chat heading)."""
    if item.type == SUMMARY:
        return f"liqmon: {item.doc.get('count')} events folded"
    return _fill(template or DEFAULT_TITLE, DEFAULT_TITLE, item)


def check(template: str) -> str | None:
    """What is wrong with ``template`` (unbalanced braces, a field with a dot or index), or None."""
    try:
        for _, name, _, _ in string.Formatter().parse(template):
            if name is not None and (not name.isidentifier()):
                return f"{{{name}}} is not a field name"
    except ValueError as error:
        return str(error)
    return None

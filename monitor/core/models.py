"""The one place that decides which margin model judges a contract.

Every caller that needs a contract's margin state or trigger prices (the
evaluation, the views, the web edge, the commands, the demo, the benchmarks)
asks :func:`model_for` and uses the :class:`~monitor.core.venues.base.VenueModel`
it returns; none calls :mod:`monitor.core.margin` with a contract itself. A
contract configured with ``venue = "binance"`` (the default) carries no model
and gets :class:`~monitor.core.venues.binance.BinanceModel`, which returns
:mod:`monitor.core.margin`'s answers unchanged, digit for digit; any other
venue's contract carries its model, built by the configuration.

Why every model fits the trigger index and the hysteresis unchanged: each
status condition (liquidatable ``MB ≤ MM``, margin call ``ratio·MB ≤ MM``,
cleared ``clear·MB > MM``) is ``a·MB(P) ≤ b·MM(P)``, and every model keeps
``a·MB − b·MM`` strictly monotonic in the mark for the position (see
:mod:`monitor.core.venues`): the prices where a condition holds form one
half-line on the side where the position loses. One trigger price per
condition is therefore exact, whichever model computes it.
"""

from __future__ import annotations

from monitor.core.margin import Contract
from monitor.core.venues.base import VenueModel
from monitor.core.venues.binance import BinanceModel

BINANCE = "binance"
"""The default venue: today's model, :mod:`monitor.core.margin`."""


def model_for(contract: Contract) -> VenueModel:
    """The model that judges ``contract``: its venue's, or Binance's (margin.py) by default."""
    model = contract.model
    if model is not None:
        return model
    cached = contract._binance
    if cached is None:
        cached = BinanceModel(contract)
        object.__setattr__(contract, "_binance", cached)
    return cached


def venue_of(contract: Contract) -> str:
    """The venue whose model judges ``contract`` (``binance`` by default)."""
    return model_for(contract).venue

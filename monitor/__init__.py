"""liqmon: an event-driven liquidation monitor for isolated-margin crypto derivatives.

The pure core (``margin``, ``status``, ``position``, ``evaluation``) decides;
the async shell (``store``, ``bus``, ``engine``, ``daemon``, ``http``) does I/O.
"""

__version__ = "0.1.0"

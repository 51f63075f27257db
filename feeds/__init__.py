"""Price-feed consumers: every source normalizes to :class:`feeds.tick.PriceTick`."""

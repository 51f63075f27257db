"""``liqmon alerts``: events and price alerts forwarded to webhooks, chat, e-mail and PagerDuty.

Pure parts first, each free of I/O and tested alone:

    items.py      what came off the bus: one event or alert (or a folded summary)
    filters.py    which items a route takes
    folding.py    the per-route rate limit, and the summary a folded burst becomes
    templates.py  the text of a chat or e-mail message
    signing.py    the webhook's HMAC signature, and its verification
    pagerduty.py  Events API v2 documents: trigger and resolve by episode
    policy.py     what an answer means (accepted, retry, refused) and how long to wait

Then the shell: ``sinks.py`` (thin async adapters on httpx and Apprise),
``ledger.py`` (Redis: delivered keys, dead letters, the fold buffer),
``route.py`` (one route's delivery loop), ``metrics.py`` and ``forwarder.py``
(the process: a persistent MQTT session per route, health and metrics).
"""

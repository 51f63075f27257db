"""liqmon: an event-driven liquidation monitor for isolated-margin crypto derivatives.

The layers, each importing only those below it (``make check`` enforces this):

    cli/        the ``liqmon`` commands: parse arguments, print one line per error
    devtools/   embedded redis-server and mosquitto, the demo; only the CLI imports it
    service/    the daemon: wiring, workers (marks → engine → events), intake, relay
    alerts/     ``liqmon alerts``: events to webhooks, Apprise and PagerDuty (beside service/)
    web/        HTTP API, live feed and dashboard, reading through state's read model
    telemetry/  Prometheus metrics and structured logs
    state/      Redis: keys, Lua, position store, outbox, leases
    bus/        MQTT 3.1.1: a sans-I/O protocol and the asyncio client on it
    config/     the configuration model: file, includes, environment overrides
    core/       pure and synchronous: margin math and venue models, statuses, evaluation,
                funding, guards, topics, the exception tree, the wire format
"""

__version__ = "0.1.0"

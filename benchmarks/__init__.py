"""liqmon's benchmarks: run each from the repository root as ``python -m benchmarks.NAME``.

``bench`` is the issue #6 benchmark (``make bench-quick``, ``make bench``); ``load``,
``publisher``, ``receive`` and ``breakdown`` measure one part each; ``book``,
``generator``, ``rawmqtt``, ``stats``, ``report`` and ``observer`` are their parts.
See ``benchmarks/README.md`` for what each measures and the results so far.
"""

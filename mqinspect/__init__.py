"""mqinspect: inspect and observe memory-mapped message-log stores on Linux.

The code stands on floors, listed from the top. A module imports from its own unit (a package or module
named on its floor's line) and from the floors below it; never from a floor above, nor from another unit
of its own floor; and no imports form a cycle. tests/test_layers.py reads this list and checks every import
in the tree against it, those made inside functions too.

    main       mqinspect.__main__
    cli        mqinspect.cli
    export     mqinspect.export
    dashboard  mqinspect.dashboard
    render     mqinspect.render
    demo       mqinspect.demo
    data       mqinspect.sampling mqinspect.labs
    base       mqinspect mqinspect.errors mqinspect.signals mqinspect.jsonable
               mqinspect.render.units mqinspect.render.words
    probes     probes
    store      store

- main: `python -m mqinspect`.
- cli: the typer commands: parse options, ask the floors below for data, hand it to a renderer.
- export: `mqinspect export`: measures a scrape (store, residency, /proc) into snapshots and draws them as
  Prometheus metric families, served over HTTP.
- dashboard: the Textual app of `top`, `replay` and `demo`, which draws snapshots with render's pieces.
- render: draws snapshots as rich tables, JSON and CSV; it never reads /proc or a file.
- demo: the demo's workload (a broker and consumers) and its report, sampled with sampling, run with labs.
- data: sampling (the dashboard's snapshots: store, processes, eBPF sessions, recordings) and labs
  (experiments that measure a claim). They produce plain dataclasses and draw nothing.
- base: this package's __init__ (a new subpackage is on no floor until it is given one above), the error
  ladder and exit codes, signal handling, the JSON encoding of snapshots, and the text conventions for
  sizes, rates and shares (render.units) and counted nouns (render.words), which any floor may use in a
  message (the labs' progress lines do): they sit in render/ beside the renderers that use them most.
- probes: how the kernel is observed (/proc, cachestat and mincore, eBPF on tracepoints).
- store: the mmap log store in RocketMQ's format; a library without a terminal.
"""

# The one place the version is written: pyproject.toml reads it from here (setuptools dynamic metadata), so
# `mqinspect --version` needs no importlib.metadata, which costs every start-up ~15 ms.
__version__ = "0.1.0"

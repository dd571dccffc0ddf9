"""The dashboard's data side: one immutable TopSnapshot per interval, for every way of showing it (the Textual
app, `top --once`'s rich tables, JSON, recordings, the demo's report). Nothing here draws.

- snapshot.py: TopSnapshot and the views it holds (segments, processes, probes, send paths);
- sampler.py: Sampler, which reads everything once per interval, and SamplerThread, which runs it off the UI;
- store_reader.py, process_reader.py: the store's segments and the processes that hold them;
- probe_set.py: ProbeSet, the dashboard's eBPF sessions, opened off the UI thread and closed on every way out;
- recording.py: `top --record` files written and read back;
- stream.py: TopOptions, and snapshots one interval apart without the app (--once, --count, the demo).
"""

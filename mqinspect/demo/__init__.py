"""`mqinspect demo`: a live store with a warming producer and consumers on several send paths.

- settings.py: DemoSettings, the workload's shape and the broker's StoreConfig;
- workload.py: DemoWorkload, which starts the child processes and stops them on every way out;
- broker.py, consumer.py: the children (`python -m mqinspect.demo.broker|consumer`), child.py what they share;
- headless.py: the run without a dashboard (live view sampled at the end, then short labs);
- report.py: what the children and the run report, as dataclasses.
"""

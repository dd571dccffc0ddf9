"""benchmarks/probe_overhead.py in parts: its workloads (workloads.py), the baseline it measures the probes
against (baseline.py: the floor of empty programs and the dispatch cost), the probes' sessions (sessions.py),
the kernel's run statistics (run_statistics.py), the comparison of the sides (comparison.py) and its report
(report.py)."""

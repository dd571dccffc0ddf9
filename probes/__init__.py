"""How mqinspect observes the kernel: /proc readers, residency syscalls and tracepoint-only eBPF probes.

Every probe returns plain dataclass snapshots; renderers only draw them.
"""

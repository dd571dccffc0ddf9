"""The labs: experiments that run a workload and measure it, producing plain dataclass results."""

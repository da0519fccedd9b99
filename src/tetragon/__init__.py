"""tetragon-py: eBPF security observability and runtime enforcement with a Python agent."""

__version__ = "0.1.0"

"""topoctl: declarative topology-as-code for Linux container networking."""

__version__ = "0.1.0"

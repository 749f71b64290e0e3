"""edge-agent: poll plant devices, judge alarms locally, store and forward to the platform."""

__version__ = "0.1.0"

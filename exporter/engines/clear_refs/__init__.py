"""Backend ``clear_refs``: referenced bytes per mapping from ``/proc/PID/clear_refs`` and smaps, on any kernel.

- :mod:`.engine`: the engine (clear periods, reads at the summary's horizons);
- :mod:`.curves`: the pure bookkeeping of referenced-bytes curves;
- :mod:`.smaps`: clearing and reading a real process.
"""

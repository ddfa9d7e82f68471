"""Backend ``damon_sysfs``: the kernel's own DAMON, driven through ``/sys/kernel/mm/damon``.

- :mod:`.engine`: the engine (one kdamond, one DAMON target and one stat scheme per process,
  regions weighed by pagemap residency, idle time carried across the kernel's merges);
- :mod:`.ownership`: the marker, reclaiming a dead exporter's kdamond, availability;
- :mod:`.tree`: the sysfs interface itself, and the guard against writing the real tree
  outside the test VM.
"""

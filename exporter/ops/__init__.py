"""Operations sets: one module per way of checking whether a page was accessed.

Each backend implements :class:`exporter.ops.base.Operations`, the user-space twin of the
kernel's ``struct damon_operations`` (init/update regions, prepare access checks, check
accesses). They are the seam between the user-space DAMON engine
(:class:`exporter.core.monitor.Monitor`) and the kernel; :mod:`exporter.engines.registry`
names the backends built on them.
"""

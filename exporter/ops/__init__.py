"""Operations sets: one module per way of checking whether a page was accessed.

Each backend implements :class:`exporter.ops.base.Operations`, the user-space twin of the
kernel's ``struct damon_operations`` (init/update regions, prepare access checks, check
accesses). :func:`exporter.ops.registry.create_ops` picks one by name.
"""

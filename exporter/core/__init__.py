"""The monitoring algorithm: DAMON's adaptive region-based sampling.

Nothing in this package touches /proc or /sys. Access checks go through an operations set
(:mod:`exporter.ops`), exactly as the kernel's ``mm/damon/core.c`` only talks to
``struct damon_operations``; that seam is what lets the tests drive the algorithm with a
simulated address space and a virtual clock.
"""

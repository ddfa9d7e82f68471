"""Backend ``page_idle``: DAMON's adaptive region sampling, run in user space.

- :mod:`.monitor`: the engine, the kernel's ``kdamond_fn`` loop for many targets at once;
- :mod:`.regions`, :mod:`.ranges`: the region algorithm (``mm/damon/core.c``), each routine
  named after the kernel function it mirrors; nothing here touches /proc or /sys;
- :mod:`.operations`: the operations-set interface (``struct damon_operations``), with
  :mod:`.ops_page_idle` (the real one: pagemap + ``/sys/kernel/mm/page_idle/bitmap``,
  :mod:`.kpageflags` for huge pages) and :mod:`.ops_simulated` (memory with a known truth,
  for the tests of the algorithm).
"""

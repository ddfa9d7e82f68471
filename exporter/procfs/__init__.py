"""The one reader of /proc: every engine, discovery and the CLI read process files here.

- :mod:`.io`: the syscall shim (:class:`~.io.PosixIO`) and ``OSError`` to model errors;
- :mod:`.parsers`: stat, maps and smaps;
- :mod:`.pagemap`: the pagemap handle and residency from present bits;
- :mod:`.scan`: the process list.

What only page_idle reads (kpageflags, the idle bitmap) lives beside it, in
:mod:`exporter.engines.page_idle`. The root paths are parameters (``--path.procfs``,
``--path.sysfs``) so that tests can point every reader at a fake tree under a temp dir.
"""

"""Engines other than the core's user-space DAMON loop, and the one registry of backends.

A backend name (``page_idle``, ``clear_refs``, ...) names one engine, built by
:mod:`.registry`; adding an engine is one module here plus one registry entry.
"""

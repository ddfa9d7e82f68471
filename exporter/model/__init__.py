"""The project's neutral vocabulary: what every layer shares and no layer owns.

Process identity, the error kinds, monitoring attributes and durations, target specs, the
:class:`~exporter.model.engine.Engine` interface and the raw records engines produce. It
imports nothing of the project, so every other package may import it and none of its
modules can pull an engine, a parser or the web server in by accident
(``tests/test_import_layers.py`` holds the rule).
"""

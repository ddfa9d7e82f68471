"""The exporter's HTTP side: landing page, health and readiness, /metrics, TLS and basic auth.

Standard library only (``selectors`` + ``ssl``: one event loop holds the connections, a
bounded pool serves the requests) plus ``bcrypt``; the web config file is the
exporter-toolkit subset SREs already write for node_exporter, re-checked per connection.
"""

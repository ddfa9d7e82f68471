"""The exporter's HTTP side: landing page, health and readiness, /metrics, TLS and basic auth.

Standard library only (``http.server`` + ``ssl``) plus ``bcrypt``; the web config file is
the exporter-toolkit subset SREs already write for node_exporter.
"""

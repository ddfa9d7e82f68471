"""damon-exporter: DAMON's region-based access sampling, run from user space, exported to Prometheus."""

__version__ = "0.1.0"

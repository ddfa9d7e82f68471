"""The long-running exporter: one sampler thread, a CPU budget, config reloads, logging.

The web side (:mod:`exporter.web`) and the collectors (:mod:`exporter.metrics`) only ever
read the immutable :class:`~exporter.service.state.ServiceState` that the sampler publishes
by swapping one reference, so a scrape never waits on sampling.
"""

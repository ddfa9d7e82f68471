"""What the tests (and bench/) share, in one place each.

- :mod:`.wait`: the one way to wait for a condition (never a fixed sleep before an assert);
- :mod:`.exporter`: the one way to run the real exporter (a server to scrape, or a command
  such as ``check-config`` or ``snapshot`` to run to its end) and to read what it says;
- :mod:`.workloads`: the one way to build the C workloads of ``tests/workloads/``;
- :mod:`.fixtures`: the pytest fixtures built on them, registered for every test package by
  ``tests/conftest.py`` (no test imports another package's conftest).
"""

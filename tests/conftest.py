"""Suite-wide guard: nothing the tests run may write under the real /sys/kernel/mm/damon.

On this project's build and CI machines a kdamond is configured and belongs to the machine.
The variable is inherited by every process the tests start (exporters, snapshots); the
DAMON sysfs writer refuses real-tree writes under it except inside the test VM
(exporter/engines/damon_sysfs/tree.py).
"""

import os

from exporter.engines.damon_sysfs.tree import NO_REAL_ENV

os.environ[NO_REAL_ENV] = "1"

#: the shared fixtures (exporter, children, cgroup2), for every test package
pytest_plugins = ["tests.support.fixtures"]

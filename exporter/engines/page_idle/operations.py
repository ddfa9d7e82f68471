"""The interface between the user-space DAMON loop and an access-check operations set.

The loop decides *what* to sample (regions, random addresses, when); an operations set only
knows *how* to look at one kind of memory: read its mappings, clear an accessed bit, read
it back, and estimate residency. Keeping that seam is what lets the loop be tested with a
simulated address space (:mod:`.ops_simulated`), exactly as the kernel's
``mm/damon/core.c`` only talks to ``struct damon_operations``.
"""

from __future__ import annotations

import abc
import random
from typing import ClassVar, Iterable, Sequence

from exporter.model.process import ProcessRef
from exporter.procfs.pagemap import Residency

#: result of one access check: True accessed, False not accessed, None "could not check"
#: (page not resident, PFN changed, page refused the idle mark). None never counts as a hit
#: and never counts as a sample.
CheckResult = bool | None


class Operations(abc.ABC):
    """One access-check backend. Methods are called from one sampler thread only."""

    #: backend name as used in flags, configs and the ``backend`` label
    name: ClassVar[str] = "abstract"
    #: whether a check sees the physical page's access, whoever made it (see Aggregation)
    access_per_page: ClassVar[bool] = False

    @abc.abstractmethod
    def mappings(self, proc: ProcessRef) -> Iterable[tuple[int, int]]:
        """The process' user mappings as sorted (start, end) pairs (may be an iterator).

        Raises ProcessGone if the process is gone, AccessDenied if we may not look.
        """

    @abc.abstractmethod
    def prepare_access_checks(self, proc: ProcessRef, addrs: Sequence[int]) -> None:
        """Clear the accessed state of the pages holding ``addrs`` (one per region)."""

    @abc.abstractmethod
    def check_accesses(self, proc: ProcessRef, addrs: Sequence[int]) -> list[CheckResult]:
        """For each address prepared last time, whether it was accessed since."""

    #: whether :meth:`open_window` is implemented (pages watched over a whole window)
    page_windows: ClassVar[bool] = False

    def open_window(self, proc: ProcessRef, addrs: Sequence[int]) -> object:
        """Clear the accessed state of the pages at ``addrs`` and keep it until
        :meth:`read_window`, whatever access checks happen meanwhile (a check that clears a
        watched page's state first keeps what it held). Returns a handle for the other two
        calls. Raises as :meth:`prepare_access_checks` does."""
        raise NotImplementedError

    #: whether :meth:`present_pages` draws (windows then need no extra pages for sparse ranges)
    draws_present: ClassVar[bool] = False

    def present_pages(self, proc: ProcessRef, start: int, end: int, n: int,
                      rng: random.Random) -> tuple[list[int], float] | None:
        """Up to ``n`` distinct addresses of pages present in ``[start, end)``, drawn at
        random from the present ones alike (a window's page drawn where nothing is present
        tells nothing), and how many pages are present there (estimated where only a part
        was read); None where this set cannot tell cheaply (then pages are drawn from the
        whole range). Cost must be bounded per range."""
        return None

    def read_window(self, handle: object) -> list[tuple[CheckResult, float]]:
        """For each page of the window: whether it was accessed since it was opened (None:
        cannot tell: not present now, another page now, refused the mark), and the page's
        share (``1 / mappers``, as PSS counts it; 0 where nothing is there)."""
        raise NotImplementedError

    def close_window(self, handle: object) -> None:
        """Stop keeping the window's pages (it was read, or its process left)."""

    @abc.abstractmethod
    def resident_bytes(self, proc: ProcessRef, ranges: Sequence[tuple[int, int]]) -> list[Residency]:
        """Resident memory in each range (same order), each page by its share (PSS's rule:
        a page ``n`` page tables map counts ``1/n``). Cost must be bounded per range."""

    def frames(self, proc: ProcessRef, addrs: Sequence[int]) -> list[int] | None:
        """The page frame number at each address (0: no page there), or None where frames
        cannot be read: which memory a shared region is (exporter/engines/identity.py)."""
        return None

    def maps_text(self, proc: ProcessRef) -> bytes | None:
        """``/proc/PID/maps``, or None where there is none: the file mappings over shared
        memory, matched by offset in the summary (exporter/engines/identity.py)."""
        return None

    def forget(self, proc: ProcessRef) -> None:
        """Drop per-process state (open files, caches); the process left the monitoring."""

    def close(self) -> None:
        """Release everything; the monitor is stopping."""

    def interference(self) -> list[str]:
        """Human-readable reasons why results may be wrong right now (another page_idle
        user, kernel DAMON running, NUMA balancing). Empty when none is known."""
        return []

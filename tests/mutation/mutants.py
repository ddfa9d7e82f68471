"""Deliberate, realistic bugs in the engines and the summary, and the tests that must catch them.

Each :class:`Mutant` is a source patch: ``old`` must occur exactly once in ``module``'s
source, and is replaced by ``new`` when the module is imported in a pytest run started with
``-p tests.mutation.plugin`` and ``DAMON_EXPORTER_MUTANT=<name>`` (no file is changed).
``killers`` are the accuracy tests that must fail, each with an assertion, under the mutant
(and pass without it): ``tests/mutation/test_mutants.py`` checks both, and
``python3 -m tests.mutation.matrix`` runs every mutant against every accuracy test to show
the whole kill matrix (docs/testing.md, "Mutation check").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: the variable naming the mutant to apply (read by tests/mutation/plugin.py)
MUTANT_ENV = "DAMON_EXPORTER_MUTANT"


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    old: str
    new: str
    bug: str
    killers: tuple[str, ...] = ()
    #: more (old, new) replacements in the same module, where one bug spans two places
    also: tuple[tuple[str, str], ...] = ()

    def apply(self, source: str) -> str:
        """``source`` with the bug in; ValueError unless each ``old`` occurs exactly once (a
        mutant that no longer applies must never pass for a killed one)."""
        for old, new in ((self.old, self.new), *self.also):
            n = source.count(old)
            if n != 1:
                raise ValueError(f"mutant {self.name}: the text to replace occurs {n} times in {self.module}, not once")
            source = source.replace(old, new)
        return source


REGIONS = "exporter.engines.page_idle.regions"
MONITOR = "exporter.engines.page_idle.monitor"
STAT = "exporter.summary.stat"
PAGEMAP = "exporter.procfs.pagemap"
CURVES = "exporter.engines.clear_refs.curves"
CLEAR_REFS = "exporter.engines.clear_refs.engine"
PROMOTION = "exporter.summary.promotion"
SHARING = "exporter.summary.sharing"
SAMPLING = "exporter.summary.sampling"
IDLE_OPS = "exporter.engines.page_idle.ops_page_idle"
WINDOWS = "exporter.engines.page_idle.windows"
FILE_IDENTITY = "exporter.summary.file_identity"
_WIN = "tests/core/test_page_windows.py::"

_ACC = "tests/core/test_monitor_accuracy.py::"
_REG = "tests/core/test_regions_properties.py::"
_STAT = "tests/summary/test_stat.py::"
_SHARE = "tests/summary/test_sharing.py::"
_FILES = "tests/summary/test_file_identity.py::"
_PROC = "tests/ops/test_procfs.py::"
_IDLE = "tests/ops/test_page_idle.py::"
_CURVES = "tests/engines/test_clear_refs_curves.py::"
_PROMO = "tests/summary/test_promotion.py::"
_INV = "tests/core/test_monitor_invariants.py::"
_BUDGET = "tests/service/test_budget_truth.py::"

_MUTANTS: tuple[Mutant, ...] = (
    # -- region boundaries (page_idle engine) --------------------------------------------
    Mutant(
        "split-left-piece-one-page-short", REGIONS,
        "            cur.end = cur.start + sub\n",
        "            cur.end = cur.start + sub - MIN_REGION\n",
        "a random split ends the left piece one page early: that page is in no region",
    ),
    Mutant(
        "split-right-piece-one-page-early", REGIONS,
        "            right = cur.piece(cur.start + sub, cur.end)\n",
        "            right = cur.piece(cur.start + sub - MIN_REGION, cur.end)\n",
        "a random split starts the right piece one page early: that page is in two regions",
    ),
    Mutant(
        "merge-one-page-short", REGIONS,
        "    left.end = right.end\n",
        "    left.end = right.end - MIN_REGION\n",
        "a merge stops one page before the right region's end: that page leaves monitoring",
    ),
    Mutant(
        "even-split-drops-remainder", REGIONS,
        "    out[-1].end = r.end\n",
        "",
        "the initial even split forgets to give the last piece the rest of the range",
    ),
    Mutant(
        "size-limit-context-wide", REGIONS,
        "    return max(region_size_limit(process_size, min_regions), region_size_limit(target_size, max_regions))\n",
        "    return region_size_limit(target_size, min_regions)\n",
        "a process' regions are limited by the whole target over min_regions, as the kernel's context: "
        "forked processes' hot edges hide in regions of half a process",
    ),
    Mutant(
        "merge-across-one-page-gap", REGIONS,
        "            and prev.end == r.start\n",
        "            and r.start - prev.end <= MIN_REGION\n",
        "regions a page apart count as neighbours: a merge bridges a hole",
    ),
    Mutant(
        "merge-idle-with-accessed", REGIONS,
        "            and (prev.nr_accesses == 0) == (r.nr_accesses == 0)\n",
        "",
        "a region seen accessed merges with an unaccessed neighbour (the kernel's rule alone)",
    ),
    Mutant(
        "merge-keeps-latest-access", REGIONS,
        "        left.last_access = (left.last_access * sl + right.last_access * sr) / total\n",
        "        left.last_access = max(left.last_access, right.last_access)\n",
        "a merged region takes its most recent part's access time, not the size-weighted one",
    ),
    Mutant(
        "split-piece-forgets-history", REGIONS,
        "        return Region(start, end, self.nr_accesses, self.nr_checks, self.last_nr_accesses, self.age,\n"
        "                      last_access=self.last_access, seen=self.seen)\n",
        "        return Region(start, end, self.nr_accesses, self.nr_checks, self.last_nr_accesses, self.age)\n",
        "a piece of a split region starts with no idle history (last access at clock 0)",
    ),
    # -- sampling (page_idle engine) -----------------------------------------------------
    Mutant(
        "idle-time-not-advancing", MONITOR,
        "                    r.nr_checks += 1\n                    if hit:\n",
        "                    r.nr_checks += 1\n                    r.last_access = now\n                    if hit:\n",
        "every sample, hit or miss, stamps the region's last access: idle time never grows",
    ),
    Mutant(
        "counters-not-reset", MONITOR,
        "                    r.nr_accesses = 0\n                    r.nr_checks = 0\n",
        "                    r.nr_checks = 0\n",
        "hits are not reset at the end of an aggregation: once accessed, always accessed",
    ),
    Mutant(
        "sample-past-region-end", MONITOR,
        "r.start + rnd((r.end - r.start) // page) * page",
        "r.start + rnd((r.end - r.start) // page + 1) * page",
        "the sampled page may be the first page after the region (an inclusive upper bound)",
    ),
    # -- residency by share --------------------------------------------------------------
    Mutant(
        "shared-page-counts-2-over-n", PAGEMAP,
        "        weight += 1.0 / c if c > 0 else 1.0\n",
        "        weight += 2.0 / c if c > 0 else 1.0\n",
        "a page N page tables map counts 2/N instead of 1/N",
    ),
    Mutant(
        "zero-page-counted", PAGEMAP,
        "        if zero_pfn and pfn == zero_pfn:\n            continue\n",
        "",
        "the shared zero page counts as resident memory",
    ),
    Mutant(
        "pagemap-last-page-unread", PAGEMAP,
        "        n = (end - start) >> PAGE_SHIFT\n",
        "        n = ((end - start) >> PAGE_SHIFT) - 1\n",
        "a range's page count is one short: its last page is never read",
    ),
    Mutant(
        "clear-refs-share-inverted", CURVES,
        "    f = pss / m.rss\n",
        "    f = m.rss / pss\n",
        "clear_refs scales a mapping's figures by Rss/Pss instead of Pss/Rss",
    ),
    Mutant(
        "clear-refs-idle-not-capped", CURVES,
        "        cap = min(cap, p.untouched)\n",
        "        cap = p.untouched\n",
        "clear_refs' untouched bytes are not capped by Rss and by the shorter idle times",
    ),
    Mutant(
        "clear-refs-freed-is-a-clear", CURVES,
        "        lost += max(0, (p.referenced - m.referenced) - max(0, p.rss - m.rss))\n",
        "        lost += max(0, p.referenced - m.referenced)\n",
        "freed memory's Referenced drop is taken for another clear_refs writer",
    ),
    Mutant(
        "clear-refs-history-not-summed", CURVES,
        "        touched += t\n",
        "        touched = t\n",
        "bytes untouched over several clear periods forget all but the oldest period's touches",
    ),
    Mutant(
        "clear-refs-scaling-error-by-rss", CURVES,
        "    w = max(0.0, (pss - private) / shared)",
        "    w = max(0.0, (pss - private) / rss)",
        "the share of a shared page is taken over Rss instead of the shared pages",
    ),
    Mutant(
        "cold-age-strict-distribution", STAT,
        "    return sum(b for s, b in idle_bands(r) if s >= seconds)\n",
        "    return sum(b for s, b in idle_bands(r) if s > seconds)\n",
        "bytes of an idle-time distribution idle exactly cold_age are not cold (>= to >)",
    ),
    Mutant(
        "working-set-window-inclusive-distribution", STAT,
        "        if s > window:\n",
        "        if s >= window:\n",
        "a distribution's point at exactly the window is read as beyond it (> flipped to >=)",
    ),
    Mutant(
        "private-memory-treated-as-shared", SHARING,
        "            nbytes = round(r.shared_bytes * (hi - r.start) / size) - round(r.shared_bytes * (lo - r.start) / size)\n",
        "            nbytes = round(r.resident_bytes * (hi - r.start) / size) - round(r.resident_bytes * (lo - r.start) / size)\n",
        "every resident byte is taken as shared: private memory at one address takes the others' view",
        also=(("    moved = relocate([r for r in regions if r.shared_bytes > 0 and r.end > r.start], files)\n",
               "    moved = relocate([r for r in regions if r.resident_bytes > 0 and r.end > r.start], files)\n"),),
    ),
    Mutant(
        "clear-refs-growth-hidden", CURVES,
        "        return last, min(rss, last + before), None\n",
        "        return 0, min(rss, last + before), None\n",
        "early in a clear period, what it has seen touched is neither a floor of the working set "
        "nor caps the older points' untouched bytes (two sites: either alone is masked by the other)",
        also=(("        cap = min(cap, p.untouched)\n", "        cap = p.untouched\n"),),
    ),
    Mutant(
        "clear-refs-unreached-horizon-published", CURVES,
        "    reached = [h for h in sorted(bounds, reverse=True) if dist and dist[-1][0] >= h]\n",
        "    reached = [h for h in sorted(bounds, reverse=True) if dist]\n",
        "clear_refs publishes a figure at a horizon it has not watched for yet",
    ),
    Mutant(
        "clear-refs-measured-at-last-read", CLEAR_REFS,
        "                at = read_wall if h in still else next((q.wall for q in pts if q.elapsed >= h), None)\n",
        "                at = read_wall if h in still else next((q.wall for q in reversed(pts) if q.elapsed >= h), None)\n",
        "a figure held between clear_refs' exact points is dated by the last read, not its own",
    ),
    # -- the summary ---------------------------------------------------------------------
    Mutant(
        "working-set-counts-never-seen", STAT,
        "    return r.nr_accesses > 0 or (r.seen_accessed and r.idle_seconds < window)\n",
        "    return r.nr_accesses > 0 or r.idle_seconds < window\n",
        "the working set counts memory never seen accessed (watched less than the window)",
    ),
    Mutant(
        "cold-age-strict", STAT,
        "        return r.resident_bytes if r.idle_seconds >= seconds else 0\n",
        "        return r.resident_bytes if r.idle_seconds > seconds else 0\n",
        "memory idle exactly cold_age is not cold (>= flipped to >)",
    ),
    Mutant(
        "working-set-error-zero", STAT,
        "        working_set_error_bytes=min(resident, round(ws_error) + ws_share_error + ws_present),\n",
        "        working_set_error_bytes=0,\n",
        "the summary publishes no working-set error",
    ),
    Mutant(
        "cold-error-zero", STAT,
        "        cold_error_bytes=min(resident, round(cold_error) + cold_share_error + cold_present),\n",
        "        cold_error_bytes=0,\n",
        "the summary publishes no cold-bytes error",
    ),
    Mutant(
        "edge-share-inverted", STAT,
        "                blame(hi, 1.0 - hot.frequency / ref)\n",
        "                blame(hi, hot.frequency / ref)\n",
        "the edge error blames the used share of a straddling region instead of its idle share",
    ),
    Mutant(
        "unproven-shortfalls-add-linearly", SAMPLING,
        "        squares += (b * (k / n - rate_lower(n, k))) ** 2\n",
        "        squares += b * (k / n - rate_lower(n, k))\n",
        "regions' shortfalls below their estimates add up as if every region missed together",
        also=(("    return max(0.0, point - math.sqrt(squares))\n", "    return max(0.0, point - squares)\n"),),
    ),
    Mutant(
        "unproven-pieces-counted-apart", STAT,
        "            d = draws.setdefault(r.evidence or (r.pid, r.start, r.end), [0, k, n])\n",
        "            d = draws.setdefault((r.pid, r.start, r.end), [0, k, n])\n",
        "pieces of shared memory carrying one region's samples count as independent draws",
    ),
    Mutant(
        "working-set-needs-two-hits", STAT,
        "    return r.nr_accesses > 0 or (r.seen_accessed and r.idle_seconds < window)\n",
        "    return r.nr_accesses > 1 or (r.seen_accessed and r.idle_seconds < window)\n",
        "a region hit by one sample this aggregation is not in the working set (> 0 became > 1)",
    ),
    Mutant(
        "histogram-le-exclusive", STAT,
        "            if value <= b:\n",
        "            if value < b:\n",
        "histogram buckets exclude their upper bound (Prometheus' le is inclusive)",
    ),
    Mutant(
        "cold-weighted-by-region-size", STAT,
        "        return r.resident_bytes if r.idle_seconds >= seconds else 0\n",
        "        return r.end - r.start if r.idle_seconds >= seconds else 0\n",
        "cold bytes weighted by region size (mapped memory), not by resident bytes",
    ),
    Mutant(
        "shared-piece-counted-twice", SHARING,
        "        out.append(_scaled(r, r.resident_bytes - m, r.shared_bytes - m))\n",
        "        out.append(r)\n",
        "a region keeps the shared bytes it gave to the pieces: those pages count twice",
    ),
    Mutant(
        "shared-view-least-recent", SHARING,
        "            self._fresh = min(self.covering, key=_freshness)\n",
        "            self._fresh = max(self.covering, key=_freshness)\n",
        "a shared page takes the view of its least recently used mapper, not its most recent",
    ),
    Mutant(
        "promotion-age-strict", PROMOTION,
        "        if age >= cold_age:\n",
        "        if age > cold_age:\n",
        "a return after exactly cold_age of idleness is not a promotion (>= flipped to >)",
    ),
    Mutant(
        "promotion-idle-age-to-now", PROMOTION,
        "                    b.pending_age, b.revived_at, b.idle_since = prev - b.since, now, b.since\n",
        "                    b.pending_age, b.revived_at, b.idle_since = now - b.since, now, b.since\n",
        "a return's idle age runs to this aggregation, not to the last one that saw it idle",
    ),
    Mutant(
        "promotion-in-use-ignored", PROMOTION,
        "    left = max(0.0, hit - head.in_use_bytes - head.unseen_bytes)\n",
        "    left = max(0.0, hit - head.unseen_bytes)\n",
        "a region's hits are not first explained by the memory it held in use",
    ),
    Mutant(
        "promotion-unseen-use-ignored", PROMOTION,
        "    left = max(0.0, hit - head.in_use_bytes - head.unseen_bytes)\n",
        "    left = max(0.0, hit - head.in_use_bytes)\n",
        "hits are not explained by what the checks that found a region idle leave possible in use unseen",
    ),
    Mutant(
        "promotion-old-first", PROMOTION,
        "    for b, seg in sorted(members, key=lambda m: m[0].pending_age or 0.0):\n",
        "    for b, seg in sorted(members, key=lambda m: -(m[0].pending_age or 0.0)):\n",
        "a return's proven bytes go to the longest idle first, promoting what the hits do not prove",
    ),
    Mutant(
        "promotion-counted-twice", PROMOTION,
        "        if seg.frequency <= 0 and back < b.nbytes:\n",
        "        if seg.frequency <= 0:\n            b.since = b.idle_since\n        if seg.frequency <= 0 and back < b.nbytes:\n",
        "bytes counted back keep the idle time they returned from and are promoted again",
    ),
    Mutant(
        "promotion-in-use-is-a-return", PROMOTION,
        "            back = [b.pending_age is None and b.since < prev for b in inv]",
        "            back = [b.pending_age is None and b.since <= prev for b in inv]",
        "memory in use at the last aggregation counts as back from idleness (< flipped to <=)",
    ),
    Mutant(
        "promotion-exited-process-kept", PROMOTION,
        "            del t.processes[pid]  # exited: pending bytes go with it\n",
        "            pass\n",
        "a process that exited keeps its pending returns",
    ),
    Mutant(
        "promotion-freed-memory-kept", PROMOTION,
        "                _, inv = _take(inv, have - total)\n",
        "                pass\n",
        "memory that left a region (freed, reclaimed) stays in its idle history",
    ),
    Mutant(
        "promotion-settles-at-once", PROMOTION,
        "            due = now - members[0][0].revived_at >= settle - 1e-9\n",
        "            due = now >= members[0][0].revived_at\n",
        "a return is counted at once, before DAMON's splits tell which part of it is used",
    ),
    Mutant(
        "promotion-targets-never-forgotten", PROMOTION,
        "            del self._targets[k]\n",
        "            pass\n",
        "a target that left keeps its counts when it comes back",
    ),
    Mutant(
        "referenced-first-interval-estimated", PROMOTION,
        "        first = prev <= period\n",
        "        first = False\n",
        "clear_refs returns are estimated right after a clear, when memory in use re-touches itself",
    ),
    Mutant(
        "referenced-closing-touches-ignored", PROMOTION,
        "        if new_period and p.period_start > 0 and any(r.closed_referenced for r in recs):\n",
        "        if False:\n",
        "first touches between a period's last aggregation and its clear are never counted",
    ),
    Mutant(
        "referenced-retouch-is-a-return", PROMOTION,
        "            if b.since < prev and prev - b.since >= min(aggregation_interval, cold_age):\n",
        "            if b.since < prev:\n",
        "bytes touched again right after a clear count as returns from idleness",
    ),
    Mutant(
        "promotion-counts-whole-region", PROMOTION,
        "        back = b.nbytes * b.revived_frequency\n",
        "        back = b.nbytes\n",
        "a return counts the whole region, not the share of its samples that saw the access",
    ),
    Mutant(
        "promotion-inherit-wrong-denominator", PROMOTION,
        "        f = (hi - lo) / (seg.end - seg.start)\n",
        "        f = (hi - lo) / (r.end - r.start)\n",
        "a split or merge hands history on by the share of the new region, not of the old segment",
    ),
    Mutant(
        "windows-ignored", STAT,
        "    if window in windows:\n",
        "    if False:\n",
        "the summary counts whole regions seen used within the window, not the share its page window read",
    ),
    Mutant(
        "window-late-step-skips", MONITOR,
        "        earliest = now - self.attrs.sample_interval\n",
        "        earliest = now\n",
        "a window due at a step that ran a little late is put off a whole period: aggregations go unmeasured",
    ),
    Mutant(
        "window-erased-by-a-sample", IDLE_OPS,
        "        if watched:\n",
        "        if False:\n",
        "a sample's mark of a page an open window watches erases the access the window was to see",
    ),
    Mutant(
        "window-pages-unweighted", WINDOWS,
        "        sw += w\n        sw2 += w * w\n        if accessed:\n            swa += w\n",
        "        sw += 1\n        sw2 += 1\n        if accessed:\n            swa += 1\n",
        "a page window counts a shared page whole in every process mapping it",
    ),
    Mutant(
        "shared-share-after-a-gap", PAGEMAP,
        "    for i in nth_marks(marks, [rng.randrange(shared) for _ in range(picks)]):\n",
        "    for i in [j if (j := marks.find(1, rng.randrange(len(marks)))) >= 0 else marks.find(1) for _ in range(picks)]:\n",
        "the shared pages whose mappers are counted are the first after random places: pages after gaps weigh more",
    ),
    Mutant(
        "file-offset-ignored", FILE_IDENTITY,
        "            out.setdefault(m.pid, []).append((m.start, m.end, ((i + 1) << 64) + m.offset - m.start))\n",
        "            out.setdefault(m.pid, []).append((m.start, m.end, ((i + 1) << 64) - m.start))\n",
        "shared file pages are matched by their place in each mapping, not by their offset in the file",
    ),
    Mutant(
        "file-pages-judged-by-frames", SHARING,
        "    return (identity_groups(by_address) if by_address else []) + ([in_files] if in_files else [])\n",
        "    return identity_groups(list(shared)) if shared else []\n",
        "two programs whose frames differ somewhere are kept apart on the file they both map",
    ),
    Mutant(
        "quiet-proof-reaches-shared", CLEAR_REFS,
        "            still = [h for h in self.horizons if h <= quiet] if only_its_own(m) else []\n",
        "            still = [h for h in self.horizons if h <= quiet]\n",
        "a process that stopped running is taken to prove its shared memory untouched too, which others' page tables reach",
    ),
    Mutant(
        "quiet-since-kept-across-runs", CLEAR_REFS,
        "        elif activity != p.activity or p.quiet_since is None:\n",
        "        elif p.quiet_since is None:\n",
        "a process that runs again keeps the quiet spell it began before: its memory in use is called untouched",
    ),
    Mutant(
        "referenced-old-bytes-first", PROMOTION,
        "        taken, rest = _take(young + olds, touched - sum(b.nbytes for b in from_old))\n",
        "        taken, rest = _take(olds + young, touched - sum(b.nbytes for b in from_old))\n",
        "clear_refs' first touches are taken from the idlest bytes first, not the youngest",
    ),
)

#: the tests that must fail under each mutant (each passes without it); a few per mutant,
#: from the kill matrix (``python3 -m tests.mutation.matrix``), every one in the fast tier
KILLERS: dict[str, tuple[str, ...]] = {
    "split-left-piece-one-page-short": (_ACC + "test_ten_percent_hot_set_in_one_gib_is_found[0]",
                                        _REG + "test_split_preserves_coverage",
                                        _SHARE + "test_user_space_engine_on_forked_workers[0]"),
    "split-right-piece-one-page-early": (_ACC + "test_multi_process_target_adds_up",
                                         _IDLE + "test_monitor_finds_the_hot_megabyte",
                                         _BUDGET + "test_steady_pattern_reads_the_same_while_the_budget_acts[2-0]"),
    "merge-one-page-short": (_ACC + "test_moving_hot_set_is_followed",
                             _REG + "test_merge_preserves_coverage_and_respects_limits",
                             _BUDGET + "test_steady_pattern_reads_the_same_while_the_budget_acts[0-469762048]"),
    "even-split-drops-remainder": (_ACC + "test_ten_percent_hot_set_in_one_gib_is_found[0]",
                                   _REG + "test_init_regions_cover_ranges"),
    "size-limit-context-wide": (_ACC + "test_each_process_of_a_target_keeps_min_regions_of_its_own",
                                _REG + "test_process_size_limit"),
    "merge-across-one-page-gap": (_REG + "test_merge_weighted_average", _INV + "test_region_count_stays_within_bounds"),
    "merge-idle-with-accessed": (_BUDGET + "test_steady_pattern_reads_the_same_while_the_budget_acts[1-209715200]",
                                 _BUDGET + "test_steady_pattern_reads_the_same_while_the_budget_acts[2-0]"),
    "merge-keeps-latest-access": (_ACC + "test_ten_percent_hot_set_in_one_gib_is_found[1]",
                                  _REG + "test_merged_idle_time_lies_between_the_parts"),
    "split-piece-forgets-history": (_ACC + "test_all_cold_target", _REG + "test_split_pieces_inherit_the_idle_history"),
    "idle-time-not-advancing": (_ACC + "test_all_cold_target", _ACC + "test_non_resident_memory_is_neither_hot_nor_cold",
                                _IDLE + "test_monitor_finds_the_hot_megabyte"),
    "counters-not-reset": (_ACC + "test_all_hot_target", _ACC + "test_moving_hot_set_is_followed",
                           _SHARE + "test_user_space_engine_on_forked_workers[0]"),
    "sample-past-region-end": (_INV + "test_every_sampled_page_lies_in_its_region",),
    "shared-page-counts-2-over-n": (_PROC + "test_tally_counts_each_page_by_its_share",
                                    _PROC + "test_forked_copy_on_write_pages_count_by_share_on_this_kernel"),
    "zero-page-counted": (_PROC + "test_tally_counts_each_page_by_its_share", _PROC + "test_zero_page_is_not_resident"),
    "pagemap-last-page-unread": (_IDLE + "test_resident_bytes_exact_for_small_ranges",
                                 _IDLE + "test_resident_bytes_sampled_for_large_ranges"),
    "clear-refs-share-inverted": (_CURVES + "test_a_mapping_shared_by_four_counts_a_quarter_of_every_figure",),
    "clear-refs-growth-hidden": (_CURVES + "test_a_growing_pattern_shows_at_once",
                                 _CURVES + "test_at_the_defaults_a_load_that_starts_shows_within_one_aggregation_and_stays"),
    "clear-refs-unreached-horizon-published": (_CURVES + "test_nothing_is_idle_longer_than_it_was_watched",),
    "clear-refs-measured-at-last-read": (_CURVES + "test_last_exact_figure_is_kept_between_points_and_says_how_old_it_is",),
    "clear-refs-idle-not-capped": (_CURVES + "test_shapes_changing_keep_the_records_consistent_and_settle_exactly",),
    "clear-refs-freed-is-a-clear": (_CURVES + "test_freed_memory_is_no_foreign_clear",),
    "clear-refs-history-not-summed": (_CURVES + "test_idle_time_is_carried_past_one_clear_period",),
    "clear-refs-scaling-error-by-rss": (_CURVES + "test_share_scaling_error_bounds_every_split_of_the_touched_pages",
                                        _CURVES + "test_share_scaling_error_is_zero_where_every_page_weighs_alike"),
    "cold-age-strict-distribution": (_CURVES + "test_steady_pattern_is_exact_once_a_period_has_passed",
                                     _SHARE + "test_referenced_bytes_curves_of_forked_workers"),
    "working-set-window-inclusive-distribution": (
        _CURVES + "test_at_the_defaults_a_load_that_starts_shows_within_one_aggregation_and_stays",
        _SHARE + "test_referenced_bytes_curves_of_forked_workers"),
    "working-set-counts-never-seen": (_ACC + "test_all_cold_target",
                                      _STAT + "test_memory_never_seen_accessed_is_in_neither_figure_until_watched_long_enough",
                                      _SHARE + "test_memory_never_seen_accessed_stays_unknown_unless_someone_used_it"),
    "working-set-needs-two-hits": (_STAT + "test_regions_accessed_this_aggregation_are_in_the_working_set[False]",),
    "histogram-le-exclusive": (_ACC + "test_all_hot_target", _ACC + "test_idle_age_distribution_sums_to_resident"),
    "cold-weighted-by-region-size": (_ACC + "test_non_resident_memory_is_neither_hot_nor_cold",
                                     _ACC + "test_nothing_resident_gives_zero_ratio",
                                     _SHARE + "test_forked_workers_count_each_page_once_and_as_hot_as_its_users",
                                     _SHARE + "test_per_page_each_frame_is_the_mean_of_its_mappers_views",
                                     _SHARE + "test_per_page_unrelated_trees_at_one_address_keep_their_own_frames",
                                     _SHARE + "test_shared_memory_at_other_addresses_keeps_each_process_view"),
    "cold-age-strict": (_STAT + "test_memory_never_seen_accessed_is_in_neither_figure_until_watched_long_enough",),
    "working-set-error-zero": (_ACC + "test_all_cold_target",
                               _STAT + "test_edge_error_from_the_sampling_evidence",
                               _STAT + "test_a_member_by_an_earlier_hit_only_beside_one_in_use_may_be_all_idle",
                               _STAT + "test_unknown_memory_at_an_edge_counts_once",
                               _STAT + "test_error_is_the_sum_of_its_parts_up_to_resident",
                               _SHARE + "test_a_straddling_view_brings_its_doubt_with_it",
                               _SHARE + "test_per_page_access_of_a_parent_that_reads_nothing_is_its_workers_access",
                               _CURVES + "test_after_a_foreign_clear_nothing_from_before_it_is_published_as_known",
                               _CURVES + "test_the_summary_publishes_the_scaling_error"),
    "unproven-shortfalls-add-linearly": (_STAT + "test_alike_neighbours_and_gaps_are_no_error",
                                         _STAT + "test_edge_error_from_the_sampling_evidence"),
    "unproven-pieces-counted-apart": (_SHARE + "test_a_parent_that_reads_nothing_is_no_doubt_about_its_workers_pages",),
    "cold-error-zero": (_STAT + "test_edge_error_from_the_sampling_evidence",
                        _SHARE + "test_where_processes_disagree_the_error_says_so"),
    # (a lone process' members' edge doubt, 1 - f / f_ref, is never above what their own
    # samples leave unproven, 1 - f at best: the summary's own tests cannot see it; the
    # doubt a view carries to other processes' pieces of shared memory can)
    "edge-share-inverted": (_SHARE + "test_a_parent_that_reads_nothing_is_no_doubt_about_its_workers_pages",
                            _SHARE + "test_a_worker_that_paused_does_not_make_the_shared_memory_used"),
    "shared-piece-counted-twice": (
        _SHARE + "test_forked_workers_count_each_page_once_and_as_hot_as_its_users",
        _SHARE + "test_a_worker_using_more_than_the_others_keeps_its_own_memory_used",
        _SHARE + "test_two_readers_reaching_over_the_hot_edge_at_once_do_not_make_the_cold_memory_used",
        _SHARE + "test_two_readers_merged_over_the_whole_buffer_at_once_are_explained_by_a_third",
        _SHARE + "test_readers_hot_at_every_sample_are_never_explained_away",
        _SHARE + "test_many_workers_cut_differently_give_pieces_in_proportion_to_their_regions",
        _SHARE + "test_an_overshooting_straddler_is_cut_back_to_what_the_others_use",
        _SHARE + "test_without_the_rule_the_parent_would_call_its_share_of_hot_pages_cold",
        _SHARE + "test_pages_also_mapped_outside_the_target_count_in_proportion",
        _SHARE + "test_targets_never_add_up_to_more_than_the_machine_holds",
        _SHARE + "test_resident_bytes_are_kept_and_figures_stay_within_them",
        _SHARE + "test_user_space_engine_on_forked_workers[1]"),
    "shared-view-least-recent": (_SHARE + "test_forked_workers_count_each_page_once_and_as_hot_as_its_users",
                                 _SHARE + "test_user_space_engine_on_forked_workers[2]"),
    "private-memory-treated-as-shared": (_SHARE + "test_private_memory_is_untouched",
                                         _ACC + "test_multi_process_target_adds_up"),
    "promotion-age-strict": (_PROMO + "test_referenced_bytes_returns_within_a_quarter_at_twice_cold_age[10]",
                             _PROMO + "test_referenced_bytes_returns_on_the_clear_rhythm_stay_within_the_error[40]"),
    "promotion-idle-age-to-now": (_PROMO + "test_a_region_idle_for_a_minute_counts_once_when_it_comes_back",
                                  _PROMO + "test_short_idleness_is_a_return_but_not_a_promotion"),
    "promotion-in-use-ignored": (_PROMO + "test_a_region_growing_over_idle_memory_at_the_edge_of_use_brackets_no_return",),
    "promotion-unseen-use-ignored": (_PROMO + "test_hot_pages_a_split_finds_in_a_region_read_idle_bracket_no_return",),
    "promotion-old-first": (_PROMO + "test_hits_go_to_memory_idle_briefly_before_memory_idle_long",),
    "promotion-counted-twice": (_PROMO + "test_hits_go_to_memory_idle_briefly_before_memory_idle_long",),
    "promotion-in-use-is-a-return": (_PROMO + "test_steady_memory_returns_nothing",
                                     _PROMO + "test_freed_memory_leaves_and_new_memory_is_not_a_return",
                                     _PROMO + "test_buckets_are_cumulative_and_count_is_the_last"),
    "promotion-exited-process-kept": (_PROMO + "test_a_process_that_exits_takes_its_pending_returns_with_it",),
    "promotion-freed-memory-kept": (_PROMO + "test_reclaimed_memory_leaves_the_idle_history",),
    "promotion-settles-at-once": (_PROMO + "test_a_coarse_region_counts_what_its_splits_find_used",),
    "promotion-targets-never-forgotten": (_PROMO + "test_targets_that_leave_start_again_from_zero",),
    "promotion-counts-whole-region": (_PROMO + "test_a_revived_region_that_never_splits_counts_what_its_samples_saw",),
    "promotion-inherit-wrong-denominator": (_PROMO + "test_splits_and_merges_of_idle_memory_are_not_returns",),
    "referenced-first-interval-estimated": (
        _PROMO + "test_referenced_bytes_steady_with_clears_between_aggregations_is_nothing",),
    "referenced-closing-touches-ignored": (
        _PROMO + "test_referenced_bytes_first_touched_right_before_a_clear_are_counted",),
    "referenced-retouch-is-a-return": (
        _PROMO + "test_referenced_bytes_steady_with_clears_between_aggregations_is_nothing",),
    "windows-ignored": (_WIN + "test_a_scattered_hot_set_is_measured_by_its_pages_not_its_regions[0.3]",),
    "window-late-step-skips": (_WIN + "test_every_aggregation_publishes_a_window_read_then_when_steps_run_late",),
    "window-erased-by-a-sample": (_IDLE + "test_a_sample_marking_a_watched_page_keeps_what_the_window_saw",),
    "window-pages-unweighted": (_WIN + "test_stratum_weighs_pages_by_their_share",),
    "shared-share-after-a-gap": (_PROC + "test_tally_draws_shared_pages_alike_wherever_they_sit",),
    "file-offset-ignored": (_FILES + "test_pages_meet_at_their_file_offset_not_at_their_place_in_the_mapping",),
    "file-pages-judged-by-frames": (
        _FILES + "test_programs_that_map_one_file_are_one_memory_there_whatever_their_frames_elsewhere",),
    "quiet-proof-reaches-shared": (
        _CURVES + "test_a_process_that_stops_proves_nothing_of_shared_memory_or_without_its_threads_run_time[shared]",),
    "quiet-since-kept-across-runs": (
        _CURVES + "test_at_the_defaults_a_load_that_starts_shows_within_one_aggregation_and_stays",
        _CURVES + "test_at_the_defaults_a_load_that_ends_in_a_process_that_stops_falls_within_a_window_and_an_aggregation"),
    "referenced-old-bytes-first": (_PROMO + "test_referenced_bytes_first_touches_after_idle_since_the_clear",
                                   _PROMO + "test_referenced_bytes_steady_is_nothing",
                                   _PROMO + "test_referenced_bytes_warm_memory_is_no_return[5]"),
}

MUTANTS: tuple[Mutant, ...] = tuple(replace(m, killers=KILLERS[m.name]) for m in _MUTANTS)
assert set(KILLERS) == {m.name for m in _MUTANTS}, "every mutant has its killers, and only mutants do"

#: the accuracy tests on the host: each compares an engine's or the summary's figures with
#: a known truth, and each must be a killer of at least one mutant
#: (tests/mutation/test_mutant_registry.py): an assert no realistic bug can make fail checks
#: nothing
ACCURACY_TESTS: tuple[str, ...] = tuple(
    [_ACC + t for t in ("test_ten_percent_hot_set_in_one_gib_is_found", "test_moving_hot_set_is_followed",
                        "test_all_cold_target", "test_all_hot_target", "test_non_resident_memory_is_neither_hot_nor_cold",
                        "test_nothing_resident_gives_zero_ratio", "test_multi_process_target_adds_up",
                        "test_idle_age_distribution_sums_to_resident")]
    + [_STAT + t for t in ("test_edge_error_from_the_sampling_evidence",
                           "test_a_member_by_an_earlier_hit_only_beside_one_in_use_may_be_all_idle",
                           "test_alike_neighbours_and_gaps_are_no_error",
                           "test_memory_never_seen_accessed_is_in_neither_figure_until_watched_long_enough",
                           "test_unknown_memory_at_an_edge_counts_once", "test_error_is_the_sum_of_its_parts_up_to_resident",
                           "test_regions_accessed_this_aggregation_are_in_the_working_set")]
    + [_SHARE + t for t in (
        "test_forked_workers_count_each_page_once_and_as_hot_as_its_users",
        "test_a_parent_that_reads_nothing_is_no_doubt_about_its_workers_pages",
        "test_a_straddling_view_brings_its_doubt_with_it", "test_a_worker_that_paused_does_not_make_the_shared_memory_used",
        "test_a_worker_using_more_than_the_others_keeps_its_own_memory_used",
        "test_two_readers_reaching_over_the_hot_edge_at_once_do_not_make_the_cold_memory_used",
        "test_two_readers_merged_over_the_whole_buffer_at_once_are_explained_by_a_third",
        "test_readers_hot_at_every_sample_are_never_explained_away",
        "test_many_workers_cut_differently_give_pieces_in_proportion_to_their_regions",
        "test_an_overshooting_straddler_is_cut_back_to_what_the_others_use",
        "test_where_processes_disagree_the_error_says_so", "test_per_page_each_frame_is_the_mean_of_its_mappers_views",
        "test_per_page_unrelated_trees_at_one_address_keep_their_own_frames",
        "test_per_page_access_of_a_parent_that_reads_nothing_is_its_workers_access",
        "test_without_the_rule_the_parent_would_call_its_share_of_hot_pages_cold",
        "test_pages_also_mapped_outside_the_target_count_in_proportion",
        "test_targets_never_add_up_to_more_than_the_machine_holds", "test_private_memory_is_untouched",
        "test_shared_memory_at_other_addresses_keeps_each_process_view",
        "test_memory_never_seen_accessed_stays_unknown_unless_someone_used_it",
        "test_referenced_bytes_curves_of_forked_workers", "test_resident_bytes_are_kept_and_figures_stay_within_them",
        "test_user_space_engine_on_forked_workers")]
    + [_PROMO + t for t in (
        "test_steady_memory_returns_nothing", "test_a_region_idle_for_a_minute_counts_once_when_it_comes_back",
        "test_short_idleness_is_a_return_but_not_a_promotion", "test_a_coarse_region_counts_what_its_splits_find_used",
        "test_a_revived_region_that_never_splits_counts_what_its_samples_saw",
        "test_splits_and_merges_of_idle_memory_are_not_returns", "test_freed_memory_leaves_and_new_memory_is_not_a_return",
        "test_reclaimed_memory_leaves_the_idle_history",
        "test_a_region_growing_over_idle_memory_at_the_edge_of_use_brackets_no_return",
        "test_a_process_that_exits_takes_its_pending_returns_with_it", "test_targets_that_leave_start_again_from_zero",
        "test_buckets_are_cumulative_and_count_is_the_last", "test_referenced_bytes_first_touches_after_idle_since_the_clear",
        "test_referenced_bytes_steady_is_nothing", "test_referenced_bytes_steady_with_clears_between_aggregations_is_nothing",
        "test_referenced_bytes_returns_within_a_quarter_at_twice_cold_age",
        "test_referenced_bytes_returns_on_the_clear_rhythm_stay_within_the_error",
        "test_referenced_bytes_warm_memory_is_no_return")]
    + [_CURVES + t for t in (
        "test_steady_pattern_is_exact_once_a_period_has_passed",
        "test_a_mapping_shared_by_four_counts_a_quarter_of_every_figure", "test_nothing_is_idle_longer_than_it_was_watched",
        "test_last_exact_figure_is_kept_between_points_and_says_how_old_it_is", "test_a_growing_pattern_shows_at_once",
        "test_freed_memory_is_no_foreign_clear", "test_after_a_foreign_clear_nothing_from_before_it_is_published_as_known",
        "test_shapes_changing_keep_the_records_consistent_and_settle_exactly",
        "test_idle_time_is_carried_past_one_clear_period",
        "test_share_scaling_error_is_zero_where_every_page_weighs_alike",
        "test_share_scaling_error_bounds_every_split_of_the_touched_pages", "test_the_summary_publishes_the_scaling_error",
        "test_at_the_defaults_a_load_that_starts_shows_within_one_aggregation_and_stays")]
    + [_IDLE + t for t in ("test_monitor_finds_the_hot_megabyte", "test_resident_bytes_exact_for_small_ranges",
                           "test_resident_bytes_sampled_for_large_ranges")]
    + [_PROC + t for t in ("test_tally_counts_each_page_by_its_share",
                           "test_forked_copy_on_write_pages_count_by_share_on_this_kernel", "test_zero_page_is_not_resident")]
    + [_BUDGET + "test_steady_pattern_reads_the_same_while_the_budget_acts"]
    + [_WIN + "test_a_scattered_hot_set_is_measured_by_its_pages_not_its_regions",
       _WIN + "test_stratum_weighs_pages_by_their_share"]
)

BY_NAME = {m.name: m for m in MUTANTS}

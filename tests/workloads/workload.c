/*
 * A memory workload whose access pattern is known exactly: the ground truth for the
 * real-kernel tests of the access backends (tests/vm/) and for bench/kernel_damon_compare.py.
 *
 * Every byte of the buffer is made resident first (one write per page), then only the "hot"
 * part is touched, continuously: one write per 4 KiB page, pass after pass, with a short
 * sleep between passes so that the workload does not eat a whole (emulated) CPU. Everything
 * else stays resident and untouched, so at any time
 *     working set = hot bytes,   cold bytes = buffer bytes - hot bytes.
 *
 * When a process is ready it prints one line to stdout (a single write(2), so lines of
 * several processes sharing the pipe never interleave):
 *     READY {"pid":P,"kind":"buffer","addr":A,"size":S,"hot_addr":H,"hot_size":N,...}
 * and when its hot part moves:
 *     MOVED {"pid":P,"hot_addr":H,"hot_size":N}
 *
 * Options (sizes in MiB unless stated):
 *   --size N          buffer size (default 128)
 *   --hot N           hot part size (default 32)
 *   --hot-offset N    where the hot part starts inside the buffer (default: size - hot, i.e.
 *                     the top of the buffer, next to the libraries above it, which are hot
 *                     too: a monitoring region straddling that edge then straddles nothing
 *                     cold, and the buffer's truth is not blurred by the process' own code)
 *   --thp             2 MiB-aligned buffer with MADV_HUGEPAGE (otherwise MADV_NOHUGEPAGE)
 *   --move-to N       on SIGUSR1, or after --move-after seconds, the hot part moves here
 *   --move-after SEC  see --move-to (fractional seconds allowed)
 *   --zero N          also map N MiB that are only ever *read*: anonymous read faults map
 *                     the shared zero page, which is on no LRU list and refuses the idle mark
 *   --maps N          instead of one buffer, N mappings of --map-kib KiB separated by
 *                     one-page holes; the last --hot-maps (in address order) are hot
 *   --map-kib N       size of each mapping for --maps (default 256)
 *   --hot-maps N      hot mappings for --maps (default N/4)
 *   --procs N         fork N children, each running the workload with its own buffer (the
 *                     children map it after the fork, from identical address spaces: every
 *                     child's buffer has the same virtual address)
 *   --hot-step N      with --procs: child i's hot part is --hot + i * N MiB (so that children
 *                     with overlapping addresses still have different truths)
 *   --readers N       the parent writes the whole buffer, then forks N children that only
 *                     *read* its hot part, pass after pass: the buffer's pages stay shared
 *                     copy-on-write by all N + 1 processes (gunicorn --preload, PostgreSQL
 *                     backends, Redis' fork), so for the group of them
 *                         resident = buffer bytes, working set = hot bytes (once, not N times);
 *                     the parent prints READY with "readers":N and then touches nothing
 *   --rewrite         with --readers: the parent writes every page of its buffer once after
 *                     forking them (copy-on-write broken: its pages are its own), then idles
 *   --reader-name S, --renamed-readers K   the last K readers rename themselves S (their
 *                     comm): the same shared pages, mapped by two programs (two targets)
 *   --revive N        cold memory that comes back: after --revive-after seconds of the hot
 *                     loop, every --revive-every seconds the next N MiB of the cold part
 *                     (from the bottom of the buffer up, each chunk untouched since it was
 *                     made resident) is written with the hot part for --revive-for seconds,
 *                     then left alone again; each start prints
 *                         REVIVED {"pid":P,"addr":A,"size":S,"t":T}
 *                     (T: seconds into the hot loop), so the bytes that came back and how
 *                     long they had been idle are known exactly
 *   --revive-after SEC, --revive-every SEC, --revive-for SEC   (defaults 30, 10, 4)
 *   --exit-after SEC  exit (status 0) after SEC seconds of the hot loop
 *   --period-us N     sleep between two passes over the hot part (default 5000: ~20 passes per
 *                     100 ms sample, at a CPU cost an emulated guest can afford)
 *   --no-tlb-flush    do not flush the TLB after each pass (see flush_tlb(): under QEMU TCG
 *                     the hot set then looks idle)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MiB (1024UL * 1024UL)
#define PAGE 4096UL
#define HPAGE (2 * MiB)

struct opts {
	unsigned long size, hot, move_to, zero, map_kib, hot_step, revive;
	long hot_offset; /* -1: size - hot */
	int thp, move, maps, hot_maps, procs, no_tlb_flush, readers, renamed_readers, rewrite;
	const char *reader_name;
	double move_after, exit_after, revive_after, revive_every, revive_for;
	long period_us;
};

static volatile sig_atomic_t move_requested;

static void on_usr1(int sig)
{
	(void)sig;
	move_requested = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void usage(const char *msg)
{
	fprintf(stderr, "workload: %s (see the comment at the top of workload.c)\n", msg);
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One line in one write(2): atomic on a pipe up to PIPE_BUF bytes. */
static void say(const char *line)
{
	size_t len = strlen(line), off = 0;
	while (off < len) {
		ssize_t n = write(1, line + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("write stdout");
		}
		off += (size_t)n;
	}
}

/*
 * Write (never read first) one byte per page. A read fault on untouched anonymous memory maps
 * the shared zero page (the huge zero page under THP), and the write fault that follows
 * then gets 4 KiB pages even in a MADV_HUGEPAGE area: store-only keeps huge pages huge.
 */
static void touch(volatile char *p, unsigned long len)
{
	static char value;
	value++;
	for (unsigned long off = 0; off < len; off += PAGE)
		p[off] = value;
}

/*
 * The emulator's TLB problem. page_idle (and kernel DAMON) clear a page's accessed bit
 * without flushing the TLB; the CPU sets the bit again on the next access only once the
 * TLB entry is gone. A real CPU's TLB holds a few thousand entries, so a hot set larger
 * than that is re-walked (and re-marked accessed) on every pass. QEMU's TCG software TLB
 * holds millions and is only dropped on a flush, and a process that merely sleeps between
 * passes keeps its TLB (the idle task borrows the mm): under TCG the hot set then looks idle.
 * So, like a real CPU's TLB capacity would, the workload forces a TLB flush of its own mm
 * once per pass: an mprotect of FLUSH_PAGES populated pages, above the kernel's
 * tlb_single_page_flush_ceiling (33), makes x86 flush the whole TLB of this mm.
 * The pages are MAP_SHARED so that their VMA never merges with the buffer's.
 */
#define FLUSH_PAGES 40
static char *flush_block;

static void flush_tlb(void)
{
	if (!flush_block)
		return;
	if (mprotect(flush_block, FLUSH_PAGES * PAGE, PROT_READ) != 0 ||
	    mprotect(flush_block, FLUSH_PAGES * PAGE, PROT_READ | PROT_WRITE) != 0)
		die("mprotect flush block");
}

static void setup_flush_block(void)
{
	flush_block = mmap(NULL, FLUSH_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (flush_block == MAP_FAILED)
		die("mmap flush block");
	touch(flush_block, FLUSH_PAGES * PAGE);
}

static char *map_buffer(unsigned long size, int thp)
{
	unsigned long len = size + (thp ? HPAGE : 0);
	char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		die("mmap buffer");
	char *buf = raw;
	if (thp) {
		/* align to 2 MiB and give back the slack, so the VMA is exactly the buffer */
		buf = (char *)(((uintptr_t)raw + HPAGE - 1) & ~(HPAGE - 1));
		if (buf > raw)
			munmap(raw, (unsigned long)(buf - raw));
		unsigned long tail = (unsigned long)(raw + len - (buf + size));
		if (tail)
			munmap(buf + size, tail);
	}
	if (madvise(buf, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
		die("madvise");
	return buf;
}

static void hot_loop(const struct opts *o, volatile char *buf, unsigned long hot_addr_off,
		     unsigned long hot_len, const char *extra_ready)
{
	char line[512];
	snprintf(line, sizeof line,
		 "READY {\"pid\":%d,\"kind\":\"buffer\",\"addr\":%lu,\"size\":%lu,\"hot_addr\":%lu,"
		 "\"hot_size\":%lu,\"thp\":%d%s}\n",
		 getpid(), (unsigned long)buf, o->size, (unsigned long)buf + hot_addr_off, hot_len,
		 o->thp, extra_ready);
	say(line);
	double start = now();
	int moved = 0;
	unsigned long next_chunk = 0; /* revive: offset of the next chunk in the buffer */
	long chunk = -1;              /* the chunk being revived now, or -1 */
	double chunk_until = 0, next_revival = o->revive_after;
	for (;;) {
		touch(buf + hot_addr_off, hot_len);
		double t = now() - start;
		if (o->revive) {
			if (chunk < 0 && t >= next_revival && next_chunk + o->revive * MiB <= hot_addr_off) {
				chunk = (long)next_chunk;
				next_chunk += o->revive * MiB;
				chunk_until = t + o->revive_for;
				next_revival += o->revive_every;
				snprintf(line, sizeof line, "REVIVED {\"pid\":%d,\"addr\":%lu,\"size\":%lu,\"t\":%.3f}\n",
					 getpid(), (unsigned long)buf + (unsigned long)chunk, o->revive * MiB, t);
				say(line);
			}
			if (chunk >= 0) {
				touch(buf + chunk, o->revive * MiB);
				if (t >= chunk_until)
					chunk = -1;
			}
		}
		flush_tlb();
		if (o->exit_after > 0 && t >= o->exit_after)
			exit(0);
		if (o->move && !moved && (move_requested || (o->move_after > 0 && t >= o->move_after))) {
			moved = 1;
			hot_addr_off = o->move_to;
			snprintf(line, sizeof line, "MOVED {\"pid\":%d,\"hot_addr\":%lu,\"hot_size\":%lu}\n",
				 getpid(), (unsigned long)buf + hot_addr_off, hot_len);
			say(line);
		}
		if (o->period_us > 0)
			usleep((useconds_t)o->period_us);
	}
}

/* Read (never write: a write would copy the page) one byte per page. */
static void read_pages(volatile const char *p, unsigned long len)
{
	static volatile char sink;
	for (unsigned long off = 0; off < len; off += PAGE)
		sink += p[off];
}

static void run_readers(const struct opts *o)
{
	char *buf = map_buffer(o->size, o->thp);
	touch(buf, o->size);
	char line[256];
	for (int i = 0; i < o->readers; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
			if (o->reader_name && i >= o->readers - o->renamed_readers)
				prctl(PR_SET_NAME, o->reader_name); /* another program, for another target */
			snprintf(line, sizeof line, "READY {\"pid\":%d,\"kind\":\"reader\",\"addr\":%lu,\"size\":%lu,"
				 "\"hot_addr\":%lu,\"hot_size\":%lu}\n",
				 getpid(), (unsigned long)buf, o->size, (unsigned long)buf + o->hot_offset, o->hot);
			say(line);
			double start = now();
			for (;;) {
				read_pages(buf + o->hot_offset, o->hot);
				flush_tlb();
				if (o->exit_after > 0 && now() - start >= o->exit_after)
					exit(0);
				if (o->period_us > 0)
					usleep((useconds_t)o->period_us);
			}
		}
	}
	if (o->rewrite) /* copy-on-write broken: the parent's pages become its own */
		touch(buf, o->size);
	snprintf(line, sizeof line, "READY {\"pid\":%d,\"kind\":\"shared\",\"addr\":%lu,\"size\":%lu,"
		 "\"hot_addr\":%lu,\"hot_size\":%lu,\"readers\":%d}\n",
		 getpid(), (unsigned long)buf, o->size, (unsigned long)buf + o->hot_offset, o->hot, o->readers);
	say(line);
	int status, failed = 0;
	while (wait(&status) > 0) /* the parent touches nothing of the buffer again */
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	exit(failed);
}

static void run_buffer(const struct opts *o)
{
	char *buf = map_buffer(o->size, o->thp);
	touch(buf, o->size);
	char extra[160] = "";
	if (o->zero) {
		char *z = map_buffer(o->zero, 0);
		volatile char sink = 0;
		for (unsigned long off = 0; off < o->zero; off += PAGE)
			sink += ((volatile char *)z)[off];
		(void)sink;
		snprintf(extra, sizeof extra, ",\"zero_addr\":%lu,\"zero_size\":%lu", (unsigned long)z, o->zero);
	}
	hot_loop(o, buf, o->hot_offset, o->hot, extra);
}

static void run_maps(const struct opts *o)
{
	unsigned long each = o->map_kib * 1024UL, stride = each + PAGE;
	unsigned long total = stride * (unsigned long)o->maps;
	char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap maps");
	/* punch one-page holes: N separate VMAs that can never merge back */
	for (int i = 0; i < o->maps; i++)
		if (munmap(base + i * stride + each, PAGE) != 0)
			die("munmap hole");
	for (int i = 0; i < o->maps; i++) {
		madvise(base + i * stride, each, MADV_NOHUGEPAGE);
		touch(base + i * stride, each);
	}
	char line[256];
	snprintf(line, sizeof line,
		 "READY {\"pid\":%d,\"kind\":\"maps\",\"addr\":%lu,\"stride\":%lu,\"map_size\":%lu,"
		 "\"maps\":%d,\"hot_maps\":%d}\n",
		 getpid(), (unsigned long)base, stride, each, o->maps, o->hot_maps);
	say(line);
	double start = now();
	for (;;) {
		for (int i = o->maps - o->hot_maps; i < o->maps; i++)
			touch(base + i * stride, each);
		flush_tlb();
		if (o->exit_after > 0 && now() - start >= o->exit_after)
			exit(0);
		if (o->period_us > 0)
			usleep((useconds_t)o->period_us);
	}
}

static unsigned long mib_arg(const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (*end || v < 0)
		usage("sizes are non-negative numbers of MiB");
	return (unsigned long)(v * MiB) & ~(PAGE - 1);
}

int main(int argc, char **argv)
{
	struct opts o = {.size = 128 * MiB, .hot = 32 * MiB, .hot_offset = -1, .map_kib = 256, .hot_maps = -1,
			 .period_us = 5000, .revive_after = 30, .revive_every = 10, .revive_for = 4};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) usage("option needs a value"); i++; } while (0)
		if (!strcmp(a, "--size")) { NEEDV(); o.size = mib_arg(v); }
		else if (!strcmp(a, "--hot")) { NEEDV(); o.hot = mib_arg(v); }
		else if (!strcmp(a, "--hot-offset")) { NEEDV(); o.hot_offset = (long)mib_arg(v); }
		else if (!strcmp(a, "--thp")) o.thp = 1;
		else if (!strcmp(a, "--move-to")) { NEEDV(); o.move_to = mib_arg(v); o.move = 1; }
		else if (!strcmp(a, "--move-after")) { NEEDV(); o.move_after = atof(v); }
		else if (!strcmp(a, "--zero")) { NEEDV(); o.zero = mib_arg(v); }
		else if (!strcmp(a, "--maps")) { NEEDV(); o.maps = atoi(v); }
		else if (!strcmp(a, "--map-kib")) { NEEDV(); o.map_kib = strtoul(v, NULL, 10); }
		else if (!strcmp(a, "--hot-maps")) { NEEDV(); o.hot_maps = atoi(v); }
		else if (!strcmp(a, "--procs")) { NEEDV(); o.procs = atoi(v); }
		else if (!strcmp(a, "--hot-step")) { NEEDV(); o.hot_step = mib_arg(v); }
		else if (!strcmp(a, "--exit-after")) { NEEDV(); o.exit_after = atof(v); }
		else if (!strcmp(a, "--reader-name")) { NEEDV(); o.reader_name = v; }
		else if (!strcmp(a, "--renamed-readers")) { NEEDV(); o.renamed_readers = atoi(v); }
		else if (!strcmp(a, "--revive")) { NEEDV(); o.revive = strtoul(v, NULL, 10); }
		else if (!strcmp(a, "--revive-after")) { NEEDV(); o.revive_after = atof(v); }
		else if (!strcmp(a, "--revive-every")) { NEEDV(); o.revive_every = atof(v); }
		else if (!strcmp(a, "--revive-for")) { NEEDV(); o.revive_for = atof(v); }
		else if (!strcmp(a, "--period-us")) { NEEDV(); o.period_us = atol(v); }
		else if (!strcmp(a, "--no-tlb-flush")) o.no_tlb_flush = 1;
		else if (!strcmp(a, "--readers")) { NEEDV(); o.readers = atoi(v); }
		else if (!strcmp(a, "--rewrite")) o.rewrite = 1;
		else usage("unknown option");
#undef NEEDV
	}
	int default_offset = o.hot_offset < 0;
	if (o.procs > 0 && o.hot + (unsigned long)(o.procs - 1) * o.hot_step > o.size)
		usage("--hot plus the --hot-step of the last child exceeds --size");
	if (o.hot_offset < 0)
		o.hot_offset = o.hot <= o.size ? (long)(o.size - o.hot) : 0;
	if (o.maps == 0 && (o.size == 0 || (unsigned long)o.hot_offset + o.hot > o.size ||
			    (o.move && o.move_to + o.hot > o.size)))
		usage("the hot part must lie inside the buffer");
	if (o.thp && (o.size % HPAGE || (unsigned long)o.hot_offset % HPAGE || o.move_to % HPAGE))
		usage("with --thp, sizes and offsets must be multiples of 2 MiB");
	if (o.maps > 0 && o.hot_maps < 0)
		o.hot_maps = o.maps / 4;
	if (o.hot_maps > o.maps)
		usage("--hot-maps exceeds --maps");

	if (!o.no_tlb_flush)
		setup_flush_block();
	struct sigaction sa = {.sa_handler = on_usr1};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);

	if (o.readers > 0)
		run_readers(&o);
	if (o.procs > 0) {
		for (int i = 0; i < o.procs; i++) {
			pid_t pid = fork();
			if (pid < 0)
				die("fork");
			if (pid == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
				o.hot += (unsigned long)i * o.hot_step;
				if (default_offset)
					o.hot_offset = (long)(o.size - o.hot);
				if (o.maps > 0)
					run_maps(&o);
				else
					run_buffer(&o);
				return 0;
			}
		}
		/* the parent only waits: it owns no buffer of its own */
		int status, failed = 0;
		while (wait(&status) > 0)
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				failed = 1;
		return failed;
	}
	if (o.maps > 0)
		run_maps(&o);
	else
		run_buffer(&o);
	return 0;
}

/*
 * The syscall floor of bench/engine_bench.py: the same system calls the Python backends make,
 * from C, with nothing else around them. What Python adds is the difference.
 * Built by the bench with gcc -O2 into a temp dir. All times are printed in nanoseconds.
 *
 *   floor hold MAPPED_MIB TOUCH_STRIDE_KIB
 *       mmap MAPPED_MIB of private anonymous memory (MAP_NORESERVE, no THP), write one byte
 *       every TOUCH_STRIDE_KIB KiB (4 = everything resident), print "ready <addr>", then
 *       block until stdin closes (the bench holds the pipe). Any size works: 64 GiB of
 *       address space costs nothing but page tables for the touched part.
 *   floor clear_refs PID ITERS
 *       per iteration: write "1" to /proc/PID/clear_refs (fd kept open), read the whole
 *       /proc/PID/smaps (open, read, close) and sum its Referenced: lines.
 *   floor page_idle PID BITMAP START END N ITERS
 *       per iteration and each of N addresses spread over [START, END): prepare = pread
 *       pagemap, pread kpageflags of the PFN, pwrite the bitmap word; check = pread pagemap,
 *       pread the bitmap word. BITMAP is the idle bitmap path (a stand-in file on kernels
 *       without CONFIG_IDLE_PAGE_TRACKING).
 *   floor fullscan PID START END ITERS
 *       read every pagemap entry of [START, END) in 1 MiB chunks and count present pages.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + t.tv_nsec;
}

static int open_proc(const char *pid, const char *file, int flags)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%s/%s", pid, file);
	int fd = open(path, flags);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	return fd;
}

static int hold(unsigned long mapped_mib, unsigned long stride_kib)
{
	unsigned long size = mapped_mib << 20, stride = stride_kib << 10;
	char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	madvise(m, size, MADV_NOHUGEPAGE);
	for (unsigned long off = 0; off < size; off += stride)
		m[off] = 1;
	printf("ready %lx\n", (unsigned long)m);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0)
		;
	return 0;
}

static int clear_refs(const char *pid, long iters)
{
	static char buf[1 << 16];
	int cfd = open_proc(pid, "clear_refs", O_WRONLY);
	unsigned long referenced = 0;
	uint64_t t0 = now_ns();
	for (long i = 0; i < iters; i++) {
		if (write(cfd, "1", 1) != 1)
			return 1;
		int fd = open_proc(pid, "smaps", O_RDONLY);
		ssize_t n;
		size_t have = 0;
		/* keep a partial line across reads: Referenced: lines must be seen whole */
		while ((n = read(fd, buf + have, sizeof(buf) - have - 1)) > 0) {
			have += n;
			buf[have] = 0;
			char *line = buf, *nl;
			while ((nl = strchr(line, '\n'))) {
				if (!strncmp(line, "Referenced:", 11))
					referenced += strtoul(line + 11, NULL, 10);
				line = nl + 1;
			}
			have = buf + have - line;
			memmove(buf, line, have);
		}
		close(fd);
	}
	uint64_t dt = now_ns() - t0;
	printf("%.0f %lu\n", (double)dt / iters, referenced / (unsigned long)iters);
	return 0;
}

static int page_idle(const char *pid, const char *bitmap, unsigned long start, unsigned long end, long n, long iters)
{
	int pm = open_proc(pid, "pagemap", O_RDONLY);
	int kpf = open("/proc/kpageflags", O_RDONLY);
	int bm = open(bitmap, O_RDWR);
	if (kpf < 0 || bm < 0) {
		perror("kpageflags/bitmap");
		return 1;
	}
	unsigned long *addrs = calloc(n, sizeof(*addrs)), *pfns = calloc(n, sizeof(*pfns));
	unsigned long span = (end - start) / PAGE, seed = 12345;
	for (long i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		addrs[i] = start + ((span * i / n) + (seed >> 33) % (span / n ? span / n : 1)) * PAGE;
	}
	uint64_t e, f, w = ~0ULL;
	long present = 0;
	uint64_t t0 = now_ns();
	for (long it = 0; it < iters; it++) {
		for (long i = 0; i < n; i++) {
			pread(pm, &e, 8, addrs[i] / PAGE * 8);
			pfns[i] = (e & PM_PRESENT) ? (e & PM_PFN_MASK) : 0;
			if (!pfns[i])
				continue;
			pread(kpf, &f, 8, pfns[i] * 8);
			pwrite(bm, &w, 8, pfns[i] / 64 * 8);
		}
		for (long i = 0; i < n; i++) {
			pread(pm, &e, 8, addrs[i] / PAGE * 8);
			if (!pfns[i])
				continue;
			pread(bm, &f, 8, pfns[i] / 64 * 8);
			present++;
		}
	}
	uint64_t dt = now_ns() - t0;
	printf("%.0f %ld\n", (double)dt / (iters * n), present / iters);
	return 0;
}

static int fullscan(const char *pid, unsigned long start, unsigned long end, long iters)
{
	enum { CHUNK = 1 << 20 };
	static uint64_t buf[CHUNK / 8];
	int pm = open_proc(pid, "pagemap", O_RDONLY);
	unsigned long present = 0;
	uint64_t t0 = now_ns();
	for (long it = 0; it < iters; it++) {
		for (unsigned long off = start / PAGE * 8; off < end / PAGE * 8; off += CHUNK) {
			size_t want = end / PAGE * 8 - off < CHUNK ? end / PAGE * 8 - off : CHUNK;
			ssize_t n = pread(pm, buf, want, off);
			for (ssize_t i = 0; i < n / 8; i++)
				present += buf[i] >> 63;
		}
	}
	uint64_t dt = now_ns() - t0;
	printf("%.0f %lu\n", (double)dt / iters, present / iters);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "hold"))
		return hold(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
	if (argc >= 4 && !strcmp(argv[1], "clear_refs"))
		return clear_refs(argv[2], atol(argv[3]));
	if (argc >= 8 && !strcmp(argv[1], "page_idle"))
		return page_idle(argv[2], argv[3], strtoul(argv[4], NULL, 0), strtoul(argv[5], NULL, 0), atol(argv[6]), atol(argv[7]));
	if (argc >= 6 && !strcmp(argv[1], "fullscan"))
		return fullscan(argv[2], strtoul(argv[3], NULL, 0), strtoul(argv[4], NULL, 0), atol(argv[5]));
	fprintf(stderr, "usage: see the comment at the top of floor.c\n");
	return 2;
}

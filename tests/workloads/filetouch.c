/* Pages of a file read on a rhythm, for the reclaim-cost bench (bench/clear_refs_reclaim_bench.py):
 * how often reclaim evicts memory that is in use when its accessed bits are cleared.
 * Usage: filetouch FILE OFFSET_MIB SIZE_MIB PERIOD_MS [READ_MIB]
 * Maps SIZE_MIB of FILE from OFFSET_MIB (read-only, shared: page cache, which reclaim can
 * evict without swap), reads one byte of every page, prints "ready", then reads every page
 * of the mapping's first READ_MIB (all of it by default) again once per PERIOD_MS, flushing
 * its TLB after each pass as tests/workloads/workload.c does (under QEMU TCG a hot set that
 * fits the software TLB never gets its accessed bits set again). Exits when its parent
 * goes away. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static unsigned long pass(const volatile char *base, unsigned long size)
{
	unsigned long sum = 0;
	for (unsigned long off = 0; off < size; off += PAGE)
		sum += base[off];
	return sum;
}

/* Changing the protection of 40 pages (above tlb_single_page_flush_ceiling) flushes this
 * mm's whole TLB. */
#define FLUSH_PAGES 40

static void flush_tlb(char *block)
{
	mprotect(block, FLUSH_PAGES * PAGE, PROT_READ);
	mprotect(block, FLUSH_PAGES * PAGE, PROT_READ | PROT_WRITE);
}

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	unsigned long off = strtoul(argv[2], NULL, 10) << 20;
	unsigned long size = strtoul(argv[3], NULL, 10) << 20;
	long period_ms = atol(argv[4]);
	unsigned long hot = argc > 5 ? strtoul(argv[5], NULL, 10) << 20 : size;
	if (hot > size)
		hot = size;
	pid_t parent = getppid();
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0)
		return 1;
	const char *base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, off);
	if (base == MAP_FAILED)
		return 1;
	madvise((void *)base, size, MADV_NOHUGEPAGE);
	char *block = mmap(NULL, FLUSH_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (block == MAP_FAILED)
		return 1;
	for (unsigned long off = 0; off < FLUSH_PAGES * PAGE; off += PAGE)
		block[off] = 1;
	unsigned long sum = pass(base, size);
	printf("ready %lu\n", sum & 1);
	fflush(stdout);
	struct timespec t = {period_ms / 1000, (period_ms % 1000) * 1000000L};
	while (getppid() == parent) {
		nanosleep(&t, NULL);
		sum += pass(base, hot);
		flush_tlb(block);
	}
	return (int)(sum & 0);
}

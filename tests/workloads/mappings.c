/* Host test child (clear_refs backend, snapshot command): N anonymous mappings of SIZE MiB
 * each, separated by PROT_NONE guard pages so the kernel keeps them as N separate VMAs (the
 * clear_refs backend sees one mapping as one region). All are touched once (made resident);
 * then the first HOT ones are written continuously, one byte per page, one pass every 20 ms.
 * Prints "ready <addr of mapping 0> ... <addr of mapping N-1>" once everything is resident.
 * Usage: mappings N SIZE_MIB HOT [EXIT_AFTER_MS]
 * Exits when its parent goes away, or after EXIT_AFTER_MS when given (> 0).
 * (workload.c beside it is the VM suite's richer workload.) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	int n = atoi(argv[1]), hot = atoi(argv[3]);
	unsigned long size = strtoul(argv[2], NULL, 10) << 20;
	long exit_after_ms = argc > 4 ? atol(argv[4]) : 0;
	pid_t parent = getppid();
	unsigned long stride = size + PAGE;
	char *base = mmap(NULL, PAGE + n * stride, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return 1;
	printf("ready");
	for (int i = 0; i < n; i++) {
		char *m = base + PAGE + i * stride;
		if (mprotect(m, size, PROT_READ | PROT_WRITE))
			return 1;
		madvise(m, size, MADV_NOHUGEPAGE);
		for (unsigned long off = 0; off < size; off += PAGE)
			m[off] = 1;
		printf(" %lx", (unsigned long)m);
	}
	printf("\n");
	fflush(stdout);
	struct timespec t0, now, nap = {0, 20 * 1000 * 1000};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		for (int i = 0; i < hot; i++) {
			volatile char *m = base + PAGE + i * stride;
			for (unsigned long off = 0; off < size; off += PAGE)
				m[off]++;
		}
		nanosleep(&nap, NULL);
		if (getppid() != parent)
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (exit_after_ms > 0 && (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 >= exit_after_ms)
			return 0;
	}
}

/* Test child of the snapshot command tests: N anonymous mappings of SIZE_MIB MiB each,
 * separated by PROT_NONE guard pages so that the kernel keeps them as N separate VMAs (the
 * clear_refs backend sees one mapping as one region). Every page is written once, then the
 * first HOT mappings are written again, one byte per page, every 10 ms, forever.
 * Prints "ready <pid>" when everything is resident. Exits when its parent goes away.
 * Usage: mapper N SIZE_MIB HOT */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int n = atoi(argv[1]), hot = atoi(argv[3]);
	unsigned long size = strtoul(argv[2], NULL, 10) << 20, stride = size + PAGE;
	pid_t parent = getppid();
	char *base = mmap(NULL, PAGE + n * stride, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return 1;
	for (int i = 0; i < n; i++) {
		char *m = base + PAGE + i * stride;
		if (mprotect(m, size, PROT_READ | PROT_WRITE))
			return 1;
		madvise(m, size, MADV_NOHUGEPAGE);
		for (unsigned long off = 0; off < size; off += PAGE)
			m[off] = 1;
	}
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	struct timespec nap = {0, 10 * 1000 * 1000};
	for (;;) {
		for (int i = 0; i < hot; i++) {
			volatile char *m = base + PAGE + i * stride;
			for (unsigned long off = 0; off < size; off += PAGE)
				m[off]++;
		}
		nanosleep(&nap, NULL);
		if (getppid() != parent)
			return 0;
	}
}

/* A buffer whose pages are accessed only when the test says so, for tests that run an engine
 * on an injected clock against a real process: the test decides what is accessed in each
 * virtual sample interval, the kernel sets the real accessed bits.
 * Usage: touch SIZE_MIB
 * Maps SIZE_MIB anonymous (4 KiB pages: MADV_NOHUGEPAGE), writes every page once, prints
 * "ready <start> <end>" (hex). Then for each line on stdin of pairs "A B ..." (KiB offsets
 * into the buffer) writes one byte in every page of each [A, B), and prints "ok <pages>".
 * Exits at end of input. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096UL

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	unsigned long size = strtoul(argv[1], NULL, 10) << 20;
	char *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return 1;
	madvise(base, size, MADV_NOHUGEPAGE);
	for (unsigned long off = 0; off < size; off += PAGE)
		base[off] = 1;
	printf("ready %lx %lx\n", (unsigned long)base, (unsigned long)base + size);
	fflush(stdout);
	char line[4096];
	while (fgets(line, sizeof line, stdin)) {
		unsigned long pages = 0;
		char *p = line, *end;
		for (;;) {
			unsigned long a = strtoul(p, &end, 10);
			if (end == p)
				break;
			p = end;
			unsigned long b = strtoul(p, &end, 10);
			if (end == p)
				break;
			p = end;
			a <<= 10;
			b <<= 10;
			if (b > size)
				b = size;
			for (unsigned long off = a & ~(PAGE - 1); off < b; off += PAGE, pages++)
				base[off]++;
		}
		printf("ok %lu\n", pages);
		fflush(stdout);
	}
	return 0;
}

/* Host test child with the layout real programs have: one big anonymous buffer that the
 * kernel keeps as ONE mapping (a heap), of which only part is in use.
 * Usage: heap SIZE_MIB HOT_MIB [THP] [CHUNKS] [MOVE_MS]
 *   THP     1: madvise(MADV_HUGEPAGE) (the hot set is then 2 MiB-aligned); 0: MADV_NOHUGEPAGE
 *   CHUNKS  >1: the buffer is made of that many separate MAP_PRIVATE mmaps, placed back to
 *           back so that the kernel merges them into one mapping (checked: exits 3 if not)
 *   MOVE_MS >0: the hot window moves up by HOT_MIB every MOVE_MS (wrapping around)
 * Everything is touched once (made resident); then the hot window is written, one byte per
 * page, one pass every 20 ms. Prints "ready <start> <end> <hot offset bytes>" once resident,
 * and "moved <hot offset bytes>" at each move. Exits when its parent goes away. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	unsigned long size = strtoul(argv[1], NULL, 10) << 20;
	unsigned long hot = strtoul(argv[2], NULL, 10) << 20;
	int thp = argc > 3 ? atoi(argv[3]) : 0;
	int chunks = argc > 4 ? atoi(argv[4]) : 1;
	long move_ms = argc > 5 ? atol(argv[5]) : 0;
	pid_t parent = getppid();
	if (chunks < 1)
		chunks = 1;
	/* reserve an aligned range, then map the chunks into it back to back */
	char *res = mmap(NULL, size + HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return 1;
	char *base = (char *)(((unsigned long)res + HUGE - 1) & ~(HUGE - 1));
	unsigned long chunk = size / chunks;
	for (int i = 0; i < chunks; i++) {
		char *want = base + i * chunk;
		unsigned long len = i == chunks - 1 ? size - i * chunk : chunk;
		if (mmap(want, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != want)
			return 1;
	}
	madvise(base, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (unsigned long off = 0; off < size; off += PAGE)
		base[off] = 1;
	if (chunks > 1) { /* the kernel must have merged the chunks into one mapping */
		FILE *f = fopen("/proc/self/maps", "r");
		char line[512];
		int found = 0;
		while (f && fgets(line, sizeof line, f)) {
			unsigned long s, e;
			if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s == (unsigned long)base && e == (unsigned long)base + size)
				found = 1;
		}
		if (f)
			fclose(f);
		if (!found)
			return 3;
	}
	unsigned long hot_off = 0;
	printf("ready %lx %lx %lu\n", (unsigned long)base, (unsigned long)base + size, hot_off);
	fflush(stdout);
	struct timespec nap = {0, 20 * 1000 * 1000};
	long moved_at = now_ms();
	for (;;) {
		volatile char *h = base + hot_off;
		for (unsigned long off = 0; off < hot; off += PAGE)
			h[off]++;
		nanosleep(&nap, NULL);
		if (getppid() != parent)
			return 0;
		if (move_ms > 0 && now_ms() - moved_at >= move_ms) {
			hot_off = (hot_off + hot) % size;
			moved_at = now_ms();
			printf("moved %lu\n", hot_off);
			fflush(stdout);
		}
	}
}

/*
 * A process whose main thread exits (pthread_exit) while another thread runs on: the
 * thread-group leader is then a zombie, and /proc/PID/{maps,smaps,pagemap} show no memory,
 * while the process' 32 MiB buffer is alive, 8 MiB of it written continuously by the
 * second thread. Prints "ready PID" once the leader is about to exit.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MiB (1024UL * 1024UL)
static char *buf;

static void *worker(void *arg)
{
	(void)arg;
	for (unsigned char v = 0;; v++) {
		for (unsigned long off = 0; off < 8 * MiB; off += 4096)
			buf[off] = (char)v;
		usleep(20000);
	}
	return NULL;
}

int main(void)
{
	buf = mmap(NULL, 32 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 2;
	memset(buf, 1, 32 * MiB);
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL) != 0)
		return 2;
	printf("ready %d\n", getpid());
	fflush(stdout);
	pthread_exit(NULL);
}

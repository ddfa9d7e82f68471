/* vmshare COMM VICTIM [ARG...]: a parent and a child that share one address space (clone
 * with CLONE_VM, no CLONE_THREAD: two processes, one mm). The child names itself COMM,
 * waits for a line on stdin (read by the parent, which prints the named child's pid first), then
 * execs VICTIM. The parent keeps the old address space alive after the exec, so an fd
 * pinned on it still reads: the case where "the pinned mm is alive" does not mean "the
 * pid still runs the matched image". */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int go[2], named[2];

static int child(void *arg)
{
	char **argv = arg;
	char c;

	prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	if (write(named[1], "n", 1) != 1 || read(go[0], &c, 1) != 1)
		_exit(1);
	execv(argv[2], argv + 2);
	_exit(127);
}

int main(int argc, char **argv)
{
	static char stack[1 << 16];
	char line[64];

	if (argc < 3 || pipe(go) != 0 || pipe(named) != 0)
		return 2;
	pid_t pid = clone(child, stack + sizeof(stack), CLONE_VM | SIGCHLD, argv);
	if (pid < 0 || read(named[0], line, 1) != 1)  /* the pid is printed once it is named */
		return 1;
	printf("%d\n", (int)pid);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	if (write(go[1], "x", 1) != 1)
		return 1;
	waitpid(pid, NULL, 0);
	return 0;
}

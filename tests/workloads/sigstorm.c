/* sigstorm PID SIGNAL COUNT: send COUNT signals to PID as fast as kill(2) goes, from two
 * processes at once (a burst a shell loop or Python cannot make: 1,000 in about 1 ms). */
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	pid_t pid = (pid_t)atoi(argv[1]);
	int sig = atoi(argv[2]), count = atoi(argv[3]);
	pid_t child = fork();
	for (int i = 0; i < count / 2; i++)
		if (kill(pid, sig) != 0)
			return 1;
	if (child == 0)
		_exit(0);
	if (child > 0)
		waitpid(child, NULL, 0);
	return 0;
}

/* Exec storm workload: N x (fork, execve(argv[2]), waitpid); prints the loop's wall time in seconds. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	char *prog = argc > 2 ? argv[2] : "/bin/true";
	char *args[] = {prog, NULL};
	char *env[] = {NULL};
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			execve(prog, args, env);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, NULL, 0) < 0) {
			perror("storm");
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	return 0;
}

/* Syscall hot loop: N x (openat(AT_FDCWD, path, O_RDONLY), close).
 * Prints "<loop wall seconds> <CLOCK_REALTIME at loop start>" (process start is excluded). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	const char *path = argc > 2 ? argv[2] : "/tmp/openclose.dat";
	struct timespec a, b, r;

	clock_gettime(CLOCK_REALTIME, &r);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		int fd = openat(AT_FDCWD, path, O_RDONLY);
		if (fd < 0) {
			perror("openclose: openat");
			return 1;
		}
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.6f %.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, r.tv_sec + r.tv_nsec / 1e9);
	return 0;
}

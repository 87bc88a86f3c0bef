/* A steady exec load. Usage: execload RATE SECONDS OUTFILE PROGRAM
 *   fork + exec PROGRAM (no arguments, our own environment) RATE times a second for SECONDS,
 *   reaping every child as it exits. Paced against absolute deadlines (clock_nanosleep on
 *   CLOCK_MONOTONIC), so a late wake-up is caught up at once; a backlog of more than 100 ms is
 *   skipped rather than fired as a burst, so the rate stays steady and what was skipped is
 *   counted. On exit writes one line to OUTFILE:
 *     "<started> <failed> <skipped> <elapsed s> <own cpu s> <children cpu s>"
 *   own cpu is this process's utime + stime (fork and wait cost it, not the children's exec);
 *   children cpu is what the reaped children used. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double seconds(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

static void reap(int block, long *live) {
    while (*live > 0) {
        pid_t pid = waitpid(-1, NULL, block ? 0 : WNOHANG);
        if (pid > 0) { (*live)--; continue; }
        if (pid < 0 && errno == EINTR) continue;
        break;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: execload RATE SECONDS OUTFILE PROGRAM\n");
        return 2;
    }
    double rate = atof(argv[1]), duration = atof(argv[2]);
    const char *outfile = argv[3], *program = argv[4];
    if (rate <= 0 || duration <= 0) {
        fprintf(stderr, "execload: RATE and SECONDS must be positive\n");
        return 2;
    }
    long long period = (long long)(1e9 / rate), start = now_ns();
    long long end = start + (long long)(duration * 1e9), next = start;
    long started = 0, failed = 0, skipped = 0, live = 0;
    char *child_argv[] = {(char *)program, NULL};
    while (next < end) {
        long long now = now_ns();
        if (now < next) {
            struct timespec at = {next / 1000000000LL, next % 1000000000LL};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
        } else if (now - next > 100000000LL) {  /* far behind: skip, don't burst */
            long long behind = (now - next) / period;
            skipped += behind;
            next += behind * period;
        }
        pid_t pid = fork();
        if (pid == 0) {
            execve(program, child_argv, environ);
            _exit(127);
        }
        if (pid < 0) failed++;
        else { started++; live++; }
        reap(0, &live);
        next += period;
    }
    reap(1, &live);
    long long elapsed = now_ns() - start;
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    FILE *out = fopen(outfile, "w");
    if (out == NULL) { perror(outfile); return 1; }
    fprintf(out, "%ld %ld %ld %.6f %.6f %.6f\n", started, failed, skipped, elapsed / 1e9,
            seconds(self.ru_utime) + seconds(self.ru_stime),
            seconds(children.ru_utime) + seconds(children.ru_stime));
    return fclose(out) == 0 ? 0 : 1;
}

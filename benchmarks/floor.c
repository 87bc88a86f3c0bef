/* The physical floor of a /proc poller. Usage: floor ITERATIONS [stat|full]
 *   stat: list /proc and, for every pid, open, read and close /proc/<pid>/stat - nothing else.
 *   full: what a first sighting reads (as daemoneye's details.read_instance does): open the
 *         /proc/<pid> directory, then stat, cmdline (to EOF), exe and cwd links, and status.
 * No parsing. Prints one line per iteration: "<ns per process> <processes>". */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[65536];
static long sink;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int read_stat(const char *pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t got = read(fd, buf, 4096);
    close(fd);
    sink += got;
    return got > 0;
}

static ssize_t read_all_at(int dir, const char *name) {
    int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t total = 0, got;
    while ((got = read(fd, buf, sizeof buf)) > 0) total += got;
    close(fd);
    return total;
}

static int read_full(const char *pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s", pid);
    int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return 0;
    ssize_t got = read_all_at(dir, "stat");
    if (got > 0) {
        sink += read_all_at(dir, "cmdline");
        sink += readlinkat(dir, "exe", buf, sizeof buf);
        sink += readlinkat(dir, "cwd", buf, sizeof buf);
        sink += read_all_at(dir, "status");
    }
    close(dir);
    return got > 0;
}

int main(int argc, char **argv) {
    int iterations = argc > 1 ? atoi(argv[1]) : 5;
    int full = argc > 2 && strcmp(argv[2], "full") == 0;
    for (int it = 0; it < iterations; it++) {
        long long start = now_ns();
        long processes = 0;
        DIR *proc = opendir("/proc");
        if (!proc) { perror("opendir /proc"); return 1; }
        struct dirent *entry;
        while ((entry = readdir(proc)) != NULL) {
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
            processes += full ? read_full(entry->d_name) : read_stat(entry->d_name);
        }
        closedir(proc);
        long long elapsed = now_ns() - start;
        printf("%.1f %ld\n", processes ? (double)elapsed / processes : 0.0, processes);
    }
    return sink < 0;
}

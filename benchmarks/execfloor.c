/* The floor of the daemon's kernel-event reader. Usage: execfloor SECONDS OUTFILE
 *   Subscribes to the process connector (root) and, for SECONDS, does what the daemon's reader
 *   does per event, in C and without parsing: every exec gets the reads of
 *   daemoneye/collector/details.read_instance (open /proc/<pid> as a directory; through it stat,
 *   cmdline, the exe and cwd links, status; close), every fork whose exec is not in the same
 *   batch gets a read of the child's stat. Messages are read in batches, as the daemon does:
 *   wait in poll, then receive until the socket is empty.
 *   Prints "ready" on stdout once subscribed; on exit writes one line to OUTFILE:
 *     "<execs> <forks> <exits> <elapsed s> <own cpu s>" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256

static char buf[65536];
static char scratch[65536];
static long sink;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void read_at(int dir, const char *name) {
    int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t got;
    while ((got = read(fd, scratch, sizeof scratch)) > 0) {
        sink += got;
        if (got < (ssize_t)sizeof scratch) break;
    }
    close(fd);
}

static void link_at(int dir, const char *name) {
    ssize_t got = readlinkat(dir, name, scratch, sizeof scratch);
    if (got > 0) sink += got;
}

static void read_exec(int pid) {
    char path[32];
    snprintf(path, sizeof path, "/proc/%d", pid);
    int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return;
    read_at(dir, "stat");
    read_at(dir, "cmdline");
    link_at(dir, "exe");
    link_at(dir, "cwd");
    read_at(dir, "status");
    close(dir);
}

static void read_fork(int pid) {
    char path[40];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t got = read(fd, scratch, 4096);
    if (got > 0) sink += got;
    close(fd);
}

static int subscribe(void) {
    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (sock < 0) return -1;
    struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_pid = 0, .nl_groups = CN_IDX_PROC};
    if (bind(sock, (struct sockaddr *)&addr, sizeof addr) < 0) return -1;
    int rcvbuf = 4 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    struct {
        struct nlmsghdr nl;
        struct cn_msg cn;
        enum proc_cn_mcast_op op;
    } __attribute__((packed)) req;
    memset(&req, 0, sizeof req);
    req.nl.nlmsg_len = sizeof req;
    req.nl.nlmsg_type = NLMSG_DONE;
    req.cn.id.idx = CN_IDX_PROC;
    req.cn.id.val = CN_VAL_PROC;
    req.cn.len = sizeof req.op;
    req.op = PROC_CN_MCAST_LISTEN;
    if (send(sock, &req, sizeof req, 0) < 0) return -1;
    return sock;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: execfloor SECONDS OUTFILE\n");
        return 2;
    }
    double duration = atof(argv[1]);
    int sock = subscribe();
    if (sock < 0) {
        perror("execfloor: process connector");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    long execs = 0, forks = 0, exits = 0;
    long long start = now_ns(), end = start + (long long)(duration * 1e9);
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    int exec_pids[BATCH], fork_pids[BATCH];
    while (now_ns() < end) {
        int wait_ms = (int)((end - now_ns()) / 1000000) + 1;
        if (poll(&pfd, 1, wait_ms) <= 0) continue;
        int n_exec = 0, n_fork = 0;
        for (int i = 0; i < BATCH; i++) {
            ssize_t got = recv(sock, buf, sizeof buf, MSG_DONTWAIT);
            if (got <= 0) break;
            struct nlmsghdr *nl = (struct nlmsghdr *)buf;
            struct cn_msg *cn = NLMSG_DATA(nl);
            struct proc_event *ev = (struct proc_event *)cn->data;
            if (ev->what == PROC_EVENT_EXEC) {
                exec_pids[n_exec++] = ev->event_data.exec.process_tgid;
            } else if (ev->what == PROC_EVENT_FORK) {
                if (ev->event_data.fork.child_pid == ev->event_data.fork.child_tgid)
                    fork_pids[n_fork++] = ev->event_data.fork.child_tgid;
            } else if (ev->what == PROC_EVENT_EXIT) {
                exits++;
            }
        }
        for (int i = 0; i < n_exec; i++) read_exec(exec_pids[i]);
        for (int i = 0; i < n_fork; i++) {
            int in_batch = 0;
            for (int j = 0; j < n_exec; j++) in_batch |= exec_pids[j] == fork_pids[i];
            if (!in_batch) read_fork(fork_pids[i]);
        }
        execs += n_exec;
        forks += n_fork;
    }
    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    FILE *out = fopen(argv[2], "w");
    if (out == NULL) { perror(argv[2]); return 1; }
    fprintf(out, "%ld %ld %ld %.6f %.6f\n", execs, forks, exits, (now_ns() - start) / 1e9,
            self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 +
            self.ru_stime.tv_sec + self.ru_stime.tv_usec / 1e6);
    return fclose(out) == 0 ? 0 : 1;
}

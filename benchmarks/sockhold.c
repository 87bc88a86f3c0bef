/* The connections benchmark's population: N holders that each hold one TCP connection to a
 * loopback listener and one bound UDP socket, and the server, which holds the listener and
 * every accepted connection (N more sockets); a spawner process forks the holders. Prints "ready" when all are connected, then
 * waits until stdin closes and kills its children (they also die with their parent:
 * PR_SET_PDEATHSIG). Usage: sockhold N */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int n = atoi(argv[1]);
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
        perror("listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    /* The holders are forked by a spawner that holds no accepted socket: forked from here,
     * child i would inherit the i connections accepted before it. */
    pid_t spawner = fork();
    if (spawner < 0) { perror("fork"); return 1; }
    if (spawner == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(listener);
        pid_t self = getpid();
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid < 0) { perror("fork"); _exit(1); }
            if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != self) _exit(0);
                int tcp = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(tcp, (struct sockaddr *)&addr, sizeof addr)) _exit(1);
                int udp = socket(AF_INET, SOCK_DGRAM, 0);
                struct sockaddr_in any = {.sin_family = AF_INET,
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                bind(udp, (struct sockaddr *)&any, sizeof any);
                for (;;) pause();
            }
        }
        for (;;) pause();
    }
    for (int i = 0; i < n; i++) {
        if (accept(listener, NULL, NULL) < 0) { perror("accept"); return 1; }
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {}
    signal(SIGTERM, SIG_IGN);
    kill(0, SIGTERM);
    while (wait(NULL) > 0) {}
    return 0;
}

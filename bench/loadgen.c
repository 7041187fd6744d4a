/*
 * A small epoll load generator for the upgrade benchmarks. Written in C so
 * that it is never the bottleneck for a single-threaded Python server.
 *
 * loadgen MODE HOST PORT [options]
 *   handshake: per connection: connect, send REQUEST, read the response head
 *              (must be "HTTP/1.1 101" when --expect-101), send PAYLOAD, read
 *              --reply bytes, close; repeat. Reports rate and latency.
 *   pingpong:  per connection: connect, REQUEST, 101, then PAYLOAD / --reply
 *              bytes back, again and again. Reports messages/s.
 *   get:       keep-alive HTTP GETs (REQUEST), responses framed by
 *              Content-Length. Reports requests/s.
 *   stream:    one connection: REQUEST, 101, then --bytes sent in 64 KiB
 *              writes while the echo is read back. Reports MB/s.
 *   streams:   --concurrency connections, each REQUEST, 101 (one after the
 *              other), then all of them send 64 KiB writes and read the echo
 *              back for --seconds. Reports the echoed MB/s over all of them,
 *              and the slowest and fastest connection's.
 *   idle:      open --connections connections, upgrade each (and one
 *              PAYLOAD/reply round trip), print "ready", hold them until
 *              stdin closes.
 * Options: --request FILE, --payload FILE, --reply N, --expect-101,
 *          --concurrency N, --seconds S, --bytes N, --connections N,
 *          --rate R (handshake: at most R rounds a second).
 * Output: one JSON object on stdout. Loopback only: HOST must be 127.x or ::1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_CONNECT, S_HEAD, S_REPLY, S_GETRESP };

typedef struct {
    int fd, state;
    double started;
    size_t sent, got, want;
    char buf[65536];
    size_t len;
} conn_t;

static struct sockaddr_in addr;
static char *request = NULL, *payload = NULL;
static size_t requestLen = 0, payloadLen = 0, replyLen = 0;
static int expect101 = 0;
static double *lat = NULL;
static size_t nlat = 0, caplat = 0;
static long errors = 0;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc(n + 1);
    if (fread(data, 1, n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    *len = n;
    return data;
}

static int opensock(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) { close(fd); return -1; }
    return fd;
}

static void record(double seconds) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof *lat);
    }
    lat[nlat++] = seconds;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Write all of data (small: fits the socket buffer); 0 on success. */
static int sendall(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) continue;
            return -1;
        }
        data += n;
        len -= n;
    }
    return 0;
}

static int headDone(conn_t *c, char **rest, size_t *restLen) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    *rest = end + 4;
    *restLen = c->len - (end + 4 - c->buf);
    return 1;
}

static void restart(int ep, conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = opensock();
    c->state = S_CONNECT;
    c->len = c->got = c->sent = 0;
    c->started = now();
    if (c->fd < 0) { errors++; return; }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void startGet(conn_t *c) {
    c->started = now();
    c->len = 0;
    c->state = S_GETRESP;
    if (sendall(c->fd, request, requestLen) < 0) errors++;
}

/* Returns 1 when the connection finished one round and should restart. */
static int step(int ep, conn_t *c, const char *mode) {
    if (c->state == S_CONNECT) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { errors++; return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        if (!strcmp(mode, "get")) { startGet(c); return 0; }
        if (requestLen) {
            if (sendall(c->fd, request, requestLen) < 0) { errors++; return 1; }
            c->state = S_HEAD;
        } else {
            if (sendall(c->fd, payload, payloadLen) < 0) { errors++; return 1; }
            c->state = S_REPLY;
        }
        return 0;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN)) { errors++; return 1; }
    if (n < 0) return 0;
    c->len += n;
    if (c->state == S_HEAD) {
        char *rest; size_t restLen;
        if (!headDone(c, &rest, &restLen)) return 0;
        if (expect101 && strncmp(c->buf, "HTTP/1.1 101", 12)) { errors++; return 1; }
        memmove(c->buf, rest, restLen);
        c->len = restLen;
        if (sendall(c->fd, payload, payloadLen) < 0) { errors++; return 1; }
        c->state = S_REPLY;
    }
    if (c->state == S_REPLY && c->len >= replyLen) {
        record(now() - c->started);
        if (!strcmp(mode, "pingpong")) {
            c->len -= replyLen;
            memmove(c->buf, c->buf + replyLen, c->len);
            c->started = now();
            if (sendall(c->fd, payload, payloadLen) < 0) { errors++; return 1; }
            return 0;
        }
        return 1;
    }
    if (c->state == S_GETRESP) {
        char *rest; size_t restLen;
        if (!headDone(c, &rest, &restLen)) return 0;
        char *cl = strcasestr(c->buf, "\r\ncontent-length:");
        size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
        if (restLen < body) return 0;
        record(now() - c->started);
        startGet(c);
    }
    return 0;
}

static void report(const char *mode, double elapsed, long extra) {
    qsort(lat, nlat, sizeof *lat, cmp);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("{\"mode\": \"%s\", \"count\": %zu, \"seconds\": %.3f, \"rate\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": %ld, \"bytes\": %ld}\n",
           mode, nlat, elapsed, nlat / elapsed, p50 * 1e6, p99 * 1e6, errors, extra);
}

static double rate = 0; /* --rate: at most this many rounds a second (0: as fast as possible) */

static void handshakeLike(const char *mode, int concurrency, double seconds) {
    int ep = epoll_create1(0);
    conn_t *conns = calloc(concurrency, sizeof *conns);
    int *waiting = calloc(concurrency, sizeof *waiting);
    double start = now(), deadline = start + seconds;
    for (int i = 0; i < concurrency; i++) { conns[i].fd = -1; restart(ep, &conns[i]); }
    struct epoll_event events[256];
    while (now() < deadline) {
        int n = epoll_wait(ep, events, 256, rate > 0 ? 5 : 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (step(ep, c, mode)) {
                if (rate > 0) {  /* park it: restarted when the rate allows */
                    close(c->fd);
                    c->fd = -1;
                    waiting[c - conns] = 1;
                } else {
                    restart(ep, c);
                }
            }
        }
        if (rate > 0) {
            double allowed = (now() - start) * rate;
            for (int i = 0; i < concurrency && nlat + errors < allowed; i++) {
                if (waiting[i]) { waiting[i] = 0; restart(ep, &conns[i]); }
            }
        }
    }
    report(mode, now() - start, 0);
}

static int upgraded(void);

static void stream(size_t total) {
    int fd = upgraded();
    fcntl(fd, F_SETFL, O_NONBLOCK);
    static char block[65536], in[1 << 20];
    for (size_t i = 0; i < sizeof block; i++) block[i] = (char)(i * 7);
    size_t sent = 0, got = 0, off = 0;
    double start = now();
    while (got < total) {
        if (sent < total) {
            size_t want = total - sent < sizeof block ? total - sent : sizeof block;
            ssize_t n = send(fd, block + off, want - off, MSG_NOSIGNAL);
            if (n > 0) { off += n; if (off == want) { sent += want; off = 0; } }
        }
        ssize_t n = recv(fd, in, sizeof in, 0);
        if (n == 0) break;
        if (n > 0) got += n;
        if (n < 0 && errno != EAGAIN) break;
        if (n < 0 && (sent >= total || errno == EAGAIN)) {
            fd_set r; FD_ZERO(&r); FD_SET(fd, &r);
            fd_set w; FD_ZERO(&w); if (sent < total) FD_SET(fd, &w);
            struct timeval tv = {1, 0};
            select(fd + 1, &r, &w, NULL, &tv);
        }
    }
    double elapsed = now() - start;
    printf("{\"mode\": \"stream\", \"bytes\": %zu, \"seconds\": %.3f, \"mbps\": %.1f, \"errors\": %d}\n",
           got, elapsed, got / elapsed / 1e6, got == total ? 0 : 1);
}

/* A connection that sent REQUEST and got a 101 (or is connected, without
 * REQUEST), blocking; exits on failure. */
static int upgraded(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); exit(1); }
    char head[4096];
    size_t hl = 0;
    if (requestLen) {
        sendall(fd, request, requestLen);
        while (!memmem(head, hl, "\r\n\r\n", 4)) {
            if (hl == sizeof head) { fprintf(stderr, "head too long\n"); exit(1); }
            ssize_t n = recv(fd, head + hl, 1, 0);  /* byte by byte: take nothing more */
            if (n <= 0) { perror("head"); exit(1); }
            hl += n;
        }
        if (expect101 && strncmp(head, "HTTP/1.1 101", 12)) { fprintf(stderr, "no 101\n"); exit(1); }
    }
    return fd;
}

static void streams(int concurrency, double seconds) {
    int ep = epoll_create1(0);
    int *fds = calloc(concurrency, sizeof *fds);
    size_t *off = calloc(concurrency, sizeof *off);
    double *got = calloc(concurrency, sizeof *got);
    static char block[65536], in[1 << 20];
    for (size_t i = 0; i < sizeof block; i++) block[i] = (char)(i * 7);
    for (int i = 0; i < concurrency; i++) {
        fds[i] = upgraded();
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    struct epoll_event events[256];
    double start = now(), deadline = start + seconds;
    while (now() < deadline) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            if (fds[i] < 0) continue;
            if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(fds[i], in, sizeof in, 0);
                if (r > 0) got[i] += r;
                else if (r == 0 || errno != EAGAIN) {  /* closed under us */
                    errors++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                    close(fds[i]);
                    fds[i] = -1;
                    continue;
                }
            }
            if (events[k].events & EPOLLOUT) {
                ssize_t w = send(fds[i], block + off[i], sizeof block - off[i], MSG_NOSIGNAL);
                if (w > 0) off[i] = (off[i] + w) % sizeof block;
            }
        }
    }
    double elapsed = now() - start, total = 0, least = -1, most = 0;
    for (int i = 0; i < concurrency; i++) {
        total += got[i];
        if (least < 0 || got[i] < least) least = got[i];
        if (got[i] > most) most = got[i];
        if (fds[i] >= 0) close(fds[i]);
    }
    printf("{\"mode\": \"streams\", \"connections\": %d, \"bytes\": %.0f, \"seconds\": %.3f, "
           "\"mbps\": %.1f, \"min_mbps\": %.1f, \"max_mbps\": %.1f, \"errors\": %ld}\n",
           concurrency, total, elapsed, total / elapsed / 1e6, least / elapsed / 1e6,
           most / elapsed / 1e6, errors);
}

static void idle(int count) {
    int *fds = malloc(count * sizeof *fds);
    char buf[4096];
    int opened = 0;
    for (int i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { errors++; close(fd); continue; }
        size_t hl = 0;
        if (requestLen) {
            sendall(fd, request, requestLen);
            while (!memmem(buf, hl, "\r\n\r\n", 4)) {
                ssize_t n = recv(fd, buf + hl, sizeof buf - hl, 0);
                if (n <= 0) break;
                hl += n;
            }
        }
        if (payloadLen) {
            sendall(fd, payload, payloadLen);
            size_t got = 0;
            while (got < replyLen) {
                ssize_t n = recv(fd, buf, sizeof buf, 0);
                if (n <= 0) break;
                got += n;
            }
        }
        fds[opened++] = fd;
    }
    printf("{\"mode\": \"idle\", \"open\": %d, \"errors\": %ld}\n", opened, errors);
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0) {}
    for (int i = 0; i < opened; i++) close(fds[i]);
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: loadgen MODE HOST PORT [options]\n"); return 2; }
    const char *mode = argv[1];
    int concurrency = 1, connections = 1000;
    double seconds = 5;
    size_t total = 1 << 30;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loopback (127.x.x.x) only\n");
        return 2;
    }
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--request")) request = slurp(argv[++i], &requestLen);
        else if (!strcmp(argv[i], "--payload")) payload = slurp(argv[++i], &payloadLen);
        else if (!strcmp(argv[i], "--reply")) replyLen = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--expect-101")) expect101 = 1;
        else if (!strcmp(argv[i], "--concurrency")) concurrency = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--bytes")) total = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--connections")) connections = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[++i]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (!payload) { payload = ""; payloadLen = 0; }
    if (!strcmp(mode, "stream")) stream(total);
    else if (!strcmp(mode, "streams")) streams(concurrency, seconds);
    else if (!strcmp(mode, "idle")) idle(connections);
    else handshakeLike(mode, concurrency, seconds);
    return 0;
}

/*
 * loadgen.c — tickerd's own WebSocket load generator for the ticker.price method.
 *
 * Single thread, Linux epoll, libc only:   gcc -O2 -Wall -Wextra -o loadgen loadgen.c
 *
 * Closed loop (-k K requests outstanding on each of -c connections; the replies one read
 * brings are answered with new requests in one write per connection) or open loop (-r R
 * requests/s in aggregate, request g of the run is due at t0 + g/R on connection g % C,
 * latency counted from that intended time so a stalled server is not hidden by the
 * generator waiting for it; -S busy-polls so the generator's own wake-ups add nothing).
 *
 * -m stream: each connection is a market-stream subscriber of -u PATH (/ws/btcusdt@aggTrade):
 * it sends nothing, answers pings, and counts every text message (an event, a JSON object
 * or array) as a response; rps is then events delivered per second over all connections.
 * Subscribers still connecting when the connect phase times out are dropped, and the run
 * measures those that are open ("opened" in the JSON line; elsewhere a timeout is fatal).
 *
 * Every reply is verified: the id (first key) must be in flight on that connection and not
 * answered before, "status":200 must follow it, and the requested symbol must appear
 * (single mode) or the reply must be at least -L bytes long (all mode). With -E (an echo
 * server) only the id is checked. Requests still unanswered 1 s after the measured window
 * are lost. Output: one JSON line on stdout; exit 1 on any verification error or lost
 * reply, 2 on bad usage or setup failure (unreachable server, failed handshake, ...).
 *
 * Loopback caveat: when the generator sleeps in epoll_wait, each reply the server sends
 * wakes it, and on loopback that wake-up (an IPI; costly in a VM) is paid inside the
 * server's send. A Python server then serves up to ~10-15 % fewer requests per CPU-second
 * than against a generator that is awake. -b USEC (keep polling for USEC after the last
 * event) or -S (always poll) removes that artefact; compare runs made with the same flags.
 *
 * Counting rules: responses/rps/bytes_in — verified replies (bytes read) received inside
 * the measured window; latency histogram — replies to requests sent (intended, in open
 * loop) inside the window, whenever they arrive before the grace period ends; gen_cpu,
 * srv_cpu and syscalls_per_resp (read + write + epoll_wait calls / responses) — the window.
 * Errors are counted in every phase (warm-up and grace included).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 20000
#define MAX_K 1000
#define MAX_SECS 60.0
#define MAX_RATE 10000000.0
#define MAX_SYMS 256
#define MAX_SYM_LEN 32
#define HS_WINDOW 256                   /* handshakes outstanding at once */
#define CONNECT_TIMEOUT_NS (5000000000LL + 10000000LL * opt.conns) /* whole connect phase */
#define GRACE_NS 1000000000LL
#define RX_DEFAULT (1u << 20)
#define MAX_MSG (64u << 20)             /* largest frame/message accepted */
#define OPEN_DEFAULT_CAP 1000           /* open loop in-flight cap per connection */
#define NS 1000000000LL
#define SLOT_FREE UINT64_MAX

/* ---------------------------------------------------------------- options, globals */

static struct {
    const char *host, *path, *source;
    int port, conns, k, k_set, busy, spin_us, all, echo, json, stream;
    double rate, dur, warm;
    long min_len;
    long pid;
} opt = {"127.0.0.1", "/ws-fapi/v1", NULL, 9000, 50, 20, 0, 0, 0, 0, 0, 0, 0, 0.0, 3.0, 1.0, 0, 0};

enum { ST_IDLE, ST_CONNECTING, ST_HS, ST_OPEN, ST_DEAD };

typedef struct { uint64_t id; int64_t t; } slot_t; /* id == SLOT_FREE: unused */

typedef struct conn {
    int fd;
    uint8_t st, out_armed, touched, in_frag;
    uint32_t idx, inflight, smask, smax; /* slot table size - 1, max table size */
    slot_t *slots;
    uint64_t next_id, nsched, nsent;
    char *wb; size_t wlen, woff, wcap;   /* pending output */
    char *cb; size_t clen, ccap, need;   /* carried partial input */
    char *fb; size_t flen, fcap;         /* fragmented message being reassembled */
    char key[32];
} conn_t;

static conn_t *conns;
static int ep = -1;
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static char *syms[MAX_SYMS];
static int nsym;
static char *sym_suffix[MAX_SYMS]; static size_t sym_suffix_len[MAX_SYMS];
static char *sym_key[MAX_SYMS], *sym_key_sp[MAX_SYMS];
static size_t sym_key_len[MAX_SYMS], sym_key_sp_len[MAX_SYMS];
static const char all_suffix[] = "\",\"method\":\"ticker.price\"}";

static uint8_t *rx; static size_t rxcap;
static int64_t g_now, last_ev; /* last_ev: when epoll_wait last returned events */
static int running, started, ended;
static int64_t t0, t_start, t_end, t_grace;
static uint32_t cap;                 /* in-flight per connection */
static uint64_t g_seq;               /* open loop: next request number of the run */
static conn_t **touched; static size_t ntouched;
static int nopen, hs_out, next_launch, opened; /* opened: open when measuring began */

static uint64_t nsys, nsys_a, nsys_b;
static uint64_t responses, bytes_in, total_ok, open_inflight;
static struct { uint64_t bad_id, bad_status, bad_symbol, short_reply, closed, protocol; } err;
static int notes;

/* ---------------------------------------------------------------- small helpers */

static void die2(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void note(const char *fmt, ...)
{
    va_list ap;
    if (opt.json || notes++ >= 10) return;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) die2("out of memory (%zu bytes)", n);
    return q;
}

static void grow(char **buf, size_t *capp, size_t need)
{
    size_t n;
    if (need <= *capp) return;
    n = *capp ? *capp : 256;
    while (n < need) n *= 2;
    *buf = xrealloc(*buf, n);
    *capp = n;
}

static uint64_t rng_state;
static uint32_t rnd32(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static int in_window(int64_t t) { return t >= t_start && t < t_end; }

/* ---------------------------------------------------------------- latency histogram */
/* Log-linear (HDR-style) in µs: exact below 2^14 µs (16.4 ms), then 8192 buckets per
 * power of two (relative width 1/8192) up to 2^26 µs (67 s). */
#define H_SUB_BITS 14
#define H_SUB (1u << H_SUB_BITS)
#define H_HALF (H_SUB / 2)
#define H_TOP 26
#define H_N (H_SUB + (H_TOP - H_SUB_BITS) * H_HALF)
static uint64_t hist[H_N], h_count, h_max;

static void hist_add(uint64_t us)
{
    uint32_t i;
    if (us >= (1ULL << H_TOP)) us = (1ULL << H_TOP) - 1;
    if (us > h_max) h_max = us;
    if (us < H_SUB) i = (uint32_t)us;
    else {
        int k = 63 - __builtin_clzll(us), shift = k - (H_SUB_BITS - 1);
        i = H_SUB + (uint32_t)(k - H_SUB_BITS) * H_HALF + (uint32_t)((us >> shift) - H_HALF);
    }
    hist[i]++;
    h_count++;
}

static uint64_t hist_high(uint32_t i) /* highest value that lands in bucket i */
{
    uint32_t r, k, shift;
    if (i < H_SUB) return i;
    r = i - H_SUB;
    k = H_SUB_BITS + r / H_HALF;
    shift = k - (H_SUB_BITS - 1);
    return (((uint64_t)(r % H_HALF + H_HALF)) << shift) + (1ULL << shift) - 1;
}

static uint64_t hist_pct(double p)
{
    uint64_t want, acc = 0, v;
    uint32_t i;
    if (!h_count) return 0;
    want = (uint64_t)(p * (double)h_count + 0.999999);
    if (want < 1) want = 1;
    for (i = 0; i < H_N; i++) {
        acc += hist[i];
        if (acc >= want) {
            v = hist_high(i);
            return v > h_max ? h_max : v;
        }
    }
    return h_max;
}

/* ---------------------------------------------------------------- SHA-1, base64 */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const uint8_t *m, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint64_t bits = (uint64_t)len * 8;
    size_t total = ((len + 8) / 64 + 1) * 64, off, i;
    for (off = 0; off < total; off += 64) {
        uint8_t b[64];
        uint32_t w[80], a, bb, c, d, e, f, k, t;
        for (i = 0; i < 64; i++) {
            size_t p = off + i;
            b[i] = p < len ? m[p] : p == len ? 0x80 : 0;
        }
        if (off + 64 == total)
            for (i = 0; i < 8; i++) b[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        for (i = 0; i < 16; i++)
            w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
                   (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
        for (; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        a = h[0]; bb = h[1]; c = h[2]; d = h[3]; e = h[4];
        for (i = 0; i < 80; i++) {
            if (i < 20) { f = (bb & c) | (~bb & d); k = 0x5A827999; }
            else if (i < 40) { f = bb ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (bb & c) | (bb & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = bb ^ c ^ d; k = 0xCA62C1D6; }
            t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(bb, 30); bb = a; a = t;
        }
        h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e;
    }
    for (i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = T[v >> 18]; *out++ = T[(v >> 12) & 63]; *out++ = T[(v >> 6) & 63]; *out++ = T[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *out++ = T[v >> 18]; *out++ = T[(v >> 12) & 63];
        *out++ = i + 1 < n ? T[(v >> 6) & 63] : '=';
        *out++ = '=';
    }
    *out = 0;
}

/* ---------------------------------------------------------------- output side */

static void set_out(conn_t *c, int want)
{
    struct epoll_event ev;
    if (c->out_armed == want) return;
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die2("epoll_ctl: %s", strerror(errno));
    c->out_armed = (uint8_t)want;
}

static void conn_dead(conn_t *c, const char *why, int by_server);

static void flush(conn_t *c)
{
    ssize_t n;
    if (c->st == ST_DEAD || c->woff == c->wlen) return;
    n = write(c->fd, c->wb + c->woff, c->wlen - c->woff);
    nsys++;
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) { set_out(c, 1); return; }
        conn_dead(c, strerror(errno), 1);
        return;
    }
    c->woff += (size_t)n;
    if (c->woff == c->wlen) {
        c->woff = c->wlen = 0;
        set_out(c, 0);
    } else {
        set_out(c, 1);
    }
}

static void mask_bytes(uint8_t *p, size_t n, const uint8_t kb[4])
{
    uint64_t k8, w;
    size_t i = 0;
    memcpy(&k8, kb, 4);
    memcpy((uint8_t *)&k8 + 4, kb, 4);
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        w ^= k8;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++) p[i] ^= kb[i & 3];
}

/* Append one masked frame; its payload is the concatenation of up to three pieces. */
static void put_frame(conn_t *c, int op, const void *a, size_t al, const void *b, size_t bl,
                      const void *d, size_t dl)
{
    size_t plen = al + bl + dl, h = 0;
    uint8_t *p;
    uint32_t key = rnd32();
    grow(&c->wb, &c->wcap, c->wlen + plen + 14);
    p = (uint8_t *)c->wb + c->wlen;
    p[h++] = (uint8_t)(0x80 | op);
    if (plen < 126) {
        p[h++] = (uint8_t)(0x80 | plen);
    } else if (plen < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = (uint8_t)(plen >> 8);
        p[h++] = (uint8_t)plen;
    } else {
        int i;
        p[h++] = 0x80 | 127;
        for (i = 7; i >= 0; i--) p[h++] = (uint8_t)((uint64_t)plen >> (8 * i));
    }
    memcpy(p + h, &key, 4);
    h += 4;
    if (al) memcpy(p + h, a, al);
    if (bl) memcpy(p + h + al, b, bl);
    if (dl) memcpy(p + h + al + bl, d, dl);
    mask_bytes(p + h, plen, p + h - 4);
    c->wlen += h + plen;
}

static void grow_slots(conn_t *c)
{
    uint32_t old = c->smask + 1, nsz = old * 2, i;
    slot_t *ns = malloc(sizeof(slot_t) * nsz);
    if (!ns) die2("out of memory (slot table)");
    for (i = 0; i < nsz; i++) ns[i].id = SLOT_FREE;
    for (i = 0; i < old; i++)
        if (c->slots[i].id != SLOT_FREE) ns[c->slots[i].id & (nsz - 1)] = c->slots[i];
    free(c->slots);
    c->slots = ns;
    c->smask = nsz - 1;
}

#define ID_HEAD "5f0c9e2a-8d41-4b7e-9a3c-"

static void send_request(conn_t *c, int64_t t)
{
    /* Ids look like the UUID4 strings real clients send (the official SDK's): a fixed
     * 8-4-4-4 head and the request number as the last 12 digits. */
    static const char prefix[] = "{\"id\":\"" ID_HEAD;
    char dig[24];
    int nd = 0;
    uint64_t id, v;
    slot_t *s;
    if ((c->inflight + 1) * 4 > (c->smask + 1) * 3 && c->smask + 1 < c->smax) grow_slots(c);
    id = c->next_id;
    while (c->slots[id & c->smask].id != SLOT_FREE) id++;
    c->next_id = id + 1;
    s = &c->slots[id & c->smask];
    s->id = id;
    s->t = t;
    v = id;
    do { dig[23 - nd++] = (char)('0' + v % 10); v /= 10; } while (v || nd < 12);
    if (opt.all) {
        put_frame(c, 1, prefix, sizeof prefix - 1, dig + 24 - nd, (size_t)nd, all_suffix,
                  sizeof all_suffix - 1);
    } else {
        int sy = (int)((id + c->idx) % (uint64_t)nsym);
        put_frame(c, 1, prefix, sizeof prefix - 1, dig + 24 - nd, (size_t)nd, sym_suffix[sy],
                  sym_suffix_len[sy]);
    }
    c->inflight++;
    open_inflight++;
}

static int64_t intended(const conn_t *c) /* open loop: due time of c's next request */
{
    uint64_t g = c->idx + c->nsent * (uint64_t)opt.conns;
    return t0 + (int64_t)((long double)g * NS / opt.rate);
}

static void top_up(conn_t *c)
{
    if (!running || c->st != ST_OPEN || g_now >= t_end || opt.stream) return;
    if (opt.rate > 0) {
        while (c->nsent < c->nsched && c->inflight < cap) {
            send_request(c, intended(c));
            c->nsent++;
        }
    } else {
        while (c->inflight < cap) send_request(c, g_now);
    }
}

/* ---------------------------------------------------------------- input side */

static void conn_dead(conn_t *c, const char *why, int by_server)
{
    if (c->st == ST_DEAD) return;
    if (c->st != ST_OPEN) die2("connection %u failed during connect/handshake: %s", c->idx, why);
    close(c->fd);
    c->st = ST_DEAD;
    nopen--;
    open_inflight -= c->inflight; /* c->inflight stays: counted as lost at the end */
    if (by_server) err.closed++;
    note("connection %u closed (%s) with %u in flight", c->idx, why, c->inflight);
}

/* Skip JSON whitespace, then consume the literal lit; 0 if it is not there. */
static int eat(const char **s, const char *e, const char *lit)
{
    size_t l = strlen(lit);
    while (*s < e && (**s == ' ' || **s == '\t' || **s == '\n' || **s == '\r')) (*s)++;
    if ((size_t)(e - *s) < l || memcmp(*s, lit, l) != 0) return 0;
    *s += l;
    return 1;
}

static void on_message(conn_t *c, const char *p, size_t n)
{
    const char *s = p, *e = p + n;
    uint64_t id = 0;
    int nd = 0, q;
    slot_t *sl;
    int64_t t;
    if (opt.stream) { /* a subscriber: every text message is one event (an object or array) */
        if (n && (*p == '{' || *p == '[')) {
            total_ok++;
            if (in_window(g_now)) responses++;
        } else {
            err.bad_status++;
        }
        return;
    }
    /* {"id":"<ID_HEAD><decimal>" — the id is the first key; a bare number is accepted too */
    if (!eat(&s, e, "{") || !eat(&s, e, "\"id\"") || !eat(&s, e, ":")) { err.bad_id++; return; }
    q = eat(&s, e, "\"");
    if (q && !eat(&s, e, ID_HEAD)) { err.bad_id++; return; }
    while (s < e && *s >= '0' && *s <= '9' && nd < 20) { id = id * 10 + (uint64_t)(*s++ - '0'); nd++; }
    if (nd == 0 || nd > 19 || (q && !eat(&s, e, "\""))) { err.bad_id++; return; }
    sl = &c->slots[id & c->smask];
    if (sl->id != id) { err.bad_id++; return; } /* never sent, or already answered */
    t = sl->t;
    sl->id = SLOT_FREE;
    c->inflight--;
    open_inflight--;
    if (!opt.echo) {
        /* ,"status":200 right after the id */
        if (!eat(&s, e, ",") || !eat(&s, e, "\"status\"") || !eat(&s, e, ":") ||
            !eat(&s, e, "200") || (s < e && *s >= '0' && *s <= '9')) { err.bad_status++; return; }
        if (opt.all) {
            if ((long)n < opt.min_len) { err.short_reply++; return; }
        } else {
            int sy = (int)((id + c->idx) % (uint64_t)nsym);
            if (!memmem(p, n, sym_key[sy], sym_key_len[sy]) &&
                !memmem(p, n, sym_key_sp[sy], sym_key_sp_len[sy])) { err.bad_symbol++; return; }
        }
    }
    total_ok++;
    if (in_window(g_now)) responses++;
    if (in_window(t)) hist_add(g_now > t ? (uint64_t)(g_now - t) / 1000 : 0);
}

/* Parse whole frames in buf[0..len); returns bytes consumed, or -1 if c died. */
static long frames(conn_t *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    c->need = 0;
    while (len - off >= 2) {
        uint8_t *b = buf + off, b0 = b[0], b1 = b[1], op = b0 & 15, fin = b0 >> 7;
        uint64_t plen = b1 & 127;
        size_t hl = 2;
        uint8_t *pl;
        if (plen == 126) {
            if (len - off < 4) break;
            plen = (uint64_t)b[2] << 8 | b[3];
            hl = 4;
        } else if (plen == 127) {
            int i;
            if (len - off < 10) break;
            for (plen = 0, i = 2; i < 10; i++) plen = plen << 8 | b[i];
            hl = 10;
        }
        if ((b0 & 0x70) || (b1 & 0x80) || plen > MAX_MSG) {
            err.protocol++;
            conn_dead(c, (b1 & 0x80) ? "masked frame from server" :
                         (b0 & 0x70) ? "RSV bits set" : "frame too large", 0);
            return -1;
        }
        if (len - off < hl + plen) { c->need = hl + (size_t)plen; break; }
        pl = b + hl;
        switch (op) {
        case 1: case 2: case 0:
            if ((op == 0) != (c->in_frag != 0) || (c->in_frag && c->flen + plen > MAX_MSG)) {
                err.protocol++;
                conn_dead(c, "bad fragmentation", 0);
                return -1;
            }
            if (fin && !c->in_frag) {
                on_message(c, (const char *)pl, (size_t)plen);
            } else {
                grow(&c->fb, &c->fcap, c->flen + (size_t)plen);
                memcpy(c->fb + c->flen, pl, (size_t)plen);
                c->flen += (size_t)plen;
                c->in_frag = !fin;
                if (fin) { on_message(c, c->fb, c->flen); c->flen = 0; }
            }
            break;
        case 8: /* close: answer it, then the connection is gone */
            put_frame(c, 8, pl, plen >= 2 ? 2 : 0, NULL, 0, NULL, 0);
            flush(c);
            conn_dead(c, "close frame from server", 1);
            return -1;
        case 9:
            if (plen > 125 || !fin) { err.protocol++; conn_dead(c, "bad ping", 0); return -1; }
            put_frame(c, 10, pl, (size_t)plen, NULL, 0, NULL, 0);
            break;
        case 10:
            break;
        default:
            err.protocol++;
            conn_dead(c, "unknown opcode", 0);
            return -1;
        }
        off += hl + (size_t)plen;
    }
    return (long)off;
}

/* Process buf[0..len) (which may be c->cb itself) and keep the unparsed tail in c->cb. */
static void consume(conn_t *c, uint8_t *buf, size_t len)
{
    long off = frames(c, buf, len);
    size_t rem;
    if (off < 0) return;
    rem = len - (size_t)off;
    if (rem) {
        grow(&c->cb, &c->ccap, rem);
        memmove(c->cb, buf + off, rem);
    }
    c->clen = rem;
}

static void on_read(conn_t *c)
{
    size_t have = c->clen, want = c->need > RX_DEFAULT ? c->need + 65536 : RX_DEFAULT;
    ssize_t n;
    if (rxcap < want) { rx = xrealloc(rx, want); rxcap = want; }
    if (have) memcpy(rx, c->cb, have);
    n = read(c->fd, rx + have, rxcap - have);
    nsys++;
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_dead(c, n == 0 ? "EOF" : strerror(errno), 1);
        return;
    }
    g_now = mono();
    if (in_window(g_now)) bytes_in += (uint64_t)n;
    consume(c, rx, have + (size_t)n);
    if (c->st != ST_OPEN) return;
    top_up(c);
    flush(c);
}

/* ---------------------------------------------------------------- connecting */

static void conn_launch(conn_t *c)
{
    struct epoll_event ev;
    int one = 1, fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die2("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->st = ST_CONNECTING;
    ev.events = EPOLLOUT;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die2("epoll_ctl: %s", strerror(errno));
    c->out_armed = 1;
    if (opt.source) { /* a source address of our own: a reuseport pin hashes on it */
        struct sockaddr_storage src;
        socklen_t len = g_addrlen;
        memcpy(&src, &g_addr, g_addrlen);
        if (src.ss_family == AF_INET) {
            ((struct sockaddr_in *)&src)->sin_port = 0;
            if (inet_pton(AF_INET, opt.source, &((struct sockaddr_in *)&src)->sin_addr) != 1)
                die2("-B %s: not an IPv4 address", opt.source);
        } else {
            ((struct sockaddr_in6 *)&src)->sin6_port = 0;
            if (inet_pton(AF_INET6, opt.source, &((struct sockaddr_in6 *)&src)->sin6_addr) != 1)
                die2("-B %s: not an IPv6 address", opt.source);
        }
        if (bind(fd, (struct sockaddr *)&src, len) < 0)
            die2("bind %s: %s", opt.source, strerror(errno));
    }
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS)
        die2("connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
    hs_out++;
}

static void on_connected(conn_t *c)
{
    int e = 0;
    socklen_t el = sizeof e;
    uint8_t raw[16];
    char req[1024];
    int i, n, v6 = strchr(opt.host, ':') != NULL;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0) e = errno;
    if (e) die2("connect to %s:%d: %s", opt.host, opt.port, strerror(e));
    for (i = 0; i < 16; i++) raw[i] = (uint8_t)rnd32();
    b64(raw, 16, c->key);
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "User-Agent: tickerd-loadgen\r\n\r\n",
                 opt.path, v6 ? "[" : "", opt.host, v6 ? "]" : "", opt.port, c->key);
    grow(&c->wb, &c->wcap, (size_t)n);
    memcpy(c->wb, req, (size_t)n);
    c->wlen = (size_t)n;
    c->woff = 0;
    c->st = ST_HS;
    c->out_armed = 2; /* force the MOD from EPOLLOUT-only to EPOLLIN(+OUT) */
    flush(c);
}

static void on_hs_read(conn_t *c)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char acc_in[64 + sizeof guid], expect[32], *hdr_end, *line;
    uint8_t dg[20];
    ssize_t n;
    size_t hl;
    int ok = 0;
    grow(&c->cb, &c->ccap, c->clen + 4097);
    n = read(c->fd, c->cb + c->clen, c->ccap - c->clen - 1);
    if (n == 0) die2("connection %u: server closed during handshake", c->idx);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        die2("connection %u: handshake read: %s", c->idx, strerror(errno));
    }
    c->clen += (size_t)n;
    c->cb[c->clen] = 0;
    hdr_end = memmem(c->cb, c->clen, "\r\n\r\n", 4);
    if (!hdr_end) {
        if (c->clen > 16384) die2("connection %u: handshake response too long", c->idx);
        return;
    }
    hl = (size_t)(hdr_end - c->cb) + 4;
    if (strncmp(c->cb, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(c->cb, "\r\n");
        if (eol) *eol = 0;
        die2("connection %u: upgrade refused: %s (path %s)", c->idx, c->cb, opt.path);
    }
    snprintf(acc_in, sizeof acc_in, "%s%s", c->key, guid);
    sha1((const uint8_t *)acc_in, strlen(acc_in), dg);
    b64(dg, 20, expect);
    *hdr_end = 0;
    for (line = strstr(c->cb, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "Sec-WebSocket-Accept:", 21) == 0) {
            char *v = line + 21;
            while (*v == ' ' || *v == '\t') v++;
            ok = strncmp(v, expect, strlen(expect)) == 0;
        }
    }
    if (!ok) die2("connection %u: missing or wrong Sec-WebSocket-Accept", c->idx);
    memmove(c->cb, c->cb + hl, c->clen - hl);
    c->clen -= hl;
    c->st = ST_OPEN;
    nopen++;
    hs_out--;
    if (c->clen) {
        consume(c, (uint8_t *)c->cb, c->clen);
        flush(c);
    }
}

/* ---------------------------------------------------------------- setup */

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

static void resolve(void)
{
    struct addrinfo hints, *res, *r;
    char port[16];
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", opt.port);
    rc = getaddrinfo(opt.host, port, &hints, &res);
    if (rc) die2("cannot resolve %s: %s", opt.host, gai_strerror(rc));
    for (r = res; r; r = r->ai_next)
        if (!is_loopback(r->ai_addr))
            die2("refusing %s: it resolves to a non-loopback address (only 127.0.0.0/8 and ::1)",
                 opt.host);
    for (r = res; r->ai_next && r->ai_family != AF_INET; r = r->ai_next) {} /* prefer IPv4 */
    if (r->ai_family != AF_INET) r = res;
    memcpy(&g_addr, r->ai_addr, r->ai_addrlen);
    g_addrlen = r->ai_addrlen;
    freeaddrinfo(res);
}

static int proc_cpu_ticks(long pid, uint64_t *ticks)
{
    char path[64], buf[2048], *p;
    unsigned long long ut, st;
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    p = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *ticks = ut + st;
    return 0;
}

static double rusage_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen [-h host] [-B source] [-p port] [-u path] [-c conns] [-k inflight] [-r rate [-S]]\n"
            "               [-d secs] [-w warmup_secs] [-s SYM1,SYM2] [-m single|all|stream] [-L min_bytes]\n"
            "               [-b spin_us] [-E] [-P server_pid] [-j]\n"
            "  -h host     loopback only (127.0.0.0/8, ::1)       [127.0.0.1]\n"
            "  -B source   connect from this loopback address     [the kernel's]\n"
            "  -p port                                            [9000]\n"
            "  -u path     WebSocket path                         [/ws-fapi/v1]\n"
            "  -c conns    connections, <= %d                  [50]\n"
            "  -k K        closed loop: requests in flight per connection, <= %d [20];\n"
            "              with -r: in-flight cap per connection  [%d]\n"
            "  -r rate     open loop: aggregate requests/s, latency from the intended send time\n"
            "  -S          busy-poll (epoll_wait timeout 0): no generator wake-up latency\n"
            "  -b usec     poll without sleeping for usec after the last event (0..1000) [0];\n"
            "              spares a loopback server the cost of waking the generator per reply\n"
            "  -d secs     measured duration                      [3]\n"
            "  -w secs     warm-up, not counted (d + w <= 60)     [1]\n"
            "  -s SYMS     symbols, used round-robin              [BTCUSDT,ETHUSDT]\n"
            "  -m mode     single (params.symbol), all (no params), or stream: a market-stream\n"
            "              subscriber at -u path that sends nothing and counts the events\n"
            "              (text messages) it receives as responses [single]\n"
            "  -L bytes    all mode: shorter replies are errors (short_reply)\n"
            "  -E          echo server: check only that the echoed id is in flight\n"
            "  -P pid      report the server's CPU share (srv_cpu) from /proc/PID/stat\n"
            "  -j          print only the JSON line\n"
            "exit: 0 ok, 1 verification errors or lost replies, 2 usage/setup failure\n",
            MAX_CONNS, MAX_K, OPEN_DEFAULT_CAP);
    exit(2);
}

static double num_arg(const char *s, const char *what, double lo, double hi)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die2("bad %s '%s' (allowed %g..%g)", what, s, lo, hi);
    return v;
}

static int int_arg(const char *s, const char *what, double lo, double hi)
{
    double v = num_arg(s, what, lo, hi);
    if (v != (double)(long)v) die2("bad %s '%s' (an integer)", what, s);
    return (int)v;
}

static void parse_symbols(const char *arg)
{
    char *dup = strdup(arg), *tok, *save = NULL;
    nsym = 0;
    for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i, l = strlen(tok);
        if (nsym >= MAX_SYMS) die2("too many symbols (max %d)", MAX_SYMS);
        if (l == 0 || l > MAX_SYM_LEN) die2("bad symbol '%s'", tok);
        for (i = 0; i < l; i++)
            if (!((tok[i] >= 'A' && tok[i] <= 'Z') || (tok[i] >= 'a' && tok[i] <= 'z') ||
                  (tok[i] >= '0' && tok[i] <= '9') || tok[i] == '_' || tok[i] == '-' || tok[i] == '.'))
                die2("bad symbol '%s' (letters, digits, _ - . only)", tok);
        syms[nsym++] = tok;
    }
    if (!nsym) die2("no symbols");
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct epoll_event *evs;
    int maxev, ch, i, have_pwait2 = 1;
    uint64_t srv_a = 0, srv_b = 0;
    double cpu_a = 0, cpu_b = 0;
    int64_t wall_a = 0, wall_b = 0, connect_deadline, next_progress = 0, t_connect0;
    uint64_t prog_ok = 0, lost = 0, errors, unsent = 0;
    struct rlimit rl;
    const char *symarg = "BTCUSDT,ETHUSDT";

    while ((ch = getopt(argc, argv, "h:B:p:u:c:k:r:Sb:d:w:s:m:L:EP:j")) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'B': opt.source = optarg; break;
        case 'p': opt.port = int_arg(optarg, "port", 1, 65535); break;
        case 'u': opt.path = optarg; break;
        case 'c': opt.conns = int_arg(optarg, "connections", 1, MAX_CONNS); break;
        case 'k': opt.k = int_arg(optarg, "in-flight", 1, MAX_K); opt.k_set = 1; break;
        case 'r': opt.rate = num_arg(optarg, "rate", 1, MAX_RATE); break;
        case 'S': opt.busy = 1; break;
        case 'b': opt.spin_us = int_arg(optarg, "spin", 0, 1000); break;
        case 'd': opt.dur = num_arg(optarg, "duration", 0.001, MAX_SECS); break;
        case 'w': opt.warm = num_arg(optarg, "warm-up", 0, MAX_SECS); break;
        case 's': symarg = optarg; break;
        case 'm':
            if (!strcmp(optarg, "all")) opt.all = 1;
            else if (!strcmp(optarg, "single")) opt.all = 0;
            else if (!strcmp(optarg, "stream")) opt.stream = 1;
            else die2("bad mode '%s' (single|all|stream)", optarg);
            break;
        case 'L': opt.min_len = int_arg(optarg, "min reply bytes", 0, MAX_MSG); break;
        case 'E': opt.echo = 1; break;
        case 'P': opt.pid = int_arg(optarg, "pid", 1, 4194304); break;
        case 'j': opt.json = 1; break;
        default: usage();
        }
    }
    if (optind != argc) usage();
    if (opt.dur + opt.warm > MAX_SECS) die2("duration + warm-up must be <= %g s", MAX_SECS);
    if (opt.path[0] != '/' || strpbrk(opt.path, " \r\n\t")) die2("bad path '%s'", opt.path);
    if (opt.pid && proc_cpu_ticks(opt.pid, &srv_a) < 0) die2("cannot read /proc/%ld/stat", opt.pid);
    parse_symbols(symarg);
    for (i = 0; i < nsym; i++) {
        size_t l = strlen(syms[i]);
        sym_suffix[i] = malloc(l + 64);
        sym_key[i] = malloc(l + 16);
        sym_key_sp[i] = malloc(l + 16);
        if (!sym_suffix[i] || !sym_key[i] || !sym_key_sp[i]) die2("out of memory");
        sym_suffix_len[i] = (size_t)sprintf(sym_suffix[i],
            "\",\"method\":\"ticker.price\",\"params\":{\"symbol\":\"%s\"}}", syms[i]);
        sym_key_len[i] = (size_t)sprintf(sym_key[i], "\"symbol\":\"%s\"", syms[i]);
        sym_key_sp_len[i] = (size_t)sprintf(sym_key_sp[i], "\"symbol\": \"%s\"", syms[i]);
    }
    resolve();
    cap = opt.rate > 0 ? (uint32_t)(opt.k_set ? opt.k : OPEN_DEFAULT_CAP) : (uint32_t)opt.k;

    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 µs: timed wake-ups in open loop */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.conns + 8) {
        rl.rlim_cur = (rlim_t)opt.conns + 8;
        if (rl.rlim_max < rl.rlim_cur) rl.rlim_max = rl.rlim_cur; /* needs CAP_SYS_RESOURCE */
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die2("cannot raise RLIMIT_NOFILE to %d for %d connections: %s (raise ulimit -n)",
                 opt.conns + 8, opt.conns, strerror(errno));
    }
    rng_state = (uint64_t)mono() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
    if (!rng_state) rng_state = 1;
    conns = calloc((size_t)opt.conns, sizeof *conns);
    touched = calloc((size_t)opt.conns, sizeof *touched);
    maxev = opt.conns < 1024 ? opt.conns : 1024;
    evs = calloc((size_t)maxev, sizeof *evs);
    rx = malloc(RX_DEFAULT);
    rxcap = RX_DEFAULT;
    if (!conns || !touched || !evs || !rx) die2("out of memory");
    for (i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        uint32_t sz = 4, j;
        c->idx = (uint32_t)i;
        c->fd = -1;
        while (sz < 2 * cap && sz < 64) sz *= 2;
        c->smax = 4;
        while (c->smax < 2 * cap) c->smax *= 2;
        c->slots = malloc(sizeof(slot_t) * sz);
        if (!c->slots) die2("out of memory");
        for (j = 0; j < sz; j++) c->slots[j].id = SLOT_FREE;
        c->smask = sz - 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die2("epoll_create1: %s", strerror(errno));

    t_connect0 = mono();
    connect_deadline = t_connect0 + CONNECT_TIMEOUT_NS;
    for (;;) {
        int64_t deadline, wait_ns;
        int n;
        g_now = mono();
        if (!running) {
            while (hs_out < HS_WINDOW && next_launch < opt.conns) conn_launch(&conns[next_launch++]);
            if (nopen < opt.conns && g_now > connect_deadline && opt.stream && nopen > 0) {
                /* a subscriber group measures the subscribers the server took in time */
                note("connect phase over: %d of %d connections open; measuring those",
                     nopen, opt.conns);
                for (i = 0; i < opt.conns; i++) {
                    if (conns[i].st == ST_OPEN || conns[i].st == ST_DEAD) continue;
                    if (conns[i].st != ST_IDLE) close(conns[i].fd);
                    conns[i].st = ST_DEAD;
                }
                opened = nopen;
            }
            if (nopen == opt.conns || opened) {
                opened = nopen;
                running = 1;
                t0 = g_now;
                t_start = t0 + (int64_t)(opt.warm * NS);
                t_end = t_start + (int64_t)(opt.dur * NS);
                t_grace = t_end + GRACE_NS;
                note("connected %d in %.3f s; warm-up %g s, measuring %g s", nopen,
                     (double)(g_now - t_connect0) / NS, opt.warm, opt.dur);
                if (opt.rate <= 0)
                    for (i = 0; i < opt.conns; i++) { top_up(&conns[i]); flush(&conns[i]); }
                next_progress = t_start + NS;
            } else if (g_now > connect_deadline) {
                die2("timed out connecting: %d of %d connections open", nopen, opt.conns);
            }
        }
        if (running) {
            if (!started && g_now >= t_start) {
                started = 1;
                wall_a = g_now;
                cpu_a = rusage_secs();
                nsys_a = nsys;
                prog_ok = total_ok;
                if (opt.pid) proc_cpu_ticks(opt.pid, &srv_a);
            }
            if (started && !ended && g_now >= t_end) {
                ended = 1;
                wall_b = g_now;
                cpu_b = rusage_secs();
                nsys_b = nsys;
                if (opt.pid && proc_cpu_ticks(opt.pid, &srv_b) < 0) srv_b = srv_a;
            }
            if (ended && (open_inflight == 0 || g_now >= t_grace)) break;
            if (opt.rate > 0 && !ended) { /* open loop: hand out the requests now due */
                size_t j;
                for (;;) {
                    int64_t due = t0 + (int64_t)((long double)g_seq * NS / opt.rate);
                    conn_t *c;
                    if (due > g_now || due >= t_end) break;
                    c = &conns[g_seq++ % (uint64_t)opt.conns];
                    c->nsched++;
                    if (!c->touched) { c->touched = 1; touched[ntouched++] = c; }
                }
                for (j = 0; j < ntouched; j++) {
                    touched[j]->touched = 0;
                    top_up(touched[j]);
                    flush(touched[j]);
                }
                ntouched = 0;
            }
            if (!opt.json && started && g_now >= next_progress && !ended) {
                fprintf(stderr, "loadgen: [%4.1fs] %8.0f rps  in flight %llu  errors %llu\n",
                        (double)(g_now - t_start) / NS, (double)(total_ok - prog_ok),
                        (unsigned long long)open_inflight,
                        (unsigned long long)(err.bad_id + err.bad_status + err.bad_symbol +
                                             err.short_reply + err.closed + err.protocol));
                prog_ok = total_ok;
                next_progress += NS;
            }
        }
        /* how long may we sleep? */
        if (!running) deadline = g_now + 10000000; /* 10 ms poll while connecting */
        else {
            deadline = !started ? t_start : !ended ? t_end : t_grace;
            if (opt.rate > 0 && !ended) {
                int64_t due = t0 + (int64_t)((long double)g_seq * NS / opt.rate);
                if (due < deadline) deadline = due;
            }
            if (!opt.json && started && !ended && next_progress < deadline) deadline = next_progress;
        }
        wait_ns = deadline - g_now;
        if (running && (opt.busy || g_now - last_ev < (int64_t)opt.spin_us * 1000)) wait_ns = 0;
        if (wait_ns < 0) wait_ns = 0;
        n = -1;
#ifdef SYS_epoll_pwait2
        if (have_pwait2) {
            struct timespec ts = {(time_t)(wait_ns / NS), (long)(wait_ns % NS)};
            n = (int)syscall(SYS_epoll_pwait2, ep, evs, maxev, &ts, NULL, (size_t)0);
            if (n < 0 && errno == ENOSYS) have_pwait2 = 0;
        }
#else
        have_pwait2 = 0;
#endif
        if (!have_pwait2) n = epoll_wait(ep, evs, maxev, (int)((wait_ns + 999999) / 1000000));
        nsys++;
        if (n < 0) {
            if (errno == EINTR) continue;
            die2("epoll_wait: %s", strerror(errno));
        }
        g_now = mono();
        if (n > 0) last_ev = g_now;
        for (i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->st == ST_DEAD) continue;
            if (c->st == ST_CONNECTING) { on_connected(c); continue; }
            if (e & EPOLLOUT) flush(c);
            if (c->st == ST_DEAD || !(e & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            if (c->st == ST_HS) on_hs_read(c);
            else on_read(c);
        }
    }

    /* report */
    for (i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        lost += c->inflight;
        if (opt.rate > 0) unsent += c->nsched - c->nsent;
        if (c->st == ST_OPEN) { /* polite close: one close frame (1000), then go */
            static const uint8_t code[2] = {0x03, 0xE8};
            put_frame(c, 8, code, 2, NULL, 0, NULL, 0);
            flush(c);
            close(c->fd);
        }
    }
    errors = err.bad_id + err.bad_status + err.bad_symbol + err.short_reply + err.closed + err.protocol;
    {
        double wall = (double)(wall_b - wall_a) / NS;
        double rps = (double)responses / opt.dur;
        char srv[32];
        if (opt.pid) {
            long hz = sysconf(_SC_CLK_TCK);
            snprintf(srv, sizeof srv, "%.3f", (double)(srv_b - srv_a) / (double)hz / wall);
        } else {
            snprintf(srv, sizeof srv, "null");
        }
        if (!opt.json) {
            fprintf(stderr,
                    "loadgen: %.0f req/s  p50 %llu us  p99 %llu us  p99.9 %llu us  max %llu us  "
                    "gen_cpu %.0f%%  srv_cpu %s  errors %llu  lost %llu%s\n",
                    rps, (unsigned long long)hist_pct(0.50), (unsigned long long)hist_pct(0.99),
                    (unsigned long long)hist_pct(0.999), (unsigned long long)h_max,
                    100 * (cpu_b - cpu_a) / wall, srv, (unsigned long long)errors,
                    (unsigned long long)lost, unsent ? "  (open loop fell behind: see unsent)" : "");
        }
        printf("{\"mode\":\"%s\",\"loop\":\"%s\",\"echo\":%s,\"conns\":%d,\"opened\":%d,\"inflight\":%u,"
               "\"rate\":%.0f,\"busy_poll\":%s,\"spin_us\":%d,\"warmup_s\":%g,\"duration_s\":%g,\"responses\":%llu,\"rps\":%.1f,"
               "\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,\"max_us\":%llu,"
               "\"gen_cpu\":%.3f,\"srv_cpu\":%s,\"syscalls_per_resp\":%.3f,\"bytes_in\":%llu,"
               "\"errors\":{\"bad_id\":%llu,\"bad_status\":%llu,\"bad_symbol\":%llu,"
               "\"short_reply\":%llu,\"closed\":%llu,\"protocol\":%llu},\"lost\":%llu,"
               "\"unsent\":%llu}\n",
               opt.stream ? "stream" : opt.all ? "all" : "single", opt.rate > 0 ? "open" : "closed",
               opt.echo ? "true" : "false", opt.conns, opened, cap, opt.rate,
               opt.busy ? "true" : "false", opt.spin_us, opt.warm, opt.dur,
               (unsigned long long)responses, rps, (unsigned long long)hist_pct(0.50),
               (unsigned long long)hist_pct(0.90), (unsigned long long)hist_pct(0.99),
               (unsigned long long)hist_pct(0.999), (unsigned long long)h_max,
               (cpu_b - cpu_a) / wall, srv,
               responses ? (double)(nsys_b - nsys_a) / (double)responses : 0.0,
               (unsigned long long)bytes_in, (unsigned long long)err.bad_id,
               (unsigned long long)err.bad_status, (unsigned long long)err.bad_symbol,
               (unsigned long long)err.short_reply, (unsigned long long)err.closed,
               (unsigned long long)err.protocol, (unsigned long long)lost,
               (unsigned long long)unsent);
        fflush(stdout);
    }
    return errors || lost ? 1 : 0;
}

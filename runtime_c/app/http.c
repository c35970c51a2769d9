/* http.c: reading one HTTP/1.x request under limits, and writing responses. See http.h.
 *
 * Sections: the connection reader (a buffer, a deadline), the request head, the body
 * (Content-Length or chunked), responses.
 */
#include "core/platform.h"
#if PLATFORM_HAS_SERVER

#include "http.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0             /* server_run ignores SIGPIPE as well */
#endif

/* ===================================================================================== */
/* The connection reader: a buffer filled from the socket until a deadline                 */
/* ===================================================================================== */

typedef struct {
    int fd;
    char buf[HTTP_MAX_HEADER];
    size_t pos, len;               /* unread bytes are buf[pos..len) */
    double deadline;               /* CLOCK_MONOTONIC seconds */
    const http_limits *lim;
    http_error *err;
    int idle;                      /* waiting for the next request of a kept-alive connection */
} conn_reader;

struct http_conn { conn_reader r; int requests; };

static char common_headers[1024];  /* http_set_common_headers */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int set_error(http_error *err, int status, const char *message) {
    err->status = status;
    snprintf(err->message, sizeof err->message, "%s", message);
    return -1;
}

/* Reads more bytes into the buffer (compacting it first). Returns the count read (> 0),
 * or -1: peer closed, deadline passed (408), shutdown, or socket error. */
static int fill(conn_reader *r) {
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len == sizeof r->buf) return set_error(r->err, 431, "request header fields too large");
    for (;;) {
        if (r->lim->stop && *r->lim->stop) return set_error(r->err, 0, "shutting down");
        double left = r->deadline - now_seconds();
        if (left <= 0) {
            if (r->idle) return set_error(r->err, 0, "idle keep-alive connection");
            char msg[120];
            snprintf(msg, sizeof msg, "the request was not received within --timeout %d s", r->lim->timeout);
            return set_error(r->err, 408, msg);
        }
        int wait_ms = left > 0.1 ? 100 : (int)(left * 1000) + 1;   /* wake up to see stop */
        struct pollfd p = {r->fd, POLLIN, 0};
        int pr = poll(&p, 1, wait_ms);
        if (pr < 0 && errno != EINTR) return set_error(r->err, 0, "poll failed");
        if (pr <= 0) continue;
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
        if (n > 0) { r->len += (size_t)n; r->idle = 0; return (int)n; }
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        return set_error(r->err, 0, "the client closed the connection");
    }
}

/* The next line (without its "\n" or "\r\n"), NUL-terminated in place. Lines may be at most
 * the buffer's size; *used counts the bytes taken (for the header-size limit). */
static char *read_line(conn_reader *r, size_t *used, int too_long_status) {
    for (;;) {
        char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
        if (nl) {
            char *line = r->buf + r->pos;
            size_t n = (size_t)(nl - line);
            *used += n + 1;
            r->pos += n + 1;
            if (n > 0 && line[n - 1] == '\r') n--;
            if (memchr(line, 0, n)) { set_error(r->err, 400, "NUL byte in the request head"); return NULL; }
            line[n] = 0;
            return line;
        }
        if (r->pos == 0 && r->len == sizeof r->buf) {
            set_error(r->err, too_long_status, too_long_status == 431 ? "request header fields too large (limit 16384 bytes)"
                                                                       : "line too long in a chunked body");
            return NULL;
        }
        if (fill(r) < 0) return NULL;
    }
}

/* Copies n body bytes to dst, from the buffer and then the socket. */
static int read_exact(conn_reader *r, char *dst, size_t n) {
    while (n > 0) {
        if (r->pos == r->len && fill(r) < 0) return -1;
        size_t k = r->len - r->pos < n ? r->len - r->pos : n;
        memcpy(dst, r->buf + r->pos, k);
        r->pos += k;
        dst += k;
        n -= k;
    }
    return 0;
}

/* ===================================================================================== */
/* The request head                                                                        */
/* ===================================================================================== */

static int is_token_char(unsigned char c) {
    if (c >= 'a' && c <= 'z') return 1;
    if (c >= 'A' && c <= 'Z') return 1;
    if (c >= '0' && c <= '9') return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* "GET /path?query HTTP/1.1" */
static int parse_request_line(char *line, http_request *req, http_error *err) {
    char *sp1 = strchr(line, ' ');
    if (!sp1) return set_error(err, 400, "malformed request line");
    size_t mlen = (size_t)(sp1 - line);
    if (mlen == 0 || mlen >= sizeof req->method) return set_error(err, 400, "malformed request line: bad method");
    for (size_t i = 0; i < mlen; i++)
        if (line[i] < 'A' || line[i] > 'Z') return set_error(err, 400, "malformed request line: bad method");
    memcpy(req->method, line, mlen);
    req->method[mlen] = 0;
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (!sp2) return set_error(err, 400, "malformed request line: no HTTP version");
    size_t tlen = (size_t)(sp2 - target);
    if (tlen == 0 || target[0] != '/') return set_error(err, 400, "malformed request line: the target must start with '/'");
    if (tlen > HTTP_MAX_TARGET) return set_error(err, 414, "request target too long (limit 2048 bytes)");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c >= 0x7f) return set_error(err, 400, "malformed request line: bad character in the target");
    }
    size_t plen = tlen;
    char *q = memchr(target, '?', tlen);
    if (q) plen = (size_t)(q - target);
    memcpy(req->path, target, plen);
    req->path[plen] = 0;
    const char *version = sp2 + 1;
    if (strcmp(version, "HTTP/1.1") == 0) req->minor_version = 1;
    else if (strcmp(version, "HTTP/1.0") == 0) req->minor_version = 0;
    else if (strncmp(version, "HTTP/", 5) == 0) return set_error(err, 505, "HTTP version not supported (use HTTP/1.1)");
    else return set_error(err, 400, "malformed request line: bad HTTP version");
    return 0;
}

typedef struct {
    long content_length;           /* -1 if absent */
    int chunked;
    int expect_continue;
} body_framing;

static int parse_header(char *line, http_request *req, body_framing *bf, http_error *err) {
    if (line[0] == ' ' || line[0] == '\t') return set_error(err, 400, "obsolete header line folding is not accepted");
    char *colon = strchr(line, ':');
    if (!colon || colon == line) return set_error(err, 400, "malformed header line (no name or no ':')");
    for (char *p = line; p < colon; p++)
        if (!is_token_char((unsigned char)*p)) return set_error(err, 400, "malformed header name");
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    size_t vlen = strlen(v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) v[--vlen] = 0;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return set_error(err, 400, "control character in a header value");
    }
    if (strcasecmp(line, "Content-Length") == 0) {
        if (vlen == 0 || vlen > 18) return set_error(err, 400, "bad Content-Length");
        long n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9') return set_error(err, 400, "bad Content-Length");
            n = n * 10 + (v[i] - '0');
        }
        if (bf->content_length >= 0 && bf->content_length != n) return set_error(err, 400, "conflicting Content-Length headers");
        bf->content_length = n;
    } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
        if (strcasecmp(v, "chunked") != 0) return set_error(err, 501, "only the chunked Transfer-Encoding is supported");
        if (bf->chunked) return set_error(err, 400, "repeated Transfer-Encoding header");
        bf->chunked = 1;
    } else if (strcasecmp(line, "Expect") == 0) {
        if (strcasecmp(v, "100-continue") != 0) return set_error(err, 417, "only 'Expect: 100-continue' is supported");
        bf->expect_continue = 1;
    } else if (strcasecmp(line, "Connection") == 0) {
        for (char *tok = v; *tok; ) {          /* a comma-separated list of options */
            while (*tok == ' ' || *tok == '\t' || *tok == ',') tok++;
            size_t k = strcspn(tok, ", \t");
            if (k == 5 && strncasecmp(tok, "close", 5) == 0) req->keep_alive = 0;
            else if (k == 10 && strncasecmp(tok, "keep-alive", 10) == 0) req->keep_alive = 1;
            tok += k;
        }
    } else if (strcasecmp(line, "Authorization") == 0) {
        if (vlen >= sizeof req->authorization) req->authorization_too_long = 1;
        else memcpy(req->authorization, v, vlen + 1);
    }
    return 0;
}

/* ===================================================================================== */
/* The body                                                                                */
/* ===================================================================================== */

static int body_too_large(http_error *err, long max_body) {
    char msg[120];
    snprintf(msg, sizeof msg, "request body too large: the limit is --max-body %ld bytes", max_body);
    return set_error(err, 413, msg);
}

static int read_chunked(conn_reader *r, http_request *req) {
    const long max = r->lim->max_body;
    size_t cap = 4096, len = 0;
    char *body = malloc(cap + 1);
    if (!body) return set_error(r->err, 500, "out of memory");
    size_t used = 0;
    for (;;) {
        char *line = read_line(r, &used, 400);
        if (!line) { free(body); return -1; }
        char *p = line;
        unsigned long size = 0;
        int digits = 0;
        for (; *p; p++, digits++) {
            int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                  : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
            if (d < 0) break;
            if (digits >= 15) { free(body); return body_too_large(r->err, max); }
            size = size * 16 + (unsigned long)d;
        }
        if (digits == 0 || (*p && *p != ';' && *p != ' ' && *p != '\t')) {
            free(body);
            return set_error(r->err, 400, "malformed chunk size in a chunked body");
        }
        if (size == 0) break;
        if (len + size > (size_t)max) { free(body); return body_too_large(r->err, max); }
        if (len + size > cap) {
            while (cap < len + size) cap *= 2;
            char *b = realloc(body, cap + 1);
            if (!b) { free(body); return set_error(r->err, 500, "out of memory"); }
            body = b;
        }
        if (read_exact(r, body + len, size) < 0) { free(body); return -1; }
        len += size;
        char crlf[2];
        size_t want = 2;
        if (read_exact(r, crlf, 1) < 0) { free(body); return -1; }
        if (crlf[0] == '\r') { if (read_exact(r, crlf + 1, 1) < 0) { free(body); return -1; } }
        else want = 1;
        if (crlf[want - 1] != '\n') { free(body); return set_error(r->err, 400, "malformed chunked body (no CRLF after a chunk)"); }
    }
    /* trailers: header lines up to an empty line, ignored */
    for (int n = 0;; n++) {
        char *line = read_line(r, &used, 400);
        if (!line) { free(body); return -1; }
        if (!line[0]) break;
        if (n >= HTTP_MAX_HEADERS) { free(body); return set_error(r->err, 431, "too many trailer fields"); }
    }
    body[len] = 0;
    req->body = body;
    req->body_len = len;
    return 0;
}

http_conn *http_conn_open(int fd) {
    http_conn *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->r.fd = fd;
    c->r.pos = c->r.len = 0;
    c->requests = 0;
    return c;
}

void http_conn_free(http_conn *c) { free(c); }

int http_conn_read(http_conn *c, const http_limits *lim, http_request *req, http_error *err) {
    memset(req, 0, sizeof *req);
    memset(err, 0, sizeof *err);
    conn_reader *r = &c->r;
    int fd = r->fd;
    r->deadline = now_seconds() + lim->timeout;
    r->lim = lim;
    r->err = err;
    r->idle = c->requests > 0 && r->pos == r->len;
    c->requests++;

    size_t used = 0;
    int rc = -1;
    body_framing bf = {-1, 0, 0};
    char *line = read_line(r, &used, 431);
    /* a connection closed before sending anything is not an error worth answering */
    if (!line) goto out;
    if (parse_request_line(line, req, err) < 0) goto out;
    req->keep_alive = req->minor_version >= 1;      /* HTTP/1.1 keeps the connection by default */
    for (int n = 0;; n++) {
        line = read_line(r, &used, 431);
        if (!line) goto out;
        if (used > HTTP_MAX_HEADER) { set_error(err, 431, "request header fields too large (limit 16384 bytes)"); goto out; }
        if (!line[0]) break;
        if (n >= HTTP_MAX_HEADERS) { set_error(err, 431, "too many header fields (limit 100)"); goto out; }
        if (parse_header(line, req, &bf, err) < 0) goto out;
    }
    if (bf.chunked && bf.content_length >= 0) { set_error(err, 400, "both Content-Length and Transfer-Encoding given"); goto out; }
    if (bf.chunked && req->minor_version == 0) { set_error(err, 400, "chunked Transfer-Encoding needs HTTP/1.1"); goto out; }
    if (bf.content_length > lim->max_body) { body_too_large(err, lim->max_body); goto out; }
    if (strcmp(req->method, "POST") == 0 && !bf.chunked && bf.content_length < 0) {
        set_error(err, 411, "a POST needs a Content-Length (or chunked Transfer-Encoding)");
        goto out;
    }
    if (bf.expect_continue && (bf.chunked || bf.content_length > 0)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (http_send(fd, cont, sizeof cont - 1) < 0) { set_error(err, 0, "the client went away"); goto out; }
    }
    if (bf.chunked) {
        if (read_chunked(r, req) < 0) goto out;
    } else if (bf.content_length > 0) {
        req->body = malloc((size_t)bf.content_length + 1);
        if (!req->body) { set_error(err, 500, "out of memory"); goto out; }
        if (read_exact(r, req->body, (size_t)bf.content_length) < 0) goto out;
        req->body[bf.content_length] = 0;
        req->body_len = (size_t)bf.content_length;
    }
    rc = 0;
out:
    (void)fd;
    if (rc < 0) { free(req->body); req->body = NULL; req->body_len = 0; }
    return rc;
}

int http_read_request(int fd, const http_limits *lim, http_request *req, http_error *err) {
    http_conn *c = http_conn_open(fd);
    if (!c) { memset(req, 0, sizeof *req); return set_error(err, 500, "out of memory"); }
    int rc = http_conn_read(c, lim, req, err);
    http_conn_free(c);
    return rc;
}

void http_request_free(http_request *req) {
    free(req->body);
    req->body = NULL;
}

/* ===================================================================================== */
/* Responses                                                                               */
/* ===================================================================================== */

int http_send(int fd, const char *data, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;      /* peer gone, or SO_SNDTIMEO expired */
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

const char *http_status_text(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    }
    return "Unknown";
}

void http_set_common_headers(const char *headers) {
    snprintf(common_headers, sizeof common_headers, "%s", headers ? headers : "");
}

int http_respond_head(int fd, int status, const char *content_type, const char *extra_headers) {
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nConnection: close\r\nCache-Control: no-cache\r\n%s%s\r\n",
                     status, http_status_text(status), content_type, common_headers, extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof head) return -1;
    return http_send(fd, head, (size_t)n);
}

int http_respond(int fd, int status, const char *content_type, const char *extra_headers,
                 const char *body, size_t body_len) {
    return http_respond_ka(fd, 0, status, content_type, extra_headers, body, body_len);
}

int http_respond_ka(int fd, int keep_alive, int status, const char *content_type, const char *extra_headers,
                    const char *body, size_t body_len) {
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n%s%s\r\n",
                     status, http_status_text(status), content_type, body_len, keep_alive ? "keep-alive" : "close",
                     common_headers, extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof head) return -1;
    if (http_send(fd, head, (size_t)n) < 0) return -1;
    return http_send(fd, body, body_len);
}

int http_peer_closed(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return 1;
    if (p.revents & POLLIN) {
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0) return 1;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
    }
    return 0;
}

int http_secret_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la != lb);
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)a[i] ^ (unsigned char)(lb ? b[i % lb] : 0);
    return diff == 0;
}

#else
/* No sockets or threads on this target: the server is not built (server.c says so). */
typedef int http_unavailable_on_this_target;
#endif

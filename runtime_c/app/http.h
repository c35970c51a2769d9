/* http.h: the HTTP/1.1 side of the server (server.c): reading one request from a socket
 * under limits and a deadline, and writing responses.
 *
 * HTTP/1.1 keep-alive: a connection (http_conn) reads requests one after another, keeping
 * bytes that arrive early (pipelining); HTTP/1.0 and "Connection: close" end it after the
 * answer, and an idle kept-alive connection is closed without an answer after the timeout. Bodies come with Content-Length or
 * chunked Transfer-Encoding (both at once is refused: request smuggling). "Expect:
 * 100-continue" is answered before the body is read. Reading has one deadline for the whole
 * request, so a client that trickles bytes (slowloris) is cut off after --timeout seconds;
 * writes time out the same way (SO_SNDTIMEO).
 *
 * Not compiled on targets without threads or sockets (PLATFORM_HAS_SERVER in platform.h).
 */
#ifndef BITNET_HTTP_H
#define BITNET_HTTP_H

#include <signal.h>
#include <stddef.h>

#define HTTP_MAX_HEADER 16384      /* request line + headers, bytes (431 beyond) */
#define HTTP_MAX_HEADERS 100       /* header lines (431 beyond) */
#define HTTP_MAX_TARGET 2048       /* request target, bytes (414 beyond) */

typedef struct {
    long max_body;                 /* bytes (--max-body) */
    int timeout;                   /* seconds for the whole request, and for each write */
    volatile sig_atomic_t *stop;   /* set by the signal handler: give up reading */
} http_limits;

typedef struct {
    char method[16];
    char path[HTTP_MAX_TARGET + 1];   /* the target without its query string */
    int minor_version;             /* HTTP/1.<minor> */
    char authorization[512];       /* the Authorization header value ("" if none) */
    int authorization_too_long;
    int keep_alive;                /* HTTP/1.1 without "Connection: close", or "Connection: keep-alive" */
    char *body;                    /* malloc'ed, NUL-terminated (NULL if none) */
    size_t body_len;
} http_request;

/* An error while reading: the HTTP status to answer and a message naming the limit or
 * the fault. status 0 means the client went away (or we are shutting down): answer nothing. */
typedef struct {
    int status;
    char message[200];
} http_error;

/* Reads one request. Returns 0, or -1 with *err filled. Free with http_request_free(). */
int http_read_request(int fd, const http_limits *lim, http_request *req, http_error *err);
/* The same on a connection that may carry several requests (keep-alive). */
typedef struct http_conn http_conn;
http_conn *http_conn_open(int fd);          /* NULL: out of memory */
int http_conn_read(http_conn *c, const http_limits *lim, http_request *req, http_error *err);
void http_conn_free(http_conn *c);          /* does not close fd */
void http_request_free(http_request *req);

/* Writes all of data (no SIGPIPE). Returns 0, or -1 if the peer is gone or the write timed out. */
int http_send(int fd, const char *data, size_t n);
/* A complete response with Content-Length; extra_headers ("Name: value\r\n"..., or NULL). */
int http_respond(int fd, int status, const char *content_type, const char *extra_headers,
                 const char *body, size_t body_len);
/* The same, saying "Connection: keep-alive" when keep_alive. */
int http_respond_ka(int fd, int keep_alive, int status, const char *content_type, const char *extra_headers,
                    const char *body, size_t body_len);
/* Header lines ("Name: value\r\n"...) added to every response (CORS), set before serving. */
void http_set_common_headers(const char *headers);
/* The head of a close-delimited response (for server-sent events). */
int http_respond_head(int fd, int status, const char *content_type, const char *extra_headers);
const char *http_status_text(int status);
/* 1 if the peer has closed its side of the connection (checked without blocking). */
int http_peer_closed(int fd);
/* Constant-time comparison of two strings (time depends only on their lengths). */
int http_secret_equal(const char *a, const char *b);

#endif

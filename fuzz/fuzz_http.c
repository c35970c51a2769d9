/* fuzz_http.c: libFuzzer harness for runtime_c/app/http.c's request reader (http_read_request).
 *
 * http_read_request reads from a socket, so the input goes through a socketpair: the whole
 * input is written to one end, that end's write side is shut down (the client is done), and
 * the other end is parsed with a small body limit and a 5 s deadline. Inputs longer than
 * MAX_INPUT are ignored (the socket buffer must hold the whole input).
 * Checks: on success the method, path and authorization are NUL-terminated inside their
 * arrays, the body (if any) has body_len bytes plus a NUL and stays within max_body; on
 * failure the status is 0 or a 4xx/5xx code with a message, and no body is left allocated.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/http.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "CHECK failed: " __VA_ARGS__); \
    fprintf(stderr, "\n"); abort(); } } while (0)

#define MAX_INPUT 65536
#define MAX_BODY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    int sndbuf = 4 * MAX_INPUT;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    size_t off = 0;
    while (off < size) {
        ssize_t w = send(sv[0], data + off, size - off, MSG_NOSIGNAL);
        CHECK(w > 0, "send to the socketpair failed (input of %zu bytes)", size);
        off += (size_t)w;
    }
    shutdown(sv[0], SHUT_WR);

    static volatile sig_atomic_t stop = 0;
    http_limits lim = {MAX_BODY, 5, &stop};
    http_request req;
    http_error err;
    int rc = http_read_request(sv[1], &lim, &req, &err);
    if (rc == 0) {
        CHECK(memchr(req.method, 0, sizeof req.method) != NULL, "method not terminated");
        CHECK(memchr(req.path, 0, sizeof req.path) != NULL, "path not terminated");
        CHECK(memchr(req.authorization, 0, sizeof req.authorization) != NULL, "authorization not terminated");
        CHECK(req.method[0] != 0, "empty method accepted");
        if (req.body) {
            CHECK(req.body_len <= MAX_BODY, "body of %zu bytes over the %d limit", req.body_len, MAX_BODY);
            CHECK(req.body[req.body_len] == 0, "body not NUL-terminated");
        } else {
            CHECK(req.body_len == 0, "body_len %zu without a body", req.body_len);
        }
        http_request_free(&req);
    } else {
        CHECK(rc == -1, "http_read_request returned %d", rc);
        CHECK(err.status == 0 || (err.status >= 400 && err.status < 600), "status %d", err.status);
        CHECK(err.status == 0 || err.message[0], "error status %d without a message", err.status);
        CHECK(memchr(err.message, 0, sizeof err.message) != NULL, "message not terminated");
        CHECK(req.body == NULL, "body left allocated after an error");
    }
    close(sv[0]);
    close(sv[1]);
    return 0;
}

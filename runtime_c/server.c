/* server.c: `serve`, the HTTP server. */
#include "modes.h"

#include <stdio.h>

int server_run(const options *o) {
    (void)o;
    fprintf(stderr, "error: serve is not available in this build yet\n");
    return 2;
}

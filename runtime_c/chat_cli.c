/* chat_cli.c: --chat / -i (interactive conversation on stdin). */
#include "modes.h"

#include <stdio.h>

int chat_run(const options *o) {
    (void)o;
    fprintf(stderr, "error: --chat and -i are not available in this build yet\n");
    return 2;
}

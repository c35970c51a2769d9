/* modes.h: the program's modes besides one-shot generation (main.c). Each takes the parsed
 * options after bn_init succeeded and returns the process exit code. */
#ifndef BITNET_MODES_H
#define BITNET_MODES_H

#include "options.h"

int chat_run(const options *o);     /* chat_cli.c: --chat / -cnv / -i */
int server_run(const options *o);   /* server.c: serve */

#endif

/* errors.c: the last error message, one per thread (bn_last_error in bitnet.h). Every
 * failing bn_* call sets it with bn_set_error and returns an error code; nothing prints. */
#include "bitnet.h"
#include "model_internal.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[512];

void bn_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

const char *bn_last_error(void) { return last_error; }

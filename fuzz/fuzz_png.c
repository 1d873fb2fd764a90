/* fuzz_png.c - libFuzzer target: PNG reading (libpng's low-level API) and PNG masks at the image's size and at another.
 * Built and run by fuzz/run.sh; the body is fz_png() in harness.h. */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_png(data, size);
    return 0;
}

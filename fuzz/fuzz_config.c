/* fuzz_config.c - libFuzzer target: config.json of a UNet2DModel (parse, build the graph) and scheduler_config.json.
 * Built and run by fuzz/run.sh; the body is fz_config() in harness.h. */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_config(data, size);
    return 0;
}

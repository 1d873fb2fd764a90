/* fuzz_safetensors.c - libFuzzer target: the safetensors reader: open, info, raw and read_f32 of every tensor, metadata.
 * Built and run by fuzz/run.sh; the body is fz_safetensors() in harness.h. */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_safetensors(data, size);
    return 0;
}

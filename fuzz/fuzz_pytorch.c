/* fuzz_pytorch.c - libFuzzer target: whole PyTorch checkpoints (zip + pickle), with and without the CRC checks.
 * Built and run by fuzz/run.sh; the body is fz_pytorch() in harness.h. */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_pytorch(data, size);
    return 0;
}

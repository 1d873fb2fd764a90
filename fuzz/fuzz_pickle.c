/* fuzz_pickle.c - libFuzzer target: the restricted pickle interpreter: the input is data.pkl of an archive with fixed storages.
 * Built and run by fuzz/run.sh; the body is fz_pickle() in harness.h. */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_pickle(data, size);
    return 0;
}

/* fuzz_tokenizer.c - libFuzzer target: hostile prompts (invalid UTF-8, huge, odd Unicode) through the CLIP tokenizer.
 * Built and run by fuzz/run.sh; the body is fz_tokenizer() in harness.h. */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_tokenizer(data, size);
    return 0;
}

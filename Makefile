# loco - build, test, sanitize, bench.
#   make            library + CLI (build/)
#   make test       unit and fixture tests
#   make asan       the same tests under ASan+UBSan (build-asan/)
#   make bench      the benchmark (BENCH_ARGS="--quick", "--json", "--only NAME")
CC      ?= gcc
ARCH    ?= -march=native
OPT     ?= -O3
BUILD   ?= build
CFLAGS  += -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter $(OPT) $(ARCH) -fno-trapping-math -fopenmp -Iinclude -Isrc -D_GNU_SOURCE
LDLIBS  += -ldnnl -lopenblas -lcjson -lpng -lz -lutf8proc -lm
TEST_LDLIBS = -lcmocka

LIB_SRC := $(shell find src -name '*.c' | sort)
LIB_HDR := $(shell find src -name '*.h' | sort)
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
SH_TESTS := $(wildcard tests/test_*.sh)

.PHONY: all test asan bench clean
all: $(BUILD)/loco $(BUILD)/bench $(BUILD)/bench_conv $(BUILD)/bench_sd $(BUILD)/bench_edit $(BUILD)/bench_lin $(BUILD)/eval_edit $(BUILD)/eval_loss $(BUILD)/eval_colour $(BUILD)/eval_modes $(BUILD)/bench_gemm

$(BUILD)/obj/%.o: src/%.c $(LIB_HDR) $(wildcard include/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# Two archives, rebuilt whole (members of removed or moved sources must not
# linger). libloco.a, what users link: one relocatable object in which only
# the loco_* symbols stay global, every internal one hidden.
# libloco_internal.a: the same objects with every symbol visible, for the
# tests (which check the internals).
$(BUILD)/libloco.a: $(LIB_OBJ)
	rm -f $@ $(BUILD)/loco_lib.o
	ld -r -o $(BUILD)/loco_lib.o $^
	objcopy --wildcard --keep-global-symbol='loco_*' $(BUILD)/loco_lib.o
	ar rcs $@ $(BUILD)/loco_lib.o

$(BUILD)/libloco_internal.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

# loco serve's page (tools/serve_page/) is compiled into the program
SERVE_PAGE := $(sort $(wildcard tools/serve_page/*.html tools/serve_page/*.js tools/serve_page/*.css))
$(BUILD)/serve_page.c: $(SERVE_PAGE) tools/serve_page/embed.sh
	@mkdir -p $(dir $@)
	sh tools/serve_page/embed.sh $(SERVE_PAGE) > $@.tmp && mv $@.tmp $@

$(BUILD)/loco: $(wildcard tools/*.c tools/*.h) $(BUILD)/serve_page.c $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $(wildcard tools/*.c) $(BUILD)/serve_page.c -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS) -lmicrohttpd -lpthread

$(BUILD)/bench_lin: bench/bench_lin.c $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/eval_edit: bench/eval_edit.c bench/edit_eval.h $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/eval_loss: bench/eval_loss.c $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/eval_colour: bench/eval_colour.c bench/colour_eval.h $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/eval_modes: bench/eval_modes.c bench/colour_eval.h $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench_edit: bench/bench_edit.c $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

# bench_conv calls the convolutions directly: the internal archive
$(BUILD)/bench_conv: bench/bench_conv.c $(BUILD)/libloco_internal.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco_internal.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench_gemm: bench/bench_gemm.c $(BUILD)/libloco_internal.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco_internal.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench_sd: bench/bench_sd.c bench/bench_util.h $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench: bench/bench.c bench/bench_util.h $(BUILD)/libloco.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h tests/tmpdir.h bench/edit_eval.h $(BUILD)/libloco_internal.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libloco_internal.a $(LDFLAGS) $(LDLIBS) $(TEST_LDLIBS)

test: $(TESTS) $(BUILD)/loco $(BUILD)/libloco.a
	@BUILD=$(BUILD) tests/run.sh $(TESTS) $(SH_TESTS)

asan:
	$(MAKE) test BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined"

# OPENBLAS_CORETYPE defaults to Haswell as in the tests; run $(BUILD)/bench
# directly to let OpenBLAS pick its kernel. Options: make bench BENCH_ARGS=--quick
bench: $(BUILD)/bench
	OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE-Haswell} $(BUILD)/bench $(BENCH_ARGS)

clean:
	rm -rf build build-asan

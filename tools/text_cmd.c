/* text_cmd.c - `loco tokenize`: a prompt's CLIP token ids, as the Stable
 * Diffusion pipeline gives them to its text encoder. Uses only the public
 * header. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROMPT_FILE_MAX ((size_t)64 << 20)

static const char *const tokenize_usage =
    "usage: loco tokenize MODEL (--prompt TEXT | --prompt-file FILE) [--json]";

/* The bytes of a prompt file (NUL bytes included); *data malloc'd. 0 or an
 * exit code, printed. A FIFO or device is refused without being opened. */
static int read_prompt_file(const char *path, char **data, size_t *len) {
    struct stat st;
    *data = NULL;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "loco: error: --prompt-file %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "loco: error: --prompt-file %s: not a regular file\n", path);
        return 1;
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "loco: error: --prompt-file %s: cannot open: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return 1;
    }
    if ((size_t)st.st_size > PROMPT_FILE_MAX) {
        fprintf(stderr, "loco: error: --prompt-file %s: %lld bytes, more than the %zu accepted\n", path,
                (long long)st.st_size, PROMPT_FILE_MAX);
        close(fd);
        return 1;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        fprintf(stderr, "loco: error: --prompt-file %s: out of memory\n", path);
        close(fd);
        return 1;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* shrank while read: take what is there */
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *data = buf;
    *len = got;
    return 0;
}

/* s as a JSON string (UTF-8 passes through; quotes, backslashes and
 * control characters escaped) */
static void json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20 || *p == 0x7F) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

int cmd_tokenize(args *a) {
    const char *model = NULL, *prompt = NULL, *prompt_file = NULL, *v;
    int json = 0;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--prompt"))) prompt = v;
        else if ((v = opt(a, "--prompt-file"))) prompt_file = v;
        else if (strcmp(s, "--json") == 0) json = 1;
        else if (s[0] == '-' && s[1]) return usage_error("tokenize: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("tokenize: unexpected argument '%s'", s);
    }
    if (!model) return usage_error("tokenize: missing MODEL\n%s", tokenize_usage);
    if (!prompt == !prompt_file) return usage_error("tokenize: give one of --prompt and --prompt-file\n%s", tokenize_usage);
    char *text = NULL;
    size_t len;
    if (prompt_file) {
        int rc = read_prompt_file(prompt_file, &text, &len);
        if (rc) return rc;
    } else {
        len = strlen(prompt);
    }
    loco_tokenizer *t;
    loco_status st = loco_tokenizer_open(model, &t);
    if (st) {
        free(text);
        return fail(st);
    }
    int ml = loco_tokenizer_max_length(t), n_real, truncated;
    int64_t *ids = malloc((size_t)ml * sizeof *ids);
    if (!ids) {
        free(text);
        loco_tokenizer_free(t);
        fprintf(stderr, "loco: error: out of memory\n");
        return 1;
    }
    st = loco_tokenize_n(t, text ? text : prompt, len, ids, &n_real, &truncated);
    free(text);
    if (st) {
        free(ids);
        loco_tokenizer_free(t);
        return fail(st);
    }
    if (truncated && !g_quiet)
        fprintf(stderr, "loco: warning: the prompt has more than %d tokens: cut to the first %d, as the pipeline does\n",
                ml - 2, ml - 2);
    if (json) {
        printf("{\"max_length\": %d, \"n_real\": %d, \"truncated\": %s,\n \"ids\": [", ml, n_real,
               truncated ? "true" : "false");
        for (int i = 0; i < ml; i++) printf("%s%lld", i ? ", " : "", (long long)ids[i]);
        printf("],\n \"tokens\": [");
        for (int i = 0; i < n_real; i++) {
            const char *tok = loco_tokenizer_token(t, ids[i]);
            if (i) printf(", ");
            if (tok) json_string(tok);
            else printf("null");
        }
        printf("]}\n");
    } else {
        for (int i = 0; i < ml; i++) printf("%s%lld", i ? " " : "", (long long)ids[i]);
        printf("\n");
    }
    free(ids);
    loco_tokenizer_free(t);
    return 0;
}

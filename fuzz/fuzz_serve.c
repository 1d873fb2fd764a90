/* fuzz_serve.c - libFuzzer target: `loco serve`'s request handling
 * (tools/serve_api.c: routing, JSON bodies, masks, settings, strengths, PNG
 * uploads, downloads; tools/serve_state.c: sessions, the job queue, cancel,
 * supersede) on arbitrary requests, with the real worker thread and a small
 * closed-form MoLRG model (3x32x32, so generator faces and their label maps
 * work too). Built and run by fuzz/run.sh (target "serve").
 *
 * An input is one request:
 *   byte 0       the method: GET POST PUT DELETE HEAD PATCH (mod 6)
 *   byte 1       the Content-Type (low 3 bits: application/json, image/png,
 *                text/plain, none, "application/json; charset=utf-8",
 *                "image/pngx"); bit 7: ?drop_alpha=1
 *   then         the path after "/api" up to the first '\n' ('@' stands for
 *                the id of a session that has directions, so renders,
 *                transfers and downloads are reached)
 *   the rest     the body (none when empty)
 * After each request every unfinished job is cancelled and waited for, and
 * the ready session is made again if the request removed it (or 16 newer
 * sessions pushed it out). Findings: any sanitizer report, a hang, a reply
 * whose status is not one the API documents (docs/serve.md), a JSON reply
 * that does not parse, and a 500 (nothing a client sends may make the
 * server fail). */
#define _POSIX_C_SOURCE 200809L
#include "../tools/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static server sv;
static char ready[33];

static void api(const char *method, const char *path, const char *ctype, const char *body, reply *r) {
    request rq = {method, path, ctype, body, body ? strlen(body) : 0, 0};
    memset(r, 0, sizeof *r);
    api_handle(&sv, &rq, r);
}

/* cancels every unfinished job and waits for each to end */
static void drain(void) {
    job *list[256];
    int n = 0;
    pthread_mutex_lock(&sv.lock);
    for (int i = 0; i < 256; i++)
        if (sv.jobs[i] && sv.jobs[i]->state < JOB_DONE) {
            sv.jobs[i]->refs++;
            list[n++] = sv.jobs[i];
        }
    pthread_mutex_unlock(&sv.lock);
    for (int i = 0; i < n; i++) {
        job_cancel(&sv, list[i]);
        job_wait(&sv, list[i]);
        job_unref(&sv, list[i]);
    }
}

/* a session of face 0 with directions found on a short schedule */
static void make_ready(void) {
    reply r;
    api("POST", "/api/sessions", "application/json", "{\"source\":\"face\",\"seed\":0,\"index\":0}", &r);
    cJSON *o = r.status == 201 ? cJSON_Parse(r.body) : NULL;
    cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "session");
    if (!cJSON_IsString(id) || strlen(id->valuestring) != 32) {
        fprintf(stderr, "fuzz_serve: cannot make a session: %s\n", r.body ? r.body : "");
        abort();
    }
    snprintf(ready, sizeof ready, "%s", id->valuestring);
    cJSON_Delete(o);
    reply_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/api/sessions/%s/mask", ready);
    api("PUT", path, "application/json", "{\"part\":\"mouth\",\"dilate\":1}", &r);
    reply_free(&r);
    snprintf(path, sizeof path, "/api/sessions/%s/directions", ready);
    api("POST", path, "application/json",
        "{\"steps\":6,\"rank\":2,\"null_rank\":2,\"min_iter\":1,\"max_iter\":2}", &r);
    o = r.status == 202 ? cJSON_Parse(r.body) : NULL;
    cJSON *jid = cJSON_GetObjectItemCaseSensitive(o, "job");
    job *j = NULL;
    if (cJSON_IsNumber(jid)) {
        pthread_mutex_lock(&sv.lock);
        j = job_get_locked(&sv, (uint64_t)jid->valuedouble);
        pthread_mutex_unlock(&sv.lock);
    }
    if (!j) {
        fprintf(stderr, "fuzz_serve: cannot find directions: %s\n", r.body ? r.body : "");
        abort();
    }
    job_wait(&sv, j);
    if (j->state != JOB_DONE) {
        fprintf(stderr, "fuzz_serve: directions: %s\n", j->error);
        abort();
    }
    job_unref(&sv, j);
    cJSON_Delete(o);
    reply_free(&r);
}

static int ready_alive(void) {
    pthread_mutex_lock(&sv.lock);
    session *s = session_get_locked(&sv, ready);
    int ok = s && s->dirs;
    pthread_mutex_unlock(&sv.lock);
    session_unref(&sv, s);
    return ok;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    loco_set_log(NULL, NULL); /* the library's messages are dropped */
    char dir[] = "/tmp/loco-fuzz-serve.XXXXXX";
    if (!mkdtemp(dir)) abort();
    char model[96];
    snprintf(model, sizeof model, "%s/molrg.safetensors", dir);
    if (loco_molrg_init(model, 3, 32, 32, 3, 8, 0.1f, 1) || loco_model_open(model, &sv.model)) {
        fprintf(stderr, "fuzz_serve: cannot make the model: %s\n", loco_last_error());
        abort();
    }
    unlink(model);
    sv.model_path = "molrg";
    loco_model_get_info(sv.model, &sv.info);
    sv.C = 3;
    sv.H = sv.W = 32;
    sv.n = 3 * 32 * 32;
    sv.faces = 1;
    snprintf(sv.token, sizeof sv.token, "%064d", 0);
    snprintf(sv.tmpdir, sizeof sv.tmpdir, "%s", dir); /* downloads are built here */
    pthread_mutex_init(&sv.lock, NULL);
    pthread_cond_init(&sv.changed, NULL);
    if (serve_state_start(&sv)) abort();
    make_ready();
    return 0;
}

static const unsigned documented[] = {200, 201, 202, 400, 404, 405, 409, 413, 415, 503};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"};
    static const char *const types[] = {"application/json", "image/png", "text/plain", "",
                                        "application/json; charset=utf-8", "image/pngx", "application/json",
                                        "image/png"};
    if (size < 2) return 0;
    const char *method = methods[data[0] % 6];
    const char *ctype = types[data[1] & 7];
    int drop_alpha = data[1] >> 7;
    data += 2;
    size -= 2;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t plen = nl ? (size_t)(nl - data) : size;
    if (plen > 400) return 0;
    /* "/api" + the path with '@' -> the ready session's id; NUL ends it as
     * libmicrohttpd's string would */
    char path[4 + 400 * 32 + 1];
    size_t k = 0;
    memcpy(path, "/api", 4);
    k = 4;
    for (size_t i = 0; i < plen && data[i]; i++) {
        if (data[i] == '@') {
            memcpy(path + k, ready, 32);
            k += 32;
        } else path[k++] = (char)data[i];
    }
    path[k] = 0;
    const char *body = NULL;
    size_t blen = 0;
    char *copy = NULL;
    if (nl && size > plen + 1) {
        blen = size - plen - 1;
        /* a private copy, so that reading past the end is caught */
        if (!(copy = malloc(blen))) return 0;
        memcpy(copy, nl + 1, blen);
        body = copy;
    }
    request rq = {method, path, ctype, body, blen, drop_alpha};
    reply r = {0};
    api_handle(&sv, &rq, &r);
    /* the reply is one the API documents */
    int known = 0;
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++) known |= r.status == documented[i];
    if (!known) {
        fprintf(stderr, "fuzz_serve: %s %s -> status %u: %.300s\n", method, path, r.status, r.body ? r.body : "");
        abort();
    }
    if (!r.sse_job && r.type && strcmp(r.type, "application/json") == 0) {
        cJSON *o = cJSON_ParseWithLength(r.body, r.len);
        if (!cJSON_IsObject(o)) {
            fprintf(stderr, "fuzz_serve: %s %s -> a JSON reply that does not parse\n", method, path);
            abort();
        }
        cJSON_Delete(o);
    }
    reply_free(&r);
    free(copy);
    drain();
    if (!ready_alive()) {
        drain();
        make_ready();
    }
    return 0;
}

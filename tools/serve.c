/* serve.c - `loco serve [MODEL] [--host H] [--port P] [--open]`: the HTTP
 * side of the interactive editor. libmicrohttpd parses HTTP (one thread per
 * connection); this file checks every request (Host and Origin against the
 * address served, the per-start token on every /api/ request, the body
 * size), serves the embedded page with the token in it, hands /api/ to
 * serve_api.c, and streams job progress as server-sent events. */
#define _POSIX_C_SOURCE 200809L
#include "serve.h"
#include "loco_train.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ======================================================================== */
/* Replies                                                                  */
/* ======================================================================== */

void reply_json(reply *r, unsigned status, cJSON *o) {
    free(r->body);
    r->body = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    r->status = r->body ? status : 500;
    r->type = "application/json";
    if (!r->body) r->body = strdup("{\"error\":\"out of memory\"}");
    r->len = r->body ? strlen(r->body) : 0;
}

void reply_error(reply *r, unsigned status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    cJSON_AddNumberToObject(o, "status", status);
    reply_json(r, status, o);
}

void reply_bytes(reply *r, const char *type, const void *data, size_t len, const char *filename) {
    free(r->body);
    r->body = malloc(len ? len : 1);
    if (!r->body) {
        reply_error(r, 500, "out of memory");
        return;
    }
    memcpy(r->body, data, len);
    r->len = len;
    r->type = type;
    r->status = 200;
    r->filename = filename;
}

void reply_free(reply *r) {
    free(r->body);
    free(r->owned_name);
    memset(r, 0, sizeof *r);
}

/* ======================================================================== */
/* Server-sent events: a job's progress until it ends                       */
/* ======================================================================== */

typedef struct sse_ctx {
    server *sv;
    job *j;
    int last_version;
    int ended; /* the final event was sent */
} sse_ctx;

/* waits for the job to change (15 s at most: then a comment line keeps the
 * connection open) and writes its progress as one event; ends after the
 * event of a finished job */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    sse_ctx *c = cls;
    server *sv = c->sv;
    if (c->ended) return MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&sv->lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 15;
    int timed_out = 0;
    while (!sv->stopping && c->j->version == c->last_version && c->last_version >= 0 && c->j->state < JOB_DONE &&
           !timed_out)
        timed_out = pthread_cond_timedwait(&sv->changed, &sv->lock, &until) == ETIMEDOUT;
    int stopping = sv->stopping;
    c->last_version = c->j->version;
    pthread_mutex_unlock(&sv->lock);
    if (stopping) return MHD_CONTENT_READER_END_OF_STREAM;
    if (timed_out) {
        static const char ping[] = ": ping\n\n";
        if (max < sizeof ping) return 0;
        memcpy(buf, ping, sizeof ping - 1);
        return (ssize_t)(sizeof ping - 1);
    }
    cJSON *o = job_json(sv, c->j);
    cJSON *stt = cJSON_GetObjectItemCaseSensitive(o, "state");
    int fin = cJSON_IsString(stt) && strcmp(stt->valuestring, "queued") && strcmp(stt->valuestring, "running");
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!t) return MHD_CONTENT_READER_END_WITH_ERROR;
    int n = snprintf(buf, max, "data: %s\n\n", t);
    free(t);
    if (n < 0 || (size_t)n >= max) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (fin) c->ended = 1;
    return n;
}

static void sse_free(void *cls) {
    sse_ctx *c = cls;
    job_unref(c->sv, c->j);
    free(c);
}

/* ======================================================================== */
/* Requests                                                                 */
/* ======================================================================== */

typedef struct conn {
    char *body;
    size_t len, cap;
    int too_big;
} conn;

static enum MHD_Result send_reply(struct MHD_Connection *con, server *sv, reply *r) {
    struct MHD_Response *resp;
    if (r->sse_job) {
        sse_ctx *c = calloc(1, sizeof *c);
        job *j = NULL;
        if (c) {
            pthread_mutex_lock(&sv->lock);
            j = job_get_locked(sv, r->sse_job);
            pthread_mutex_unlock(&sv->lock);
        }
        if (!c || !j) {
            free(c);
            reply_error(r, 404, "no such job");
            r->sse_job = 0;
            return send_reply(con, sv, r);
        }
        c->sv = sv;
        c->j = j;
        c->last_version = -1;
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, c, sse_free);
        if (!resp) {
            sse_free(c);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    } else {
        resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_COPY);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", r->type ? r->type : "application/octet-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        if (r->filename) {
            char cd[160];
            snprintf(cd, sizeof cd, "attachment; filename=\"%s\"", r->filename);
            MHD_add_response_header(resp, "Content-Disposition", cd);
        }
    }
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'");
    enum MHD_Result ret = MHD_queue_response(con, r->status ? r->status : 500, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Host must be one of the names this server answers to (DNS rebinding:
 * another name that resolves here is refused) */
static int host_ok(server *sv, const char *host) {
    if (!host) return 0;
    for (int i = 0; i < sv->n_host_ok; i++)
        if (strcmp(host, sv->host_ok[i]) == 0) return 1;
    return 0;
}

/* an Origin, when sent, must be this server ("http://" + an accepted Host) */
static int origin_ok(server *sv, const char *origin) {
    if (!origin) return 1;
    if (strncmp(origin, "http://", 7) != 0) return 0;
    return host_ok(sv, origin + 7);
}

/* constant-time comparison of the token */
static int token_ok(server *sv, const char *t) {
    if (!t) return 0;
    size_t n = strlen(sv->token);
    if (strlen(t) != n) return 0;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++) d |= (unsigned char)(t[i] ^ sv->token[i]);
    return d == 0;
}

static void serve_static(server *sv, const char *url, reply *r) {
    const char *p = strcmp(url, "/") == 0 ? "/index.html" : url;
    for (const serve_file *f = serve_files; f->path; f++) {
        if (strcmp(f->path, p) != 0) continue;
        if (strcmp(p, "/index.html") == 0) { /* the token goes into the page */
            static const char mark[] = "__LOCO_TOKEN__";
            const char *at = memmem(f->data, f->len, mark, sizeof mark - 1);
            size_t tl = strlen(sv->token), ml = sizeof mark - 1;
            char *b = malloc(f->len + tl + 1);
            if (!b) {
                reply_error(r, 500, "out of memory");
                return;
            }
            size_t pre = at ? (size_t)(at - (const char *)f->data) : f->len;
            memcpy(b, f->data, pre);
            size_t len = pre;
            if (at) {
                memcpy(b + len, sv->token, tl);
                len += tl;
                memcpy(b + len, at + ml, f->len - pre - ml);
                len += f->len - pre - ml;
            }
            reply_bytes(r, f->type, b, len, NULL);
            free(b);
        } else reply_bytes(r, f->type, f->data, f->len, NULL);
        return;
    }
    reply_error(r, 404, "no page '%.80s'", url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    server *sv = cls;
    conn *c = *con_cls;
    if (!c) { /* first call: headers only */
        if (!(c = calloc(1, sizeof *c))) return MHD_NO;
        *con_cls = c;
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > 16 * SERVE_MAX_BODY) { /* refuse without reading it */
            reply r = {0};
            reply_error(&r, 413, "the request body is larger than %zu bytes", SERVE_MAX_BODY);
            enum MHD_Result ret = send_reply(con, sv, &r);
            reply_free(&r);
            c->too_big = 2;
            return ret;
        }
        return MHD_YES;
    }
    if (c->too_big == 2) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) { /* more of the body */
        size_t k = *upload_data_size;
        if (c->too_big || c->len + k > SERVE_MAX_BODY) {
            c->too_big = 1; /* read and dropped, answered 413 at the end */
        } else {
            if (c->len + k + 1 > c->cap) {
                size_t cap = c->cap ? c->cap : 4096;
                while (cap < c->len + k + 1) cap *= 2;
                char *nb = realloc(c->body, cap);
                if (!nb) return MHD_NO;
                c->body = nb;
                c->cap = cap;
            }
            memcpy(c->body + c->len, upload_data, k);
            c->len += k;
            c->body[c->len] = 0;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* the whole request is here */
    reply r = {0};
    const char *host = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Host");
    const char *origin = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Origin");
    if (!host_ok(sv, host))
        reply_error(&r, 403, "Host '%.80s' is not this server's address (requests must name %s)", host ? host : "",
                    sv->host_ok[0]);
    else if (!origin_ok(sv, origin))
        reply_error(&r, 403, "cross-origin request from '%.80s' refused", origin);
    else if (strncmp(url, "/api/", 5) != 0 && strcmp(url, "/api") != 0) {
        if (strcmp(method, "GET") && strcmp(method, "HEAD")) reply_error(&r, 405, "the page is read with GET");
        else serve_static(sv, url, &r);
    } else {
        const char *tok = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "X-Loco-Token");
        if (!tok) tok = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "token");
        if (!token_ok(sv, tok))
            reply_error(&r, 403, "missing or wrong token (send the page's token as the X-Loco-Token header)");
        else if (c->too_big) reply_error(&r, 413, "the request body is larger than %zu bytes", SERVE_MAX_BODY);
        else {
            const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type");
            const char *da = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "drop_alpha");
            request rq = {method, url, ct ? ct : "", c->body, c->len, da && strcmp(da, "1") == 0};
            api_handle(sv, &rq, &r);
        }
    }
    enum MHD_Result ret = send_reply(con, sv, &r);
    reply_free(&r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)con, (void)toe;
    conn *c = *con_cls;
    if (c) {
        free(c->body);
        free(c);
    }
    *con_cls = NULL;
}

/* ======================================================================== */
/* The command                                                              */
/* ======================================================================== */

static const char *const serve_usage = "usage: loco serve [MODEL] [--host 127.0.0.1] [--port 8080] [--open]\n"
                                       "  MODEL defaults to models/faces32 (beside the program or in the current "
                                       "folder); --port 0 picks a free port";

/* models/faces32 in the current folder, or in the checkout the program was
 * built in (build/loco -> ../models/faces32) */
static const char *default_model(char *buf, size_t n) {
    if (access("models/faces32/config.json", R_OK) == 0) return "models/faces32";
    ssize_t k = readlink("/proc/self/exe", buf, n - 1);
    if (k > 0) {
        buf[k] = 0;
        char *s = strrchr(buf, '/');
        if (s) {
            *s = 0;
            s = strrchr(buf, '/');
            if (s && (size_t)(s - buf) + 32 < n) {
                strcpy(s, "/models/faces32");
                char cfg[4200];
                snprintf(cfg, sizeof cfg, "%s/config.json", buf);
                if (access(cfg, R_OK) == 0) return buf;
            }
        }
    }
    return "models/faces32";
}

int cmd_serve(args *a) {
    const char *model = NULL, *host = "127.0.0.1", *v;
    long long port = 8080;
    int open_browser = 0;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--host"))) host = v;
        else if ((v = opt(a, "--port"))) {
            if (!parse_long(v, 0, 65535, &port)) return usage_error("serve: bad --port '%s' (0..65535; 0: any free one)", v);
        } else if (strcmp(s, "--open") == 0) open_browser = 1;
        else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            puts(serve_usage);
            return 0;
        } else if (s[0] == '-') return usage_error("serve: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("serve: unexpected argument '%s'", s);
    }
    char mbuf[4096];
    if (!model) model = default_model(mbuf, sizeof mbuf);
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    int ipv6 = 0;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        ipv6 = 1;
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)port);
    } else return usage_error("serve: --host '%s' must be a numeric IPv4 or IPv6 address (e.g. 127.0.0.1)", host);

    static server sv; /* one per process; static keeps it off the stack */
    memset(&sv, 0, sizeof sv);
    sv.model_path = model;
    loco_status st = open_model(model, &sv.model);
    if (st) return fail(st);
    loco_model_get_info(sv.model, &sv.info);
    int IC, IH, IW;
    loco_model_image_info(sv.model, &IC, &IH, &IW);
    sv.C = sv.info.in_channels;
    sv.H = sv.info.height;
    sv.W = sv.info.width;
    sv.n = (size_t)sv.C * sv.H * sv.W;
    if (sv.info.out_channels != sv.C || IC != sv.C || IH != sv.H || IW != sv.W || sv.info.conditional ||
        (sv.C != 1 && sv.C != 3)) {
        fprintf(stderr, "loco: error: %s: loco serve edits pixel-space models of 1 or 3 channels (this is a %s model, "
                        "%dx%dx%d)\n", model, sv.info.family, sv.C, sv.H, sv.W);
        loco_model_free(sv.model);
        return 1;
    }
    sv.faces = sv.C == 3 && sv.H == LOCO_FACES_SIZE && sv.W == LOCO_FACES_SIZE;
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        fprintf(stderr, "loco: error: serve: no random bytes for the token\n");
        loco_model_free(sv.model);
        return 1;
    }
    for (int i = 0; i < 32; i++) snprintf(sv.token + 2 * i, 3, "%02x", rnd[i]);
    const char *tmp = getenv("TMPDIR");
    snprintf(sv.tmpdir, sizeof sv.tmpdir, "%s/loco-serve.XXXXXX", tmp && tmp[0] && strlen(tmp) < 200 ? tmp : "/tmp");
    if (!mkdtemp(sv.tmpdir)) {
        fprintf(stderr, "loco: error: serve: cannot make a temporary folder %s: %s\n", sv.tmpdir, strerror(errno));
        loco_model_free(sv.model);
        return 1;
    }
    pthread_mutex_init(&sv.lock, NULL);
    pthread_cond_init(&sv.changed, NULL);
    /* signals: the main thread waits for them; every other thread blocks them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    struct MHD_Daemon *d = NULL;
    if (serve_state_start(&sv)) {
        fprintf(stderr, "loco: error: serve: cannot start the worker thread\n");
        rc = 1;
        goto out;
    }
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | (ipv6 ? MHD_USE_IPv6 : 0),
                         (uint16_t)port, NULL, NULL, on_request, &sv, MHD_OPTION_SOCK_ADDR,
                         ipv6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, &sv, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "loco: error: serve: cannot listen on %s port %lld (in use, or not an address of this "
                        "machine?)\n", host, port);
        rc = 1;
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = di ? di->port : (unsigned)port;
    /* the names a browser may use for this address */
    char hb[80];
    snprintf(hb, sizeof hb, ipv6 ? "[%s]" : "%s", host);
    snprintf(sv.host_ok[sv.n_host_ok++], sizeof sv.host_ok[0], "%s:%u", hb, bound);
    if (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "::1") == 0) {
        snprintf(sv.host_ok[sv.n_host_ok++], sizeof sv.host_ok[0], "localhost:%u", bound);
        snprintf(sv.host_ok[sv.n_host_ok++], sizeof sv.host_ok[0], strcmp(host, "::1") ? "[::1]:%u" : "127.0.0.1:%u",
                 bound);
    }
    char url[400];
    snprintf(url, sizeof url, "http://%s/", sv.host_ok[0]);
    printf("loco serve: %s  (model %s; Ctrl-C stops)\n", url, model);
    fflush(stdout);
    if (strcmp(host, "127.0.0.1") && strcmp(host, "::1"))
        fprintf(stderr, "loco: warning: serving on %s: anyone who can reach it and read the page can edit\n", host);
    if (open_browser) {
        pid_t pid;
        char *argv_[] = {"xdg-open", url, NULL};
        if (posix_spawnp(&pid, "xdg-open", NULL, NULL, argv_, environ) != 0)
            fprintf(stderr, "loco: warning: --open: cannot run xdg-open; open %s yourself\n", url);
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    if (!g_quiet) fprintf(stderr, "loco serve: stopping (signal %d)\n", sig);
out:
    serve_state_stop(&sv);
    if (d) MHD_stop_daemon(d);
    pthread_cond_destroy(&sv.changed);
    pthread_mutex_destroy(&sv.lock);
    loco_remove_tree(sv.tmpdir);
    loco_model_free(sv.model);
    return rc;
}

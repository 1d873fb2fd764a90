/* serve.h - `loco serve`: the web page and JSON API for interactive LOCO
 * Edit (docs/serve.md). Three parts:
 *   serve.c        HTTP (libmicrohttpd), routing, the token and Host/Origin
 *                  checks, the embedded page, the command itself;
 *   serve_state.c  sessions (image, mask, cached x_t and directions) and the
 *                  compute worker with its job queue;
 *   serve_api.c    the API handlers: JSON in, JSON out.
 * Everything that touches the model runs on the one worker thread (a model
 * is not safe to use from two threads at once); HTTP runs on
 * libmicrohttpd's threads (one per connection), which only queue work,
 * wait for it, or read state under the lock. */
#ifndef LOCO_SERVE_H
#define LOCO_SERVE_H

#include "cli.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* limits (docs/serve.md) */
#define SERVE_MAX_BODY ((size_t)4 << 20)   /* bytes of a request body       */
#define SERVE_MAX_SIDE 1024                /* an uploaded PNG's sides        */
#define SERVE_MAX_SESSIONS 16              /* oldest idle one goes first     */
#define SERVE_SESSION_IDLE_S 3600          /* idle sessions expire           */
#define SERVE_MAX_QUEUE 32                 /* jobs waiting for the worker    */
#define SERVE_MAX_DIRS 64                  /* rank at most this              */
#define SERVE_PREVIEW_EVALS 10             /* network evaluations of a preview render */

/* ---- HTTP replies (serve.c) ------------------------------------------------ */

/* What a handler answers: status, content type and body. The body is owned
 * by the reply (freed by reply_free); handlers fill it with the helpers. */
typedef struct reply {
    unsigned status;
    const char *type;       /* static string */
    char *body;             /* malloc'd */
    size_t len;
    const char *filename;   /* static or owned by `owned_name`; NULL: inline */
    char *owned_name;
    /* server-sent events: the job to stream (id), instead of a body */
    uint64_t sse_job;
} reply;

/* JSON object -> reply (takes ownership of o and deletes it). */
void reply_json(reply *r, unsigned status, cJSON *o);
/* {"error": msg} with the status. */
void reply_error(reply *r, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* bytes (copied) as a download named filename (static string or NULL). */
void reply_bytes(reply *r, const char *type, const void *data, size_t len, const char *filename);
void reply_free(reply *r);

/* A parsed request handed to the API. */
typedef struct request {
    const char *method;     /* "GET", "POST", ... */
    const char *path;       /* URL path, without the query */
    const char *ctype;      /* Content-Type or "" */
    const char *body;       /* NULL when none */
    size_t body_len;
    int drop_alpha;         /* ?drop_alpha=1 on an upload */
} request;

/* The page's files, embedded at build time (tools/serve_page/embed.sh
 * writes them into $(BUILD)/serve_page.c); the list ends with path NULL. */
typedef struct serve_file {
    const char *path, *type;
    const unsigned char *data;
    size_t len;
} serve_file;
extern const serve_file serve_files[];

/* ---- sessions and jobs (serve_state.c) ------------------------------------- */

typedef enum job_kind { JOB_SAMPLE, JOB_PREPARE, JOB_RENDER, JOB_TRANSFER } job_kind;
typedef enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED } job_state;
const char *job_state_name(job_state s);

typedef struct session session;

/* The settings of "find directions" (the CLI's defaults, loco edit). */
typedef struct prep_settings {
    float t_edit;
    int rank, null_rank, min_iter, max_iter, steps, inv_steps;
    double tol;
    uint64_t seed;
} prep_settings;

typedef struct job {
    uint64_t id;
    job_kind kind;
    session *s;               /* a reference (session_unref when the job goes) */
    atomic_int cancel;        /* set by cancel; the worker stops at the next unit */
    /* progress, under the server lock */
    job_state state;
    char phase[32];
    int done, total;
    double angle;             /* sin of the largest principal angle, NaN */
    double t_start, t_end;
    char error[512];
    unsigned error_status;    /* HTTP status of a failure (400 or 500)        */
    int version;              /* bumped at every change (server-sent events)  */
    /* inputs */
    prep_settings ps;         /* JOB_PREPARE                                  */
    uint8_t *mask;            /* JOB_PREPARE: [H*W] copy                      */
    float *x0;                /* JOB_SAMPLE / JOB_TRANSFER: image [n] or NULL */
    uint64_t sample_seed;     /* JOB_SAMPLE with x0 NULL                      */
    float strengths[SERVE_MAX_DIRS]; /* JOB_RENDER                            */
    int n_strengths;
    int target;               /* JOB_RENDER: 0 the image, 1 the transfer image */
    int preview;              /* JOB_RENDER: a coarse preview (SERVE_PREVIEW_EVALS
                                 steps), not kept for downloads              */
    int superseded;           /* cancelled because a newer render came        */
    /* outputs */
    float *out;               /* JOB_RENDER / JOB_SAMPLE: image [n]           */
    double seconds;
    int evals;                /* JOB_RENDER: network evaluations made         */
    int exact;                /* JOB_RENDER: the exact image (kept for downloads) */
    int refs;                 /* the table, a waiting request (freed at 0)    */
    struct job *next;         /* queue                                        */
} job;

struct session {
    char id[33];
    int refs;                 /* the table, running jobs, handlers            */
    int dead;                 /* removed from the table                       */
    double last_used;
    float *x0;                /* [n] the image                                */
    uint8_t *labels;          /* [H*W] label map of a generator face, or NULL */
    char source[96];          /* "upload", "sample seed 3", "face 0:12"       */
    uint8_t *mask;            /* [H*W], 1 inside                              */
    /* after find directions (set by the worker under the lock) */
    loco_edit_directions *dirs;
    prep_settings ps;         /* what they were found with                    */
    uint8_t *dir_mask;        /* the mask they were found with                */
    loco_edit_params ep;      /* the schedule for rendering                   */
    float *recon;             /* [n] the reconstruction (all strengths 0)     */
    double seconds_prepare;
    uint64_t prep_job;        /* the last find-directions job (0: none)       */
    /* the last render, for downloads */
    float *edit;              /* [n] or NULL                                  */
    float last_strengths[SERVE_MAX_DIRS];
    int n_last;
    /* transfer: another image, its x_t under the same schedule */
    float *tx0, *txt, *trecon, *tedit; /* [n] each, or NULL                   */
    uint64_t transfer_job;
};

typedef struct server {
    loco_model *model;
    const char *model_path;
    loco_model_info info;
    int C, H, W;
    size_t n;
    int faces;                /* the model works on 32x32 RGB: generator faces */
    char token[65];
    char host_ok[4][300];     /* accepted Host header values                  */
    int n_host_ok;
    char tmpdir[256];         /* private folder for building downloads        */
    pthread_mutex_t lock;
    pthread_cond_t changed;   /* any job or session changed                   */
    session *sessions[SERVE_MAX_SESSIONS];
    job *jobs[256];           /* recent jobs, by id (ring)                    */
    uint64_t next_job;
    job *queue_head, *queue_tail;
    int queued;
    int stopping;
    pthread_t worker;
    int worker_started;
} server;

/* Starts the worker; 0 or -1. serve_state_stop stops it, cancels every job
 * and frees every session and job. */
int serve_state_start(server *sv);
void serve_state_stop(server *sv);

/* With sv->lock held: the session of id (a new reference), or NULL. */
session *session_get_locked(server *sv, const char *id);
/* Takes the lock; drops a reference (frees the session at 0). */
void session_unref(server *sv, session *s);
/* Adds a new session owning x0 (and labels, may be NULL): returns it with a
 * reference for the caller, or NULL when out of memory. Evicts the least
 * recently used idle session when the table is full. */
session *session_add(server *sv, float *x0, uint8_t *labels, const char *source);
/* Removes a session from the table (its memory goes with the last
 * reference). 0, or -1 when unknown. */
int session_remove(server *sv, const char *id);

/* Queues a job (the server takes a reference to j; the caller keeps its
 * own). 0, or -1 when the queue is full or the server stops (j not queued). */
int job_submit(server *sv, job *j);
/* A new job with one reference (the caller's), or NULL. */
job *job_new(job_kind kind, session *s);
/* Takes the lock; drops a reference. */
void job_unref(server *sv, job *j);
/* With the lock held: the job of id (a new reference), or NULL. */
job *job_get_locked(server *sv, uint64_t id);
/* Waits until j has finished (done, failed or cancelled). */
void job_wait(server *sv, job *j);
/* Asks j to stop (a queued job is dropped at once). */
void job_cancel(server *sv, job *j);
/* Cancels the unfinished renders of session s for target (0 the image, 1
 * the transfer image): a newer render makes them stale. Their requests are
 * answered 409 "superseded by a newer render". */
void renders_supersede(server *sv, const session *s, int target);
/* j's progress as JSON (takes the lock). */
cJSON *job_json(server *sv, job *j);

/* ---- images (serve_api.c) ---------------------------------------------------- */

/* [C,H,W] in [-1,1] -> PNG bytes (malloc'd, *len) scaled `zoom` times. */
unsigned char *png_encode(const float *x, int C, int H, int W, size_t *len);

/* ---- the API (serve_api.c) --------------------------------------------------- */

/* Answers one /api/ request (method, path, body) into r. Never fails: every
 * problem is a JSON error reply. */
void api_handle(server *sv, const request *rq, reply *r);

#endif

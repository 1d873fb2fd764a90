/* serve_state.c - `loco serve`'s sessions and its compute worker.
 *
 * One worker thread runs every job in the order they were queued (the model
 * is used by one thread at a time). A job's progress and result live in the
 * job, under the server's lock; the condition variable `changed` wakes the
 * requests that wait for a job or stream its progress. Sessions and jobs are
 * reference-counted so that a session removed (or expired) while a job uses
 * it stays valid until the job ends. */
#define _POSIX_C_SOURCE 200809L
#include "serve.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *job_state_name(job_state s) {
    static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};
    return (unsigned)s < 5 ? names[s] : "unknown";
}

/* ======================================================================== */
/* Sessions                                                                 */
/* ======================================================================== */

static void session_free(session *s) {
    loco_edit_directions_free(s->dirs);
    free(s->x0);
    free(s->labels);
    free(s->mask);
    free(s->dir_mask);
    free(s->recon);
    free(s->edit);
    free(s->tx0);
    free(s->txt);
    free(s->trecon);
    free(s->tedit);
    free(s);
}

static void session_unref_locked(session *s) {
    if (s && --s->refs == 0) session_free(s);
}

void session_unref(server *sv, session *s) {
    if (!s) return;
    pthread_mutex_lock(&sv->lock);
    session_unref_locked(s);
    pthread_mutex_unlock(&sv->lock);
}

/* drops sessions idle for longer than the limit (lock held) */
static void expire_locked(server *sv) {
    double t = mono_now();
    for (int i = 0; i < SERVE_MAX_SESSIONS; i++) {
        session *s = sv->sessions[i];
        if (s && t - s->last_used > SERVE_SESSION_IDLE_S) {
            s->dead = 1;
            sv->sessions[i] = NULL;
            session_unref_locked(s);
        }
    }
}

session *session_get_locked(server *sv, const char *id) {
    expire_locked(sv);
    for (int i = 0; i < SERVE_MAX_SESSIONS; i++) {
        session *s = sv->sessions[i];
        if (s && strcmp(s->id, id) == 0) {
            s->refs++;
            s->last_used = mono_now();
            return s;
        }
    }
    return NULL;
}

session *session_add(server *sv, float *x0, uint8_t *labels, const char *source) {
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->mask = calloc((size_t)sv->H * sv->W, 1);
    unsigned char rnd[16];
    if (!s->mask || getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        free(s->mask);
        free(s);
        return NULL;
    }
    for (int i = 0; i < 16; i++) snprintf(s->id + 2 * i, 3, "%02x", rnd[i]);
    s->x0 = x0;
    s->labels = labels;
    snprintf(s->source, sizeof s->source, "%s", source);
    s->refs = 2; /* the table and the caller */
    pthread_mutex_lock(&sv->lock);
    expire_locked(sv);
    s->last_used = mono_now();
    int slot = -1;
    for (int i = 0; i < SERVE_MAX_SESSIONS && slot < 0; i++)
        if (!sv->sessions[i]) slot = i;
    if (slot < 0) { /* full: the least recently used one goes */
        slot = 0;
        for (int i = 1; i < SERVE_MAX_SESSIONS; i++)
            if (sv->sessions[i]->last_used < sv->sessions[slot]->last_used) slot = i;
        sv->sessions[slot]->dead = 1;
        session_unref_locked(sv->sessions[slot]);
    }
    sv->sessions[slot] = s;
    pthread_mutex_unlock(&sv->lock);
    return s;
}

int session_remove(server *sv, const char *id) {
    int rc = -1;
    pthread_mutex_lock(&sv->lock);
    for (int i = 0; i < SERVE_MAX_SESSIONS; i++) {
        session *s = sv->sessions[i];
        if (s && strcmp(s->id, id) == 0) {
            s->dead = 1;
            sv->sessions[i] = NULL;
            session_unref_locked(s);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&sv->lock);
    return rc;
}

/* ======================================================================== */
/* Jobs                                                                     */
/* ======================================================================== */

job *job_new(job_kind kind, session *s) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->kind = kind;
    j->s = s; /* the caller's reference to s passes to the job */
    j->angle = NAN;
    j->refs = 1;
    j->state = JOB_QUEUED;
    atomic_init(&j->cancel, 0);
    return j;
}

static void job_free_locked(job *j) {
    session_unref_locked(j->s);
    free(j->mask);
    free(j->x0);
    free(j->out);
    free(j);
}

void job_unref(server *sv, job *j) {
    if (!j) return;
    pthread_mutex_lock(&sv->lock);
    if (--j->refs == 0) job_free_locked(j);
    pthread_mutex_unlock(&sv->lock);
}

job *job_get_locked(server *sv, uint64_t id) {
    job *j = sv->jobs[id % 256];
    if (!j || j->id != id) return NULL;
    j->refs++;
    return j;
}

int job_submit(server *sv, job *j) {
    pthread_mutex_lock(&sv->lock);
    if (sv->stopping || sv->queued >= SERVE_MAX_QUEUE) {
        pthread_mutex_unlock(&sv->lock);
        return -1;
    }
    j->id = ++sv->next_job;
    j->t_start = mono_now();
    job *old = sv->jobs[j->id % 256];
    if (old && --old->refs == 0) job_free_locked(old);
    sv->jobs[j->id % 256] = j;
    j->refs += 2; /* the table and the queue */
    j->next = NULL;
    if (sv->queue_tail) sv->queue_tail->next = j;
    else sv->queue_head = j;
    sv->queue_tail = j;
    sv->queued++;
    pthread_cond_broadcast(&sv->changed);
    pthread_mutex_unlock(&sv->lock);
    return 0;
}

static int finished(const job *j) { return j->state >= JOB_DONE; }

void job_wait(server *sv, job *j) {
    pthread_mutex_lock(&sv->lock);
    while (!finished(j)) pthread_cond_wait(&sv->changed, &sv->lock);
    pthread_mutex_unlock(&sv->lock);
}

/* with the lock held */
static void finish_locked(server *sv, job *j, job_state st) {
    j->state = st;
    j->t_end = mono_now();
    j->version++;
    pthread_cond_broadcast(&sv->changed);
}

/* with the lock held */
static void cancel_locked(server *sv, job *j, const char *why) {
    atomic_store(&j->cancel, 1);
    if (j->state == JOB_QUEUED) { /* still waiting: out of the queue now */
        job **pp = &sv->queue_head, *prev = NULL;
        while (*pp && *pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = j->next;
            if (sv->queue_tail == j) sv->queue_tail = prev;
            sv->queued--;
            j->refs--; /* the queue's reference; the table keeps one */
        }
        snprintf(j->error, sizeof j->error, "%s", why);
        finish_locked(sv, j, JOB_CANCELLED);
    }
}

void job_cancel(server *sv, job *j) {
    pthread_mutex_lock(&sv->lock);
    cancel_locked(sv, j, "cancelled before it started");
    pthread_mutex_unlock(&sv->lock);
}

void renders_supersede(server *sv, const session *s, int target) {
    pthread_mutex_lock(&sv->lock);
    for (int i = 0; i < 256; i++) {
        job *j = sv->jobs[i];
        if (j && j->kind == JOB_RENDER && j->s == s && j->target == target && !finished(j)) {
            j->superseded = 1;
            cancel_locked(sv, j, "superseded by a newer render");
        }
    }
    pthread_mutex_unlock(&sv->lock);
}

cJSON *job_json(server *sv, job *j) {
    static const char *const kinds[] = {"sample", "directions", "render", "transfer"};
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&sv->lock);
    cJSON_AddNumberToObject(o, "job", (double)j->id);
    cJSON_AddStringToObject(o, "kind", kinds[j->kind]);
    cJSON_AddStringToObject(o, "state", job_state_name(j->state));
    cJSON_AddStringToObject(o, "phase", j->phase);
    cJSON_AddNumberToObject(o, "done", j->done);
    cJSON_AddNumberToObject(o, "total", j->total);
    if (isfinite(j->angle)) cJSON_AddNumberToObject(o, "sin_angle", j->angle);
    else cJSON_AddNullToObject(o, "sin_angle");
    cJSON_AddNumberToObject(o, "seconds", (finished(j) ? j->t_end : mono_now()) - j->t_start);
    if (j->error[0]) cJSON_AddStringToObject(o, "error", j->error);
    if (j->s) cJSON_AddStringToObject(o, "session", j->s->id);
    cJSON_AddNumberToObject(o, "version", j->version);
    pthread_mutex_unlock(&sv->lock);
    return o;
}

/* ======================================================================== */
/* The worker                                                               */
/* ======================================================================== */

typedef struct prog_ctx {
    server *sv;
    job *j;
    const char *phase; /* shown instead of the library's phase, or NULL */
} prog_ctx;

/* the library's progress callback: record it, and pass a cancel on */
static void on_progress(const char *phase, int done, int total, void *user) {
    prog_ctx *c = user;
    double v = loco_progress_value();
    pthread_mutex_lock(&c->sv->lock);
    snprintf(c->j->phase, sizeof c->j->phase, "%s", c->phase ? c->phase : phase);
    c->j->done = done;
    c->j->total = total;
    if (isfinite(v)) c->j->angle = v;
    c->j->version++;
    pthread_cond_broadcast(&c->sv->changed);
    pthread_mutex_unlock(&c->sv->lock);
    if (atomic_load(&c->j->cancel)) loco_progress_cancel();
}

static void set_phase(server *sv, job *j, const char *phase) {
    pthread_mutex_lock(&sv->lock);
    snprintf(j->phase, sizeof j->phase, "%s", phase);
    j->done = j->total = 0;
    j->version++;
    pthread_cond_broadcast(&sv->changed);
    pthread_mutex_unlock(&sv->lock);
}

/* one image from x_t with strengths (n_s of them, over the rows of dirs) */
static loco_status render_one(server *sv, const loco_edit_params *ep, const float *xt, const float *dirs, int rank,
                              const float *str, int n_s, float *out) {
    loco_edit_move moves[SERVE_MAX_DIRS];
    int k = 0;
    for (int i = 0; i < n_s && i < rank; i++)
        if (str[i] != 0) moves[k++] = (loco_edit_move){dirs + sv->n * (size_t)i, str[i]};
    return loco_edit_render(sv->model, ep, xt, 1, &k, moves, k, out, NULL);
}

/* A preview of render_one: the same start x_t + sum_i s_i v_i, denoised on
 * SERVE_PREVIEW_EVALS points of the sampling grid between the edit point
 * and 0 (both kept) instead of every point: a few times fewer network
 * evaluations, an approximation the page shows until render_one's exact
 * image arrives. *evals: the evaluations made. */
static loco_status render_preview(server *sv, const loco_edit_params *ep, const float *xt, const float *dirs,
                                  int rank, const float *str, int n_s, float *out, int *evals, int *exact) {
    *evals = 0;
    *exact = 0;
    int e = 0;
    loco_status st = loco_edit_timestep(sv->model, ep, NULL, &e);
    if (st) return st;
    const int np = loco_ddim_points(ep->timesteps, ep->steps);
    if (ep->timesteps != LOCO_TIMESTEPS_AUTHORS || e <= 2 * SERVE_PREVIEW_EVALS || np < 2) {
        /* short schedules: the exact render costs at most twice a preview */
        *evals = e;
        *exact = 1;
        return render_one(sv, ep, xt, dirs, rank, str, n_s, out);
    }
    float *grid = malloc(sizeof(float) * (size_t)np), sub[SERVE_PREVIEW_EVALS + 1];
    if (!grid) return LOCO_E_NOMEM;
    if ((st = loco_ddim_timesteps(sv->model, ep->timesteps, ep->steps, grid))) {
        free(grid);
        return st;
    }
    const int K = SERVE_PREVIEW_EVALS;
    for (int k = 0; k <= K; k++) sub[k] = grid[(int)((long long)k * e / K)]; /* strictly increasing: e > K */
    float boost = 0; /* the grid timestep nearest boost_t * T, as loco_edit_decode takes it */
    if (ep->boost_t > 0) {
        double target = (double)ep->boost_t * sv->info.train_timesteps;
        int b = np - 1;
        for (int i = np - 1; i >= 1; i--)
            if (fabs(grid[i] - target) < fabs(grid[b] - target)) b = i;
        boost = grid[b];
    }
    free(grid);
    memcpy(out, xt, sizeof(float) * sv->n);
    for (int i = 0; i < n_s && i < rank; i++)
        for (size_t q = 0; q < sv->n; q++) out[q] += str[i] * dirs[sv->n * (size_t)i + q];
    st = loco_ddim_sample_cond(sv->model, NULL, 1, out, sub, K, 0, boost, ep->seed, ep->progress, ep->user);
    *evals = K;
    return st;
}

static loco_status run_prepare(server *sv, job *j, prog_ctx *pc) {
    session *s = j->s;
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.t_edit = j->ps.t_edit;
    rp.edit.steps = j->ps.steps;
    rp.edit.inv_steps = j->ps.inv_steps;
    rp.edit.boost_t = sv->info.default_boost_t;
    rp.edit.seed = j->ps.seed;
    rp.rank = j->ps.rank;
    rp.null_rank = j->ps.null_rank;
    rp.min_iter = j->ps.min_iter;
    rp.max_iter = j->ps.max_iter;
    rp.tol = j->ps.tol;
    rp.seed = j->ps.seed;
    rp.progress = on_progress;
    rp.user = pc;
    loco_status st = loco_edit_recipe_check(sv->model, &rp, j->mask);
    if (st) {
        j->error_status = 400;
        return st;
    }
    loco_edit_directions *d = NULL;
    if ((st = loco_edit_prepare(sv->model, &rp, s->x0, j->mask, &d))) return st;
    /* the reconstruction (every strength 0), shown beside the edits */
    set_phase(sv, j, "reconstruction");
    pc->phase = "reconstruction";
    float *recon = malloc(sizeof(float) * sv->n);
    loco_edit_params ep = rp.edit;
    ep.progress = on_progress;
    ep.user = pc;
    int zero = 0;
    if (!recon) st = LOCO_E_NOMEM;
    else st = loco_edit_render(sv->model, &ep, loco_edit_directions_xt(d), 1, &zero, NULL, 0, recon, NULL);
    if (st) {
        free(recon);
        loco_edit_directions_free(d);
        return st;
    }
    ep.progress = NULL;
    ep.user = NULL;
    pthread_mutex_lock(&sv->lock);
    loco_edit_directions_free(s->dirs);
    free(s->recon);
    free(s->dir_mask);
    free(s->edit);
    free(s->tx0), free(s->txt), free(s->trecon), free(s->tedit);
    s->tx0 = s->txt = s->trecon = s->tedit = NULL;
    s->edit = NULL;
    s->n_last = 0;
    s->dirs = d;
    s->recon = recon;
    s->dir_mask = j->mask;
    j->mask = NULL;
    s->ps = j->ps;
    s->ep = ep;
    s->seconds_prepare = mono_now() - j->t_start;
    pthread_mutex_unlock(&sv->lock);
    return LOCO_OK;
}

/* a failure the job explains itself (not the library) */
static loco_status job_fail(job *j, unsigned http, const char *msg) {
    j->error_status = http;
    snprintf(j->error, sizeof j->error, "%s", msg);
    return LOCO_E_INVALID_ARGUMENT;
}

static loco_status run_job(server *sv, job *j) {
    prog_ctx pc = {sv, j, NULL};
    session *s = j->s;
    loco_status st = LOCO_OK;
    switch (j->kind) {
    case JOB_SAMPLE:
        if (!(j->out = malloc(sizeof(float) * sv->n))) return LOCO_E_NOMEM;
        return loco_sample(sv->model, 1, 50, 0, j->sample_seed, 1, 1, j->out, on_progress, &pc);
    case JOB_PREPARE:
        return run_prepare(sv, j, &pc);
    case JOB_RENDER: {
        if (!s->dirs) {
            return job_fail(j, 409, "no directions yet: find them first");
        }
        const float *xt = j->target ? s->txt : loco_edit_directions_xt(s->dirs);
        if (!xt) {
            return job_fail(j, 409, "no transfer image yet: transfer first");
        }
        if (!(j->out = malloc(sizeof(float) * sv->n))) return LOCO_E_NOMEM;
        loco_edit_params ep = s->ep;
        ep.progress = on_progress;
        ep.user = &pc;
        double t0 = mono_now();
        if (j->preview)
            st = render_preview(sv, &ep, xt, loco_edit_directions_vectors(s->dirs), s->ps.rank, j->strengths,
                                j->n_strengths, j->out, &j->evals, &j->exact);
        else {
            j->exact = 1;
            loco_edit_timestep(sv->model, &ep, NULL, &j->evals);
            st = render_one(sv, &ep, xt, loco_edit_directions_vectors(s->dirs), s->ps.rank, j->strengths,
                            j->n_strengths, j->out);
        }
        j->seconds = mono_now() - t0;
        if (st || !j->exact) return st; /* an approximate preview is not kept */
        float *copy = malloc(sizeof(float) * sv->n);
        if (copy) memcpy(copy, j->out, sizeof(float) * sv->n);
        pthread_mutex_lock(&sv->lock);
        if (j->target) {
            free(s->tedit);
            s->tedit = copy;
        } else {
            free(s->edit);
            s->edit = copy;
        }
        memcpy(s->last_strengths, j->strengths, sizeof j->strengths);
        s->n_last = j->n_strengths;
        pthread_mutex_unlock(&sv->lock);
        return LOCO_OK;
    }
    case JOB_TRANSFER: {
        if (!s->dirs) {
            return job_fail(j, 409, "no directions yet: find them first");
        }
        float *xt = malloc(sizeof(float) * sv->n), *rec = malloc(sizeof(float) * sv->n),
              *ed = malloc(sizeof(float) * sv->n);
        if (!xt || !rec || !ed) {
            free(xt), free(rec), free(ed);
            return LOCO_E_NOMEM;
        }
        loco_edit_params ep = s->ep;
        ep.progress = on_progress;
        ep.user = &pc;
        int zero = 0;
        st = loco_edit_encode(sv->model, &ep, j->x0, xt, NULL);
        if (!st) st = loco_edit_render(sv->model, &ep, xt, 1, &zero, NULL, 0, rec, NULL);
        if (!st)
            st = render_one(sv, &ep, xt, loco_edit_directions_vectors(s->dirs), s->ps.rank, j->strengths,
                            j->n_strengths, ed);
        if (st) {
            free(xt), free(rec), free(ed);
            return st;
        }
        pthread_mutex_lock(&sv->lock);
        free(s->tx0), free(s->txt), free(s->trecon), free(s->tedit);
        s->tx0 = j->x0;
        j->x0 = NULL;
        s->txt = xt;
        s->trecon = rec;
        s->tedit = ed;
        pthread_mutex_unlock(&sv->lock);
        return LOCO_OK;
    }
    }
    return LOCO_E_INVALID_ARGUMENT;
}

static void *worker_main(void *arg) {
    server *sv = arg;
    pthread_mutex_lock(&sv->lock);
    for (;;) {
        while (!sv->stopping && !sv->queue_head) pthread_cond_wait(&sv->changed, &sv->lock);
        if (sv->stopping) break;
        job *j = sv->queue_head;
        sv->queue_head = j->next;
        if (!sv->queue_head) sv->queue_tail = NULL;
        sv->queued--;
        j->state = JOB_RUNNING;
        j->version++;
        pthread_cond_broadcast(&sv->changed);
        pthread_mutex_unlock(&sv->lock);
        loco_status st = atomic_load(&j->cancel) ? LOCO_E_CANCELLED : run_job(sv, j);
        const char *msg = loco_last_error();
        pthread_mutex_lock(&sv->lock);
        if (st == LOCO_OK) finish_locked(sv, j, JOB_DONE);
        else if (!j->error[0]) {
            snprintf(j->error, sizeof j->error, "%s",
                     st == LOCO_E_CANCELLED ? (j->superseded ? "superseded by a newer render" : "cancelled")
                     : msg[0]               ? msg
                                            : loco_strerror(st));
            if (!j->error_status) j->error_status = st == LOCO_E_INVALID_ARGUMENT ? 400 : 500;
            finish_locked(sv, j, st == LOCO_E_CANCELLED ? JOB_CANCELLED : JOB_FAILED);
        } else finish_locked(sv, j, JOB_FAILED);
        if (--j->refs == 0) job_free_locked(j); /* the queue's reference */
    }
    pthread_mutex_unlock(&sv->lock);
    return NULL;
}

int serve_state_start(server *sv) {
    if (pthread_create(&sv->worker, NULL, worker_main, sv)) return -1;
    sv->worker_started = 1;
    return 0;
}

void serve_state_stop(server *sv) {
    pthread_mutex_lock(&sv->lock);
    sv->stopping = 1;
    for (int i = 0; i < 256; i++)
        if (sv->jobs[i]) atomic_store(&sv->jobs[i]->cancel, 1);
    pthread_cond_broadcast(&sv->changed);
    pthread_mutex_unlock(&sv->lock);
    if (sv->worker_started) pthread_join(sv->worker, NULL);
    sv->worker_started = 0;
    pthread_mutex_lock(&sv->lock);
    while (sv->queue_head) { /* never started */
        job *j = sv->queue_head;
        sv->queue_head = j->next;
        finish_locked(sv, j, JOB_CANCELLED);
        if (--j->refs == 0) job_free_locked(j);
    }
    sv->queue_tail = NULL;
    sv->queued = 0;
    for (int i = 0; i < 256; i++)
        if (sv->jobs[i]) {
            if (--sv->jobs[i]->refs == 0) job_free_locked(sv->jobs[i]);
            sv->jobs[i] = NULL;
        }
    for (int i = 0; i < SERVE_MAX_SESSIONS; i++)
        if (sv->sessions[i]) {
            session_unref_locked(sv->sessions[i]);
            sv->sessions[i] = NULL;
        }
    pthread_mutex_unlock(&sv->lock);
}

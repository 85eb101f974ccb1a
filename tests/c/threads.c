/* The C ABI from many threads (tests/c_abi.rs builds and runs it):
 *   - 8 threads x 200 calls of one plugin's `echo`, each result checked;
 *   - 4 threads x 25 calls of `double`, which calls the host capability `host.double`
 *     (a C callback) from inside the plugin: each answer checked, each callback on an engine
 *     thread, never on a caller's;
 *   - two `meet` calls whose callbacks must be running at the same time to return true;
 *   - events: the plugin's `ready` after load, its `stopped` after shutdown, by polling;
 *   - typed errors: unknown command, unknown plugin, bad JSON, null pointers, non-UTF-8,
 *     use after shutdown.
 * Usage: threads PLUGIN_DIR WORK_DIR. Prints "threads: all checks passed" and exits 0. */
#include "plugbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define THREADS 8
#define CALLS 200
#define HOST_THREADS 4
#define HOST_CALLS 25

static PlugboxEngine *engine;
static _Thread_local int is_caller; /* set on threads that call plugbox_engine_call */
static atomic_int callbacks, callbacks_on_callers;
static pthread_mutex_t meet_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t meet_cond = PTHREAD_COND_INITIALIZER;
static int met;

static void fail(const char *what, PlugboxError *err) {
    fprintf(stderr, "threads: FAILED %s: %s: %s\n", what, plugbox_error_code(err),
            plugbox_error_message(err));
    exit(1);
}

static void expect_code(const char *what, PlugboxError *err, const char *code) {
    if (!err || strcmp(plugbox_error_code(err), code) != 0) {
        fprintf(stderr, "threads: FAILED %s: expected %s, got %s\n", what, code,
                err ? plugbox_error_code(err) : "success");
        exit(1);
    }
    printf("%s -> %s\n", what, code);
    plugbox_error_free(err);
}

/* The number after "key": in flat JSON. */
static long number(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    return at ? strtol(at + strlen(pattern), NULL, 10) : -1;
}

static void host_double(void *user, const char *cap, const char *plugin, const char *args,
                        PlugboxReply *reply) {
    (void)user; (void)cap; (void)plugin;
    atomic_fetch_add(&callbacks, 1);
    if (is_caller) atomic_fetch_add(&callbacks_on_callers, 1);
    char out[64];
    snprintf(out, sizeof out, "{\"doubled\": %ld}", 2 * number(args, "n"));
    plugbox_reply_ok(reply, out);
}

/* Returns {"met": true} once two calls are inside this callback at once (waits at most 30 s,
 * only to turn a hang into a failure). */
static void host_meet(void *user, const char *cap, const char *plugin, const char *args,
                      PlugboxReply *reply) {
    (void)user; (void)cap; (void)plugin; (void)args;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&meet_lock);
    met++;
    pthread_cond_broadcast(&meet_cond);
    int waited = 0;
    while (met < 2 && waited == 0) waited = pthread_cond_timedwait(&meet_cond, &meet_lock, &deadline);
    int together = met >= 2;
    pthread_mutex_unlock(&meet_lock);
    plugbox_reply_ok(reply, together ? "{\"met\": true}" : "{\"met\": false}");
}

static void *echo_thread(void *arg) {
    int t = (int)(long)arg;
    is_caller = 1;
    for (int i = 0; i < CALLS; i++) {
        char args[64], expected[64];
        snprintf(args, sizeof args, "{\"n\": %d, \"thread\": %d}", i, t);
        snprintf(expected, sizeof expected, "{\"n\":%d,\"thread\":%d}", i, t);
        char *result = NULL;
        PlugboxError *err = plugbox_engine_call(engine, "c-threads", "echo", args, &result);
        if (err) fail("echo", err);
        if (strcmp(result, expected) != 0) {
            fprintf(stderr, "threads: FAILED echo: %s != %s\n", result, expected);
            exit(1);
        }
        plugbox_string_free(result);
    }
    return NULL;
}

static void *double_thread(void *arg) {
    int t = (int)(long)arg;
    is_caller = 1;
    for (int i = 0; i < HOST_CALLS; i++) {
        char args[32], expected[32];
        snprintf(args, sizeof args, "{\"n\": %d}", 1000 * t + i);
        snprintf(expected, sizeof expected, "%d", 2 * (1000 * t + i));
        char *result = NULL;
        PlugboxError *err = plugbox_engine_call(engine, "c-threads", "double", args, &result);
        if (err) fail("double", err);
        if (strcmp(result, expected) != 0) {
            fprintf(stderr, "threads: FAILED double: %s != %s\n", result, expected);
            exit(1);
        }
        plugbox_string_free(result);
    }
    return NULL;
}

static void *meet_thread(void *arg) {
    is_caller = 1;
    char args[32], *result = NULL;
    snprintf(args, sizeof args, "{\"who\": %ld}", (long)arg);
    PlugboxError *err = plugbox_engine_call(engine, "c-threads", "meet", args, &result);
    if (err) fail("meet", err);
    if (strcmp(result, "true") != 0) {
        fprintf(stderr, "threads: FAILED meet: the callbacks did not run at once (%s)\n", result);
        exit(1);
    }
    plugbox_string_free(result);
    return NULL;
}

/* Polls events (each wait capped at 30 s, only to turn a hang into a failure) until one
 * holds `needle`. */
static void await_event(const char *needle) {
    for (;;) {
        char *event = NULL;
        PlugboxError *err = plugbox_engine_next_event(engine, 30000, &event);
        if (err) fail("next_event", err);
        if (!event) { fprintf(stderr, "threads: FAILED no event %s\n", needle); exit(1); }
        int found = strstr(event, needle) != NULL;
        plugbox_string_free(event);
        if (found) break;
    }
    printf("event %s\n", needle);
}

static void run(void *(*body)(void *), int n) {
    pthread_t threads[THREADS];
    for (long t = 0; t < n; t++) pthread_create(&threads[t], NULL, body, (void *)t);
    for (int t = 0; t < n; t++) pthread_join(threads[t], NULL);
}

static void bad_input(void) {
    char *result = NULL;
    PlugboxEngine *none = NULL;
    expect_code("unknown command", plugbox_engine_call(engine, "c-threads", "nope", "{}", &result), "invalid");
    expect_code("unknown plugin", plugbox_engine_call(engine, "ghost", "echo", "{}", &result), "not_loaded");
    expect_code("args not JSON", plugbox_engine_call(engine, "c-threads", "echo", "{n:", &result), "invalid");
    expect_code("args duplicate key", plugbox_engine_call(engine, "c-threads", "echo", "{\"n\":1,\"n\":2}", &result), "invalid");
    expect_code("null engine", plugbox_engine_call(NULL, "c-threads", "echo", "{}", &result), "null_argument");
    expect_code("null command", plugbox_engine_call(engine, "c-threads", NULL, "{}", &result), "null_argument");
    expect_code("null args", plugbox_engine_call(engine, "c-threads", "echo", NULL, &result), "null_argument");
    expect_code("null out_result", plugbox_engine_call(engine, "c-threads", "echo", "{}", NULL), "null_argument");
    expect_code("non-UTF-8 command", plugbox_engine_call(engine, "c-threads", "\xff\xfe", "{}", &result), "not_utf8");
    expect_code("null config", plugbox_engine_new(NULL, &none), "null_argument");
    expect_code("null out_engine", plugbox_engine_new("{}", NULL), "null_argument");
    expect_code("config unknown field", plugbox_engine_new("{\"audit_log\": \"a\", \"state_dir\": \"s\", \"x\": 1}", &none), "invalid");
    expect_code("null callback", plugbox_engine_register(engine, "host.other", NULL, NULL), "null_argument");
    expect_code("bad capability name", plugbox_engine_register(engine, "Host Other", host_double, NULL), "capability");
    expect_code("null dir", plugbox_engine_load(engine, NULL, "{}", NULL), "null_argument");
    expect_code("ungranted load", plugbox_engine_load(engine, "/nonexistent", "{\"all_requested\": true}", NULL), "invalid");
    expect_code("null event out", plugbox_engine_next_event(engine, 0, NULL), "null_argument");
    if (result != NULL || none != NULL) { fprintf(stderr, "threads: FAILED an out-pointer was written on error\n"); exit(1); }
    if (strcmp(plugbox_error_code(NULL), "null_argument") != 0) { fprintf(stderr, "threads: FAILED null error\n"); exit(1); }
    plugbox_error_free(NULL);
    plugbox_string_free(NULL);
    plugbox_engine_free(NULL);
    plugbox_reply_ok(NULL, "1");
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: threads PLUGIN_DIR WORK_DIR\n"); return 2; }
    char config[4096];
    snprintf(config, sizeof config, "{\"audit_log\": \"%s/audit.jsonl\", \"state_dir\": \"%s/state\"}", argv[2], argv[2]);
    PlugboxError *err = plugbox_engine_new(config, &engine);
    if (err) fail("engine", err);
    if ((err = plugbox_engine_register(engine, "host.double", host_double, NULL))) fail("register", err);
    if ((err = plugbox_engine_register(engine, "host.meet", host_meet, NULL))) fail("register", err);
    const char *grant = "{\"grant\": {\"schema\": 1, \"capabilities\": {\"host.double\": {}, \"host.meet\": {}}}}";
    if ((err = plugbox_engine_load(engine, argv[1], grant, NULL))) fail("load", err);
    await_event("\"event\":\"ready\",\"plugin\":\"c-threads\"");

    run(echo_thread, THREADS);
    printf("echo: %d threads x %d calls checked\n", THREADS, CALLS);
    run(double_thread, HOST_THREADS);
    int seen = atomic_load(&callbacks);
    if (seen != HOST_THREADS * HOST_CALLS || atomic_load(&callbacks_on_callers) != 0) {
        fprintf(stderr, "threads: FAILED %d callbacks, %d on caller threads\n", seen, atomic_load(&callbacks_on_callers));
        return 1;
    }
    printf("double: %d host callbacks, all on engine threads\n", seen);
    run(meet_thread, 2);
    printf("meet: two callbacks ran at once\n");
    bad_input();

    if ((err = plugbox_engine_shutdown(engine))) fail("shutdown", err);
    await_event("\"event\":\"stopped\",\"plugin\":\"c-threads\"");
    char *result = NULL;
    expect_code("call after shutdown", plugbox_engine_call(engine, "c-threads", "echo", "{}", &result), "shut_down");
    plugbox_engine_free(engine);
    printf("threads: all checks passed\n");
    return 0;
}

/* A tiny test harness: CHECK records a failure and goes on; each test is one function; finish()
 * prints "N passed, M failed" and gives the exit status. */
#ifndef BOXLITE_TEST_HARNESS_H
#define BOXLITE_TEST_HARNESS_H

#include <boxlite.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tests_passed, tests_failed, current_test_failed;

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
      current_test_failed = 1;                                                          \
    }                                                                                   \
  } while (0)

/* Checks that a call returns `expected`; on a mismatch prints both codes and the message. */
#define CHECK_RESULT(call, expected)                                                    \
  do {                                                                                  \
    boxlite_result got_ = (call);                                                       \
    if (got_ != (expected)) {                                                           \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); errmsg: %s\n",    \
              __FILE__, __LINE__, #call, (int)got_, boxlite_result_str(got_),          \
              (int)(expected), boxlite_result_str(expected), boxlite_errmsg());         \
      current_test_failed = 1;                                                          \
    }                                                                                   \
  } while (0)

#define CHECK_OK(call) CHECK_RESULT(call, BOXLITE_OK)

/* Checks that this thread's last error message contains `needle`. */
#define CHECK_ERRMSG(needle)                                                            \
  do {                                                                                  \
    if (!strstr(boxlite_errmsg(), (needle))) {                                          \
      fprintf(stderr, "%s:%d: errmsg lacks \"%s\": %s\n", __FILE__, __LINE__, (needle), \
              boxlite_errmsg());                                                        \
      current_test_failed = 1;                                                          \
    }                                                                                   \
  } while (0)

#define RUN(test) run_test(#test, test)

static void run_test(const char *name, void (*test)(void)) {
  current_test_failed = 0;
  test();
  if (current_test_failed) {
    tests_failed++;
    printf("FAIL %s\n", name);
  } else {
    tests_passed++;
    printf("ok   %s\n", name);
  }
  fflush(stdout);
}

static int finish(void) {
  printf("%d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed == 0 ? 0 : 1;
}

/* An environment variable the test run needs, or exit with how to provide it. */
static const char *fixture(const char *name) {
  const char *value = getenv(name);
  if (!value || !*value) {
    fprintf(stderr, "%s is not set: run bindings/c/test.sh, or `eval \"$(bash scripts/test-images.sh)\"` first\n", name);
    exit(2);
  }
  return value;
}

/* A runtime on `home` that pulls from the test registry `registry` (plain http); NULL on failure
 * (counted). */
static inline boxlite_runtime *open_runtime(const char *home, const char *registry) {
  char options[4096];
  boxlite_runtime *opened = NULL;
  snprintf(options, sizeof options, "{\"home\": \"%s\", \"registries\": [{\"host\": \"%s\", \"insecure\": true}]}",
           home, registry);
  CHECK_OK(boxlite_runtime_new(options, &opened));
  return opened;
}

#endif

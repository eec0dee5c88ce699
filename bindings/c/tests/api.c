/* C ABI tests that boot no VM: versions, result codes, error messages, NULL arguments, and
 * options rejected before any work. Needs BOXLITE_TEST_HOME (an empty directory). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

static boxlite_runtime *rt;

static void errmsg_is_empty_before_any_failure(void) {
  CHECK(strcmp(boxlite_errmsg(), "") == 0);
}

static void version_matches_the_header(void) {
  CHECK(strcmp(boxlite_version(), BOXLITE_VERSION) == 0);
  char numbers[64];
  snprintf(numbers, sizeof numbers, "%d.%d.%d", BOXLITE_VERSION_MAJOR, BOXLITE_VERSION_MINOR,
           BOXLITE_VERSION_PATCH);
  CHECK(strcmp(numbers, BOXLITE_VERSION) == 0);
}

static void every_result_has_static_text(void) {
  CHECK(strcmp(boxlite_result_str(BOXLITE_OK), "ok") == 0);
  CHECK(strcmp(boxlite_result_str(BOXLITE_ERR_NOT_FOUND), "not found") == 0);
  CHECK(strcmp(boxlite_result_str(BOXLITE_ERR_ABORTED), "aborted") == 0);
  /* Codes are only appended: the last one stays last, and the earlier ones keep their numbers. */
  CHECK(BOXLITE_ERR_TIMEOUT == 15 && BOXLITE_ERR_ABORTED == 16);
  for (int code = BOXLITE_OK; code <= BOXLITE_ERR_ABORTED; code++) {
    CHECK(strcmp(boxlite_result_str(code), "unknown result code") != 0);
  }
  CHECK(strcmp(boxlite_result_str(-1), "unknown result code") == 0);
  CHECK(strcmp(boxlite_result_str(BOXLITE_ERR_ABORTED + 1), "unknown result code") == 0);
}

static void free_of_null_is_a_no_op(void) {
  boxlite_runtime_free(NULL);
  boxlite_box_free(NULL);
  boxlite_exec_free(NULL);
  boxlite_canceller_free(NULL);
}

static void null_arguments_are_named(void) {
  boxlite_runtime *new_rt = NULL;
  boxlite_box *box = NULL;
  boxlite_exec *exec = NULL;
  const char *argv[] = {"true"};
  uint8_t buf[16];
  size_t n = 0;
  int code = 0, sig = 0;
  bool timed_out = false;

  CHECK_RESULT(boxlite_runtime_new(NULL, NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`out`");
  CHECK_RESULT(boxlite_box_create(NULL, "busybox:latest", NULL, &box), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`rt`");
  CHECK_RESULT(boxlite_box_create(rt, NULL, NULL, &box), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`image`");
  /* The out-parameter is checked before any work: no pull, no box. */
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", NULL, NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`out`");
  CHECK_RESULT(boxlite_box_get(NULL, "x", &box), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_box_get(rt, NULL, &box), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`id_or_name`");
  CHECK_RESULT(boxlite_box_get(rt, "x", NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK(boxlite_box_id(NULL) == NULL);
  CHECK_RESULT(boxlite_box_start(NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`box`");
  CHECK_RESULT(boxlite_box_stop(NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_box_remove(NULL, true), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_box_exec(NULL, argv, 1, NULL, &exec), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`box`");
  CHECK_RESULT(boxlite_exec_read(NULL, BOXLITE_STDOUT, buf, sizeof buf, 0, &n), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`exec`");
  CHECK_RESULT(boxlite_exec_write_stdin(NULL, buf, 1), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_close_stdin(NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_signal(NULL, 15), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_kill(NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_wait(NULL, 0, &code, &sig, &timed_out), BOXLITE_ERR_NULL_POINTER);
  CHECK(new_rt == NULL && box == NULL && exec == NULL && n == 0);
}

static void null_arguments_of_pull_and_canceller_are_named(void) {
  boxlite_canceller *canceller = NULL;
  CHECK_RESULT(boxlite_canceller_new(NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`out`");
  CHECK_RESULT(boxlite_canceller_cancel(NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`canceller`");
  CHECK_RESULT(boxlite_runtime_pull(NULL, "busybox:latest", NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`rt`");
  CHECK_OK(boxlite_canceller_new(&canceller));
  CHECK(canceller != NULL);
  /* Arguments are checked before the canceller: a NULL reference is named even when cancelled. */
  CHECK_OK(boxlite_canceller_cancel(canceller));
  CHECK_RESULT(boxlite_runtime_pull(rt, NULL, canceller), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`reference`");
  boxlite_canceller_free(canceller);
}

static void a_malformed_reference_is_an_invalid_argument(void) {
  CHECK_RESULT(boxlite_runtime_pull(rt, "", NULL), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_runtime_pull(rt, "Upper/Case:tag", NULL), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_runtime_pull(rt, "\xff", NULL), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("UTF-8");
}

static void out_params_are_untouched_on_failure(void) {
  boxlite_box *box = (boxlite_box *)&rt; /* a sentinel: any non-NULL value */
  CHECK_RESULT(boxlite_box_get(rt, "no-such-box", &box), BOXLITE_ERR_NOT_FOUND);
  CHECK(box == (boxlite_box *)&rt);
  CHECK_ERRMSG("no-such-box");
}

static void out_of_range_options_are_invalid_arguments(void) {
  boxlite_box *box = NULL;
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"memory_mib\": 64}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("memory_mib 64 is out of range");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"cpus\": 0}", &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("cpus 0");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"name\": \"no spaces\"}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_box_create(rt, "", NULL, &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK(box == NULL);
}

static void malformed_options_json_is_rejected(void) {
  boxlite_box *box = NULL;
  boxlite_runtime *other = NULL;
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"memory\": 512}", &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown field `memory`");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{cpus: 1}", &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("options_json");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"cpus\": \"two\"}", &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_runtime_new("{\"accel\": \"hvf\"}", &other), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("hvf");
  CHECK_RESULT(boxlite_runtime_new("{\"registry\": []}", &other), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown field `registry`");
  CHECK(box == NULL && other == NULL);
}

static void bad_network_options_are_named_before_any_work(void) {
  boxlite_box *box = NULL;
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"ports\": [{\"host_port\": 8080, \"guest_port\": 0}]}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("port 127.0.0.1:8080:0/tcp: the guest port must be 1 to 65535");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"ports\": [{\"guest_port\": 80}, {\"host_port\": 70000, \"guest_port\": 80}]}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("ports[1] {\"guest_port\":80,\"host_port\":70000} is not a port");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"ports\": [{\"hostPort\": 1, \"guest_port\": 80}]}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown field `hostPort`");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"ports\": [{\"guest_port\": 53, \"protocol\": \"sctp\"}]}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown variant `sctp`");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest",
                                  "{\"ports\": [{\"host_port\": 18080, \"guest_port\": 80}, {\"host_port\": 18080, \"guest_port\": 81}]}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("host port 127.0.0.1:18080/tcp is published twice");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"network\": \"none\", \"ports\": [{\"guest_port\": 80}]}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("ports need a network");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"network\": {\"allow\": [\"pypi.org\", \"http://x\"]}}", &box),
               BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("network entry 'http://x'");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"network\": \"enabled\"}", &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown variant `enabled`");
  CHECK_RESULT(boxlite_box_set_network(NULL, "\"default\""), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`box`");
  CHECK(box == NULL);
}

/* A port this process holds: the create fails at once, naming it, and leaves no box. */
static void a_host_port_in_use_fails_the_create_naming_it(void) {
  int held = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  CHECK(held >= 0 && bind(held, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(held, 1) == 0 &&
        getsockname(held, (struct sockaddr *)&addr, &len) == 0);
  char options[256], needle[64];
  snprintf(options, sizeof options, "{\"ports\": [{\"host_port\": %d, \"guest_port\": 80}]}", ntohs(addr.sin_port));
  snprintf(needle, sizeof needle, "host port 127.0.0.1:%d/tcp cannot be used", ntohs(addr.sin_port));
  boxlite_box *box = NULL;
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", options, &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG(needle);
  CHECK(box == NULL);
  close(held);
}

static void strings_must_be_utf8(void) {
  boxlite_box *box = NULL;
  CHECK_RESULT(boxlite_box_get(rt, "\xff\xfe", &box), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("UTF-8");
}

static void *fail_on_another_thread(void *unused) {
  (void)unused;
  boxlite_box *box = NULL;
  boxlite_result r = boxlite_box_get(rt, "other-thread-box", &box);
  return strstr(boxlite_errmsg(), "other-thread-box") && r == BOXLITE_ERR_NOT_FOUND ? (void *)1 : NULL;
}

static void errmsg_is_per_thread_and_survives_successful_calls(void) {
  boxlite_box *box = NULL;
  CHECK_RESULT(boxlite_box_get(rt, "main-thread-box", &box), BOXLITE_ERR_NOT_FOUND);
  const char *before = boxlite_errmsg();
  pthread_t thread;
  void *thread_ok = NULL;
  CHECK(pthread_create(&thread, NULL, fail_on_another_thread, NULL) == 0);
  CHECK(pthread_join(thread, &thread_ok) == 0);
  CHECK(thread_ok == (void *)1);
  CHECK(strcmp(boxlite_version(), BOXLITE_VERSION) == 0);
  CHECK(boxlite_errmsg() == before);
  CHECK_ERRMSG("main-thread-box");
}

static void a_second_runtime_on_the_same_home_works(void) {
  boxlite_runtime *other = NULL;
  char options[4096];
  snprintf(options, sizeof options, "{\"home\": \"%s\", \"accel\": \"tcg\"}", fixture("BOXLITE_TEST_HOME"));
  CHECK_OK(boxlite_runtime_new(options, &other));
  CHECK(other != NULL);
  boxlite_runtime_free(other);
}

int main(void) {
  char options[4096];
  snprintf(options, sizeof options, "{\"home\": \"%s\"}", fixture("BOXLITE_TEST_HOME"));
  if (boxlite_runtime_new(options, &rt) != BOXLITE_OK) {
    fprintf(stderr, "boxlite_runtime_new: %s\n", boxlite_errmsg());
    return 1;
  }
  RUN(errmsg_is_empty_before_any_failure);
  RUN(version_matches_the_header);
  RUN(every_result_has_static_text);
  RUN(free_of_null_is_a_no_op);
  RUN(null_arguments_are_named);
  RUN(null_arguments_of_pull_and_canceller_are_named);
  RUN(a_malformed_reference_is_an_invalid_argument);
  RUN(out_params_are_untouched_on_failure);
  RUN(out_of_range_options_are_invalid_arguments);
  RUN(malformed_options_json_is_rejected);
  RUN(bad_network_options_are_named_before_any_work);
  RUN(a_host_port_in_use_fails_the_create_naming_it);
  RUN(strings_must_be_utf8);
  RUN(errmsg_is_per_thread_and_survives_successful_calls);
  RUN(a_second_runtime_on_the_same_home_works);
  boxlite_runtime_free(rt);
  return finish();
}

/* C ABI tests against real VMs booted from the local test registry. One box serves every case
 * that does not need its own. Needs REGISTRY (scripts/test-images.sh) and BOXLITE_TEST_HOME (an
 * empty directory; the warm start case opens a fresh home of its own inside it). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static const char *home;
static const char *registry;
static boxlite_runtime *rt;
static boxlite_box *box; /* shared by the cases below */

/* ------------------------------------------------------------------ helpers */

typedef struct {
  uint8_t *data;
  size_t len;
} bytes;

static void append(bytes *b, const uint8_t *data, size_t n) {
  b->data = realloc(b->data, b->len + n + 1);
  if (!b->data) abort();
  memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = 0; /* so text output can be compared as a string */
}

static const char *text(const bytes *b) { return b->data ? (const char *)b->data : ""; }

/* One output stream read to its end, on a thread of its own. */
typedef struct {
  boxlite_exec *exec;
  boxlite_stream stream;
  bytes output;
  boxlite_result result;
} stream_reader;

static void *read_to_end(void *arg) {
  stream_reader *r = arg;
  uint8_t buf[64 * 1024];
  for (;;) {
    size_t n = 0;
    r->result = boxlite_exec_read(r->exec, r->stream, buf, sizeof buf, -1, &n);
    if (r->result != BOXLITE_OK) {
      fprintf(stderr, "read of stream %d failed: %s\n", r->stream, boxlite_errmsg());
      break;
    }
    if (n == 0) break;
    append(&r->output, buf, n);
  }
  return NULL;
}

typedef struct {
  bytes out, err;
  int exit_code, signal;
  bool timed_out;
} completed;

/* Runs argv in `b`, reads stdout and stderr at the same time, waits; false (with the failure
 * reported) if any call fails. */
static bool run(boxlite_box *b, const char *options_json, size_t argc, const char *const *argv,
                completed *done) {
  boxlite_exec *exec = NULL;
  memset(done, 0, sizeof *done);
  CHECK_OK(boxlite_box_exec(b, argv, argc, options_json, &exec));
  if (!exec) return false;
  stream_reader out = {exec, BOXLITE_STDOUT, {0}, BOXLITE_OK};
  stream_reader err = {exec, BOXLITE_STDERR, {0}, BOXLITE_OK};
  pthread_t out_thread, err_thread;
  CHECK(pthread_create(&out_thread, NULL, read_to_end, &out) == 0);
  CHECK(pthread_create(&err_thread, NULL, read_to_end, &err) == 0);
  pthread_join(out_thread, NULL);
  pthread_join(err_thread, NULL);
  CHECK_OK(out.result);
  CHECK_OK(err.result);
  boxlite_result waited = boxlite_exec_wait(exec, -1, &done->exit_code, &done->signal, &done->timed_out);
  CHECK_OK(waited);
  boxlite_exec_free(exec);
  done->out = out.output;
  done->err = err.output;
  return out.result == BOXLITE_OK && err.result == BOXLITE_OK && waited == BOXLITE_OK;
}

static bool sh(boxlite_box *b, const char *script, completed *done) {
  const char *argv[] = {"sh", "-c", script};
  return run(b, NULL, 3, argv, done);
}

static void release(completed *done) {
  free(done->out.data);
  free(done->err.data);
}

/* Box supervisors (each owns one VM) this process started that still run (zombies, which have
 * ended, do not count). */
static int box_supervisors(void) {
  int count = 0;
  DIR *proc = opendir("/proc");
  if (!proc) return -1;
  struct dirent *entry;
  while ((entry = readdir(proc))) {
    char path[300], stat_line[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", entry->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(stat_line, 1, sizeof stat_line - 1, f);
    fclose(f);
    stat_line[n] = 0;
    /* "pid (comm) state ppid ...": comm may hold spaces, so parse around the last ')'. */
    char *comm = strchr(stat_line, '('), *end = strrchr(stat_line, ')');
    char state = 0;
    int ppid = 0;
    if (comm && end && sscanf(end + 1, " %c %d", &state, &ppid) == 2 && ppid == getpid() &&
        state != 'Z' && strncmp(comm + 1, "boxlite-shim)", 13) == 0)
      count++;
  }
  closedir(proc);
  return count;
}

static bool box_dir_exists(const char *id) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/boxes/%s", home, id);
  return stat(path, &st) == 0 || errno != ENOENT;
}

static size_t box_dirs(void) {
  char path[4096];
  size_t count = 0;
  snprintf(path, sizeof path, "%s/boxes", home);
  DIR *dir = opendir(path);
  if (!dir) return 0;
  struct dirent *entry;
  while ((entry = readdir(dir)))
    if (entry->d_name[0] != '.') count++;
  closedir(dir);
  return count;
}

static bool all_bytes_are(const bytes *b, uint8_t value) {
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i] != value) return false;
  return true;
}

/* ------------------------------------------------------------------ cases */

static void a_missing_image_is_an_image_error(void) {
  char image[512];
  boxlite_box *missing = NULL;
  size_t before = box_dirs();
  snprintf(image, sizeof image, "%s/no-such-image:v1", registry);
  CHECK_RESULT(boxlite_box_create(rt, image, NULL, &missing), BOXLITE_ERR_IMAGE);
  CHECK_ERRMSG("no-such-image");
  CHECK_ERRMSG(registry);
  CHECK(missing == NULL);
  CHECK(box_dirs() == before);
}

static void a_box_is_created_and_found_by_name_and_id(void) {
  CHECK_OK(boxlite_box_create(rt, "busybox:latest",
                              "{\"name\": \"c-tests\", \"env\": {\"BOX_VAR\": \"from-box\"}}", &box));
  if (!box) {
    fprintf(stderr, "cannot go on without the shared box\n");
    exit(finish() | 1);
  }
  const char *id = boxlite_box_id(box);
  CHECK(id && strlen(id) == 13);
  boxlite_box *by_name = NULL, *by_id = NULL;
  CHECK_OK(boxlite_box_get(rt, "c-tests", &by_name));
  CHECK_OK(boxlite_box_get(rt, id, &by_id));
  CHECK(by_name && strcmp(boxlite_box_id(by_name), id) == 0);
  CHECK(by_id && strcmp(boxlite_box_id(by_id), id) == 0);
  boxlite_box_free(by_name);
  boxlite_box_free(by_id);
  boxlite_box *taken = NULL;
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"name\": \"c-tests\"}", &taken),
               BOXLITE_ERR_ALREADY_EXISTS);
  CHECK(box_dir_exists(id));
}

static void echo_prints_hi(void) {
  const char *argv[] = {"echo", "hi"};
  completed done;
  CHECK_OK(boxlite_box_start(box)); /* boots here; exec would boot it too */
  if (run(box, NULL, 2, argv, &done)) {
    CHECK(strcmp(text(&done.out), "hi\n") == 0);
    CHECK(done.err.len == 0);
    CHECK(done.exit_code == 0 && done.signal == 0 && !done.timed_out);
  }
  release(&done);
}

/* A C program keeps SIGPIPE's default (this one does too), which would end it when a socket the
 * library writes to closes (a box's supervisor exits on suspend or stop): the library's threads
 * block it, so such a write fails with EPIPE instead. */
static void the_library_threads_block_sigpipe(void) {
  DIR *tasks = opendir("/proc/self/task");
  CHECK(tasks != NULL);
  if (!tasks) return;
  int library_threads = 0;
  struct dirent *t;
  while ((t = readdir(tasks))) {
    if (t->d_name[0] == '.') continue;
    char path[300], line[256], name[32] = "";
    unsigned long long blocked = 0;
    snprintf(path, sizeof path, "/proc/self/task/%s/status", t->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      sscanf(line, "Name:\t%31s", name);
      sscanf(line, "SigBlk:\t%llx", &blocked);
    }
    fclose(f);
    if (strncmp(name, "boxlite", 7) == 0) {
      library_threads++;
      CHECK(blocked & (1ULL << (SIGPIPE - 1)));
    }
  }
  closedir(tasks);
  CHECK(library_threads > 0);
}

static void info_and_metrics_describe_the_running_box(void) {
  char *info = NULL, *metrics = NULL;
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"status\":\"running\"") && strstr(info, "\"name\":\"c-tests\""));
  CHECK_OK(boxlite_box_metrics(box, &metrics));
  CHECK(metrics && strstr(metrics, "\"commands_executed\":1,") && !strstr(metrics, "\"memory_bytes\":0,"));
  boxlite_string_free(info);
  boxlite_string_free(metrics);
  boxlite_string_free(NULL);
}

/* An event loop's way: poll the notify fd, drain it, then take output and the status with zero
 * timeouts. No thread blocks in a read or a wait. */
static void the_notify_fd_wakes_a_poll_loop_for_output_and_the_end(void) {
  const char *argv[] = {"sh", "-c", "echo first; sleep 0.5; echo second >&2; exit 4"};
  boxlite_exec *exec = NULL;
  CHECK_OK(boxlite_box_exec(box, argv, 3, NULL, &exec));
  if (!exec) return;
  int fd = -1, again = -2;
  CHECK_OK(boxlite_exec_notify_fd(exec, &fd));
  CHECK_OK(boxlite_exec_notify_fd(exec, &again));
  CHECK(fd >= 0 && fd == again);
  CHECK_RESULT(boxlite_exec_notify_fd(exec, NULL), BOXLITE_ERR_NULL_POINTER);
  bytes out = {0}, err = {0};
  bool out_done = false, err_done = false, ended = false;
  int exit_code = -1, sig = -1, wakeups = 0;
  bool timed_out = true;
  uint8_t buf[4096];
  while (!(out_done && err_done && ended) && wakeups < 100) {
    struct pollfd p = {fd, POLLIN, 0};
    CHECK(poll(&p, 1, 10000) == 1); /* every event arrives well within 10 s */
    wakeups++;
    while (read(fd, buf, sizeof buf) > 0) {
    }
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
    for (int s = 0; s < 2; s++) {
      bool *done = s ? &err_done : &out_done;
      for (size_t n = 1; !*done;) {
        boxlite_result r = boxlite_exec_read(exec, s ? BOXLITE_STDERR : BOXLITE_STDOUT, buf, sizeof buf, 0, &n);
        if (r == BOXLITE_ERR_TIMEOUT) break;
        CHECK_OK(r);
        if (r != BOXLITE_OK || n == 0) *done = true;
        else append(s ? &err : &out, buf, n);
      }
    }
    boxlite_result w = boxlite_exec_wait(exec, 0, &exit_code, &sig, &timed_out);
    if (w == BOXLITE_OK) ended = true;
    else CHECK_RESULT(w, BOXLITE_ERR_TIMEOUT);
  }
  CHECK(out_done && err_done && ended);
  CHECK(strcmp(text(&out), "first\n") == 0);
  CHECK(strcmp(text(&err), "second\n") == 0);
  CHECK(exit_code == 4 && sig == 0 && !timed_out);
  CHECK(wakeups >= 2); /* "first" and the end are half a second apart */
  free(out.data);
  free(err.data);
  boxlite_exec_free(exec);
}

static void the_runtime_lists_its_boxes_and_counts_them(void) {
  char *list = NULL, *metrics = NULL;
  CHECK_OK(boxlite_boxes_list(rt, &list));
  CHECK(list && list[0] == '[' && strstr(list, "\"name\":\"c-tests\"") && strstr(list, "\"status\":\"running\""));
  CHECK_OK(boxlite_runtime_metrics(rt, &metrics));
  CHECK(metrics && strstr(metrics, "\"num_running_boxes\":") && strstr(metrics, "\"boxes_created_total\":"));
  CHECK(metrics && !strstr(metrics, "\"total_commands_executed\":0,"));
  CHECK_RESULT(boxlite_boxes_list(NULL, &list), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_runtime_metrics(rt, NULL), BOXLITE_ERR_NULL_POINTER);
  boxlite_string_free(list);
  boxlite_string_free(metrics);
}

static void exit_codes_are_results(void) {
  completed done;
  if (sh(box, "exit 3", &done)) {
    CHECK(done.exit_code == 3);
    CHECK(done.signal == 0);
  }
  release(&done);
}

static void stdout_and_stderr_are_separate(void) {
  completed done;
  if (sh(box, "echo out; echo err >&2; echo more", &done)) {
    CHECK(strcmp(text(&done.out), "out\nmore\n") == 0);
    CHECK(strcmp(text(&done.err), "err\n") == 0);
  }
  release(&done);
}

static void env_and_working_dir_layer_image_box_and_exec(void) {
  completed done;
  if (sh(box, "echo $GREETING $BOX_VAR; pwd", &done)) {
    CHECK(strcmp(text(&done.out), "hello-from-image from-box\n/home\n") == 0);
  }
  release(&done);
  const char *argv[] = {"sh", "-c", "echo $GREETING $BOX_VAR; pwd"};
  if (run(box, "{\"env\": {\"GREETING\": \"from-exec\"}, \"cwd\": \"/tmp\"}", 3, argv, &done)) {
    CHECK(strcmp(text(&done.out), "from-exec from-box\n/tmp\n") == 0);
  }
  release(&done);
}

static void large_output_is_read_in_full_from_both_streams_at_once(void) {
  completed done;
  /* Both streams exceed the 8 MiB per-stream buffer, so neither can be left unread. */
  if (sh(box, "head -c 20971520 /dev/zero & head -c 10485760 /dev/zero >&2; wait", &done)) {
    CHECK(done.out.len == 20 * MIB);
    CHECK(done.err.len == 10 * MIB);
    CHECK(all_bytes_are(&done.out, 0) && all_bytes_are(&done.err, 0));
    CHECK(done.exit_code == 0);
  }
  release(&done);
}

/* One thread, no polling: stdout to its end first, then stderr, which collected meanwhile. */
static void stdout_can_be_read_to_the_end_while_stderr_collects(void) {
  const char *argv[] = {"sh", "-c", "head -c 4194304 /dev/zero | tr '\\0' e >&2; echo done"};
  boxlite_exec *exec = NULL;
  CHECK_OK(boxlite_box_exec(box, argv, 3, NULL, &exec));
  if (!exec) return;
  stream_reader out = {exec, BOXLITE_STDOUT, {0}, BOXLITE_OK};
  stream_reader err = {exec, BOXLITE_STDERR, {0}, BOXLITE_OK};
  read_to_end(&out);
  read_to_end(&err);
  CHECK(strcmp(text(&out.output), "done\n") == 0);
  CHECK(err.output.len == 4 * MIB && all_bytes_are(&err.output, 'e'));
  int code = -1, sig = -1;
  bool timed_out = true;
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(code == 0 && sig == 0 && !timed_out);
  boxlite_exec_free(exec);
  free(out.output.data);
  free(err.output.data);
}

static void stdin_reaches_the_command(void) {
  const char *argv[] = {"cat"};
  boxlite_exec *exec = NULL;
  CHECK_OK(boxlite_box_exec(box, argv, 1, NULL, &exec));
  if (!exec) return;
  const char input[] = "piped input";
  CHECK_OK(boxlite_exec_write_stdin(exec, (const uint8_t *)input, strlen(input)));
  CHECK_OK(boxlite_exec_close_stdin(exec));
  CHECK_OK(boxlite_exec_close_stdin(exec)); /* closing again is a no-op */
  CHECK_RESULT(boxlite_exec_write_stdin(exec, (const uint8_t *)input, 1), BOXLITE_ERR_INVALID_STATE);
  stream_reader out = {exec, BOXLITE_STDOUT, {0}, BOXLITE_OK};
  read_to_end(&out);
  CHECK(strcmp(text(&out.output), input) == 0);
  int code = -1, sig = -1;
  bool timed_out = true;
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(code == 0);
  boxlite_exec_free(exec);
  free(out.output.data);
}

static void reads_and_waits_time_out_and_kill_ends_the_command(void) {
  const char *argv[] = {"sleep", "30"};
  boxlite_exec *exec = NULL;
  uint8_t buf[64];
  size_t n = 12345;
  int code = -1, sig = -1;
  bool timed_out = true;
  CHECK_OK(boxlite_box_exec(box, argv, 2, NULL, &exec));
  if (!exec) return;
  CHECK_RESULT(boxlite_exec_read(exec, BOXLITE_STDOUT, buf, sizeof buf, 200, &n), BOXLITE_ERR_TIMEOUT);
  CHECK_ERRMSG("reading stdout timed out after 200 ms");
  CHECK_RESULT(boxlite_exec_read(exec, BOXLITE_STDERR, buf, sizeof buf, 0, &n), BOXLITE_ERR_TIMEOUT);
  CHECK_RESULT(boxlite_exec_wait(exec, 100, &code, &sig, &timed_out), BOXLITE_ERR_TIMEOUT);
  CHECK(n == 12345 && code == -1); /* out-parameters untouched on failure */
  CHECK_OK(boxlite_exec_kill(exec));
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(sig == 9 && code == 128 + 9 && !timed_out);
  CHECK_OK(boxlite_exec_wait(exec, 0, &code, &sig, &timed_out)); /* the same status again */
  CHECK(sig == 9);
  CHECK_OK(boxlite_exec_read(exec, BOXLITE_STDOUT, buf, sizeof buf, -1, &n));
  CHECK(n == 0);
  boxlite_exec_free(exec);
}

static void a_signal_of_choice_ends_the_command(void) {
  const char *argv[] = {"sleep", "30"};
  boxlite_exec *exec = NULL;
  int code = -1, sig = -1;
  bool timed_out = true;
  CHECK_OK(boxlite_box_exec(box, argv, 2, NULL, &exec));
  if (!exec) return;
  CHECK_RESULT(boxlite_exec_signal(exec, 0), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_exec_signal(exec, 65), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_OK(boxlite_exec_signal(exec, 15));
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(sig == 15 && code == 128 + 15);
  boxlite_exec_free(exec);
}

static void the_exec_timeout_is_enforced_in_the_guest(void) {
  const char *argv[] = {"sleep", "30"};
  completed done;
  if (run(box, "{\"timeout_ms\": 300}", 2, argv, &done)) {
    CHECK(done.timed_out && done.signal == 9);
  }
  release(&done);
}

static void a_tty_exec_sees_a_terminal(void) {
  const char *argv[] = {"sh", "-c", "test -t 0 && test -t 1 && echo tty"};
  completed done;
  if (run(box, "{\"tty\": true}", 3, argv, &done)) {
    CHECK(strstr(text(&done.out), "tty") != NULL);
    CHECK(done.exit_code == 0);
  }
  release(&done);
}

static void a_tty_exec_is_resized(void) {
  /* The resize reaches the terminal before the line that lets `stty` run: one stream, in order. */
  const char *argv[] = {"sh", "-c", "read line; stty size"};
  boxlite_exec *exec = NULL;
  CHECK_OK(boxlite_box_exec(box, argv, 3, "{\"tty\": true}", &exec));
  if (!exec) return;
  CHECK_RESULT(boxlite_exec_resize_tty(exec, 0, 80), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("terminal size 0x80 is out of range");
  CHECK_OK(boxlite_exec_resize_tty(exec, 40, 100));
  CHECK_OK(boxlite_exec_write_stdin(exec, (const uint8_t *)"\n", 1));
  stream_reader out = {exec, BOXLITE_STDOUT, {0}, BOXLITE_OK};
  read_to_end(&out);
  CHECK(strstr(text(&out.output), "40 100") != NULL);
  int code = -1, sig = -1;
  bool timed_out = true;
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(code == 0);
  boxlite_exec_free(exec);
  free(out.output.data);

  const char *plain[] = {"true"};
  CHECK_OK(boxlite_box_exec(box, plain, 1, NULL, &exec));
  if (!exec) return;
  CHECK_RESULT(boxlite_exec_resize_tty(exec, 30, 100), BOXLITE_ERR_INVALID_STATE);
  CHECK_ERRMSG("no terminal");
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  boxlite_exec_free(exec);
}

static void bad_execs_fail_clearly(void) {
  boxlite_exec *exec = NULL;
  const char *missing[] = {"no-such-command"};
  const char *with_null[] = {"echo", NULL};
  const char *ok[] = {"true"};
  CHECK_RESULT(boxlite_box_exec(box, missing, 1, NULL, &exec), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("no-such-command");
  CHECK_RESULT(boxlite_box_exec(box, ok, 0, NULL, &exec), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("argc is 0");
  CHECK_RESULT(boxlite_box_exec(box, NULL, 1, NULL, &exec), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`argv`");
  CHECK_RESULT(boxlite_box_exec(box, with_null, 2, NULL, &exec), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`argv[1]`");
  CHECK_RESULT(boxlite_box_exec(box, ok, 1, "{\"timeout\": 5}", &exec), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown field `timeout`");
  CHECK_RESULT(boxlite_box_exec(box, ok, 1, NULL, NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK(exec == NULL);

  CHECK_OK(boxlite_box_exec(box, ok, 1, NULL, &exec));
  if (!exec) return;
  uint8_t buf[8];
  size_t n = 0;
  int code, sig;
  bool timed_out;
  CHECK_RESULT(boxlite_exec_read(exec, 3, buf, sizeof buf, 0, &n), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_exec_read(exec, BOXLITE_STDOUT, buf, 0, 0, &n), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_exec_read(exec, BOXLITE_STDOUT, NULL, 8, 0, &n), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_read(exec, BOXLITE_STDOUT, buf, 8, 0, NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_write_stdin(exec, NULL, 1), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_wait(exec, -1, NULL, &sig, &timed_out), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_wait(exec, -1, &code, NULL, &timed_out), BOXLITE_ERR_NULL_POINTER);
  CHECK_RESULT(boxlite_exec_wait(exec, -1, &code, &sig, NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(code == 0);
  boxlite_exec_free(exec);
}

static void remove_cleans_up_and_later_calls_fail(void) {
  const char *argv[] = {"true"};
  char id[64];
  snprintf(id, sizeof id, "%s", boxlite_box_id(box));
  CHECK(box_supervisors() == 1);
  CHECK_RESULT(boxlite_box_remove(box, false), BOXLITE_ERR_INVALID_STATE);
  CHECK_ERRMSG("running");
  CHECK_OK(boxlite_box_remove(box, true));
  CHECK(box_supervisors() == 0);
  CHECK(!box_dir_exists(id));
  CHECK(strcmp(boxlite_box_id(box), id) == 0); /* the handle itself stays valid */
  boxlite_exec *exec = NULL;
  CHECK_RESULT(boxlite_box_exec(box, argv, 1, NULL, &exec), BOXLITE_ERR_NOT_FOUND);
  CHECK_ERRMSG("removed");
  CHECK_RESULT(boxlite_box_start(box), BOXLITE_ERR_NOT_FOUND);
  CHECK_RESULT(boxlite_box_remove(box, true), BOXLITE_ERR_NOT_FOUND);
  boxlite_box *gone = NULL;
  CHECK_RESULT(boxlite_box_get(rt, "c-tests", &gone), BOXLITE_ERR_NOT_FOUND);
  CHECK(exec == NULL && gone == NULL);
}

/* Handles may be freed in any order: a box and exec keep working after their runtime is freed. */
static void handles_outlive_their_runtime(void) {
  boxlite_box *b = NULL;
  boxlite_exec *exec = NULL;
  boxlite_runtime *own = open_runtime(home, registry);
  if (!own) return;
  CHECK_OK(boxlite_box_create(own, "busybox:latest", "{\"memory_mib\": 128}", &b));
  if (!b) {
    boxlite_runtime_free(own);
    return;
  }
  char id[64];
  snprintf(id, sizeof id, "%s", boxlite_box_id(b));
  const char *argv[] = {"echo", "still here"};
  CHECK_OK(boxlite_box_exec(b, argv, 2, NULL, &exec));
  boxlite_runtime_free(own);
  if (exec) {
    stream_reader out = {exec, BOXLITE_STDOUT, {0}, BOXLITE_OK};
    read_to_end(&out);
    CHECK(strcmp(text(&out.output), "still here\n") == 0);
    free(out.output.data);
  }
  boxlite_exec_free(exec);
  CHECK_OK(boxlite_box_stop(b));
  CHECK(box_supervisors() == 0);
  CHECK_OK(boxlite_box_remove(b, false));
  CHECK(!box_dir_exists(id));
  boxlite_box_free(b);
}

/* Freeing the last handle of a runtime stops the VMs it booted. */
static void freeing_the_last_handle_stops_its_vms(void) {
  boxlite_box *b = NULL;
  boxlite_runtime *own = open_runtime(home, registry);
  if (!own) return;
  CHECK_OK(boxlite_box_create(own, "busybox:latest", "{\"name\": \"c-abandoned\"}", &b));
  CHECK_OK(boxlite_box_start(b));
  CHECK(box_supervisors() == 1);
  boxlite_box_free(b);
  boxlite_runtime_free(own);
  CHECK(box_supervisors() == 0);
  /* The box itself remains, recorded as stopped (a running box could not be removed unforced). */
  boxlite_box *again = NULL;
  CHECK_OK(boxlite_box_get(rt, "c-abandoned", &again));
  CHECK_OK(boxlite_box_remove(again, false));
  boxlite_box_free(again);
}

/* Pause keeps a command under way, which goes on after resume; new execs are refused meanwhile. */
static void a_paused_box_refuses_new_execs_and_goes_on_after_resume(void) {
  const char *counter[] = {"sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done"};
  boxlite_exec *exec = NULL;
  CHECK_OK(boxlite_box_exec(box, counter, 3, NULL, &exec));
  if (!exec) return;
  stream_reader out = {exec, BOXLITE_STDOUT, {0}, BOXLITE_OK};
  pthread_t out_thread;
  CHECK(pthread_create(&out_thread, NULL, read_to_end, &out) == 0);
  CHECK_OK(boxlite_box_pause(box));
  CHECK_OK(boxlite_box_pause(box)); /* already paused: nothing happens */
  char *info = NULL;
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"status\":\"paused\""));
  boxlite_string_free(info);
  const char *argv[] = {"true"};
  boxlite_exec *refused = NULL;
  CHECK_RESULT(boxlite_box_exec(box, argv, 1, NULL, &refused), BOXLITE_ERR_INVALID_STATE);
  CHECK_ERRMSG("resume");
  CHECK(refused == NULL);
  CHECK_OK(boxlite_box_resume(box));
  pthread_join(out_thread, NULL);
  int code = -1, sig = -1;
  bool timed_out = true;
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  CHECK(code == 0 && strcmp(text(&out.output), "1\n2\n3\n4\n5\n") == 0);
  CHECK_RESULT(boxlite_box_pause(NULL), BOXLITE_ERR_NULL_POINTER);
  free(out.output.data);
  boxlite_exec_free(exec);
}

/* A snapshot carries memory (a write still in the page cache) into the box restored from it; the
 * snapshot is listed, removed, and restoring it then is NOT_FOUND. */
static void a_snapshot_restores_into_a_new_box_with_unsynced_writes(void) {
  completed done;
  if (sh(box, "echo from-memory > /root/note", &done)) CHECK(done.exit_code == 0);
  release(&done);
  char *json = NULL;
  CHECK_OK(boxlite_box_snapshot(box, "c-snap", &json));
  CHECK(json && strstr(json, "\"name\":\"c-snap\"") && strstr(json, boxlite_box_id(box)));
  boxlite_string_free(json);
  json = NULL;
  CHECK_RESULT(boxlite_box_snapshot(box, "c-snap", &json), BOXLITE_ERR_ALREADY_EXISTS);
  CHECK_OK(boxlite_runtime_snapshots(rt, &json));
  CHECK(json && strstr(json, "\"c-snap\""));
  boxlite_string_free(json);
  boxlite_box *restored = NULL;
  CHECK_RESULT(boxlite_runtime_restore(rt, "c-snap", "{\"bogus\": 1}", &restored), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_OK(boxlite_runtime_restore(rt, "c-snap", NULL, &restored));
  if (restored) {
    CHECK(strcmp(boxlite_box_id(restored), boxlite_box_id(box)) != 0);
    const char *cat[] = {"cat", "/root/note"};
    if (run(restored, NULL, 2, cat, &done)) CHECK(done.exit_code == 0 && strcmp(text(&done.out), "from-memory\n") == 0);
    release(&done);
    CHECK_OK(boxlite_box_remove(restored, true));
    boxlite_box_free(restored);
  }
  CHECK_OK(boxlite_runtime_remove_snapshot(rt, "c-snap"));
  restored = NULL;
  CHECK_RESULT(boxlite_runtime_restore(rt, "c-snap", NULL, &restored), BOXLITE_ERR_NOT_FOUND);
  CHECK(restored == NULL);
  CHECK_RESULT(boxlite_runtime_remove_snapshot(rt, "c-snap"), BOXLITE_ERR_NOT_FOUND);
}

/* Suspend ends the VM with its memory saved ("suspended"); resume continues it, the write kept. */
static void a_suspended_box_resumes_where_it_was(void) {
  completed done;
  if (sh(box, "echo before-suspend > /root/suspended", &done)) CHECK(done.exit_code == 0);
  release(&done);
  CHECK_OK(boxlite_box_suspend(box));
  CHECK_OK(boxlite_box_suspend(box)); /* already suspended: nothing happens */
  char *info = NULL;
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"status\":\"suspended\""));
  boxlite_string_free(info);
  CHECK_OK(boxlite_box_resume(box));
  info = NULL;
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"status\":\"running\""));
  boxlite_string_free(info);
  const char *cat[] = {"cat", "/root/suspended"};
  if (run(box, NULL, 2, cat, &done)) CHECK(done.exit_code == 0 && strcmp(text(&done.out), "before-suspend\n") == 0);
  release(&done);
  CHECK_RESULT(boxlite_box_suspend(NULL), BOXLITE_ERR_NULL_POINTER);
}

/* Fork makes running boxes that continue from the box as it is now (its files kept), each with an
 * identity of its own: different ids, boot_id and urandom; the box itself goes on. */
static void forks_continue_the_box_with_identities_of_their_own(void) {
  completed done;
  if (sh(box, "echo before-fork > /root/forked", &done)) CHECK(done.exit_code == 0);
  release(&done);
  boxlite_box *forks[2] = {NULL, NULL};
  CHECK_RESULT(boxlite_box_fork(box, 0, forks), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK(forks[0] == NULL);
  CHECK_OK(boxlite_box_fork(box, 2, forks));
  char seen[2][128] = {{0}};
  for (int i = 0; i < 2; i++) {
    if (!forks[i]) continue;
    CHECK(strcmp(boxlite_box_id(forks[i]), boxlite_box_id(box)) != 0);
    if (sh(forks[i], "cat /root/forked /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1", &done)) {
      CHECK(done.exit_code == 0 && strncmp(text(&done.out), "before-fork\n", 12) == 0);
      snprintf(seen[i], sizeof seen[i], "%s", text(&done.out));
    }
    release(&done);
  }
  if (forks[0] && forks[1]) {
    CHECK(strcmp(boxlite_box_id(forks[0]), boxlite_box_id(forks[1])) != 0);
    /* "before-fork\n", a 36-character boot_id and its newline, then the urandom bytes */
    CHECK(strlen(seen[0]) > 49 && strlen(seen[1]) > 49);
    CHECK(strncmp(seen[0] + 12, seen[1] + 12, 36) != 0);
    CHECK(strcmp(seen[0] + 49, seen[1] + 49) != 0);
  }
  for (int i = 0; i < 2; i++) {
    if (!forks[i]) continue;
    CHECK_OK(boxlite_box_remove(forks[i], true));
    boxlite_box_free(forks[i]);
  }
  const char *cat[] = {"cat", "/root/forked"};
  if (run(box, NULL, 2, cat, &done)) CHECK(done.exit_code == 0 && strcmp(text(&done.out), "before-fork\n") == 0);
  release(&done);
}

/* The value of string `key` in a flat JSON object, copied into `out` (no escapes expected); false
 * if absent. */
static bool json_string_value(const char *json, const char *key, char *out, size_t size) {
  char needle[128];
  snprintf(needle, sizeof needle, "\"%s\":\"", key);
  const char *start = json ? strstr(json, needle) : NULL;
  if (!start) return false;
  start += strlen(needle);
  const char *end = strchr(start, '"');
  if (!end || (size_t)(end - start) >= size) return false;
  memcpy(out, start, (size_t)(end - start));
  out[end - start] = 0;
  return true;
}

/* Whether the command line of process `pid` holds `needle` (its arguments joined by spaces). */
static bool cmdline_has(long pid, const char *needle) {
  char path[64], line[16384];
  snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n = fread(line, 1, sizeof line - 1, f);
  fclose(f);
  for (size_t i = 0; i < n; i++)
    if (line[i] == 0) line[i] = ' ';
  line[n] = 0;
  return strstr(line, needle) != NULL;
}

/* Warm start on a fresh home: warmup builds the template of a shape (1 cpu, 256 MiB, no network)
 * once and finds it the second time at the same path; a box of that shape starts from it (its VM
 * maps the template's RAM), runs commands and has a boot_id; a bad shape is INVALID_ARGUMENT. */
static void warmup_builds_a_template_once_and_boxes_of_its_shape_start_from_it(void) {
  char warm_home[4096], templates[4200], path[4200] = "", again[4200] = "";
  snprintf(warm_home, sizeof warm_home, "%s/warm-home", home);
  snprintf(templates, sizeof templates, "%s/templates/", warm_home);
  CHECK(mkdir(warm_home, 0700) == 0);
  boxlite_runtime *warm = open_runtime(warm_home, registry);
  if (!warm) return;
  const char *shape = "{\"cpus\": 1, \"memory_mib\": 256, \"network\": false}";
  char *json = NULL;
  CHECK_OK(boxlite_runtime_warmup(warm, shape, &json));
  CHECK(json && strstr(json, "\"built\":true") && strstr(json, "\"cpus\":1,") && strstr(json, "\"memory_mib\":256,") &&
        strstr(json, "\"network\":false") && !strstr(json, "\"disk_bytes\":0"));
  CHECK(json_string_value(json, "path", path, sizeof path) && strncmp(path, templates, strlen(templates)) == 0);
  if (current_test_failed) fprintf(stderr, "first warmup: %s\n", json ? json : "(none)");
  boxlite_string_free(json);
  json = NULL;
  CHECK_OK(boxlite_runtime_warmup(warm, shape, &json));
  CHECK(json && strstr(json, "\"built\":false"));
  CHECK(json_string_value(json, "path", again, sizeof again) && strcmp(again, path) == 0);
  boxlite_string_free(json);

  int supervisors = box_supervisors();
  boxlite_box *b = NULL;
  CHECK_OK(boxlite_box_create(warm, "busybox:latest", "{\"memory_mib\": 256, \"network\": \"none\"}", &b));
  if (b) {
    completed done;
    if (sh(b, "echo warm; cat /proc/sys/kernel/random/boot_id", &done)) {
      CHECK(done.exit_code == 0 && strncmp(text(&done.out), "warm\n", 5) == 0);
      CHECK(done.out.len == 5 + 37 && text(&done.out)[5 + 8] == '-'); /* a UUID and its newline */
    }
    release(&done);
    char *metrics = NULL, ram[4300];
    CHECK_OK(boxlite_box_metrics(b, &metrics));
    const char *pid = metrics ? strstr(metrics, "\"vm_pid\":") : NULL;
    snprintf(ram, sizeof ram, "mem-path=%s/ram,", path);
    bool from_template = pid && cmdline_has(strtol(pid + 9, NULL, 10), ram);
    CHECK(from_template); /* its VM maps the template's RAM */
    if (!from_template) fprintf(stderr, "the box's VM lacks %s; metrics: %s\n", ram, metrics ? metrics : "(none)");
    boxlite_string_free(metrics);
    CHECK_OK(boxlite_box_remove(b, true));
    boxlite_box_free(b);
  }
  CHECK(box_supervisors() == supervisors);

  json = NULL;
  CHECK_RESULT(boxlite_runtime_warmup(warm, "{\"cpus\": 0}", &json), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("cpus 0 is out of range");
  CHECK(json == NULL);
  CHECK_RESULT(boxlite_runtime_warmup(warm, "{\"cpu\": 1}", &json), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(boxlite_runtime_warmup(warm, NULL, NULL), BOXLITE_ERR_NULL_POINTER);
  boxlite_runtime_free(warm);
}

int main(void) {
  home = fixture("BOXLITE_TEST_HOME");
  registry = fixture("REGISTRY");
  rt = open_runtime(home, registry);
  if (!rt) return finish();
  RUN(a_missing_image_is_an_image_error);
  RUN(a_box_is_created_and_found_by_name_and_id);
  RUN(echo_prints_hi);
  RUN(the_library_threads_block_sigpipe);
  RUN(info_and_metrics_describe_the_running_box);
  RUN(the_notify_fd_wakes_a_poll_loop_for_output_and_the_end);
  RUN(the_runtime_lists_its_boxes_and_counts_them);
  RUN(exit_codes_are_results);
  RUN(stdout_and_stderr_are_separate);
  RUN(env_and_working_dir_layer_image_box_and_exec);
  RUN(large_output_is_read_in_full_from_both_streams_at_once);
  RUN(stdout_can_be_read_to_the_end_while_stderr_collects);
  RUN(stdin_reaches_the_command);
  RUN(reads_and_waits_time_out_and_kill_ends_the_command);
  RUN(a_signal_of_choice_ends_the_command);
  RUN(the_exec_timeout_is_enforced_in_the_guest);
  RUN(a_tty_exec_sees_a_terminal);
  RUN(a_tty_exec_is_resized);
  RUN(bad_execs_fail_clearly);
  RUN(a_paused_box_refuses_new_execs_and_goes_on_after_resume);
  RUN(a_snapshot_restores_into_a_new_box_with_unsynced_writes);
  RUN(a_suspended_box_resumes_where_it_was);
  RUN(forks_continue_the_box_with_identities_of_their_own);
  RUN(warmup_builds_a_template_once_and_boxes_of_its_shape_start_from_it);
  RUN(remove_cleans_up_and_later_calls_fail);
  RUN(handles_outlive_their_runtime);
  RUN(freeing_the_last_handle_stops_its_vms);
  boxlite_box_free(box);
  boxlite_runtime_free(rt);
  return finish();
}

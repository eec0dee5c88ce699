/* The box network through the C ABI, on real VMs, every packet staying on this machine: a server
 * in the box on a published port (host port 0, the port picked read from the box's info), a
 * server of this process reached from the box through the host alias, egress policy changes on
 * the running box, and a box without a network. Needs REGISTRY (scripts/test-images.sh) and
 * BOXLITE_TEST_HOME (an empty directory). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The host's 127.0.0.1 as a box sees it (host.docker.internal). */
#define HOST_ALIAS "192.168.127.254"

static boxlite_runtime *rt;
static boxlite_box *box; /* busybox, guest port 8080 published on a host port picked at start */
static int host_server_port;

/* ------------------------------------------------------------------ helpers */

/* The output of `sh -c script` in `b` (stdout, then stderr) into `out`; its exit code, or -1
 * when a call failed (counted). */
static int sh(boxlite_box *b, const char *script, char *out, size_t size) {
  const char *argv[] = {"sh", "-c", script};
  boxlite_exec *exec = NULL;
  size_t used = 0;
  out[0] = 0;
  CHECK_OK(boxlite_box_exec(b, argv, 3, NULL, &exec));
  if (!exec) return -1;
  for (boxlite_stream stream = BOXLITE_STDOUT; stream <= BOXLITE_STDERR; stream++) {
    for (;;) {
      size_t n = 0;
      boxlite_result r = boxlite_exec_read(exec, stream, (uint8_t *)out + used, size - 1 - used, -1, &n);
      CHECK_OK(r);
      if (r != BOXLITE_OK || n == 0 || used + n == size - 1) break;
      used += n;
    }
  }
  out[used] = 0;
  int code = -1, sig = 0;
  bool timed_out = false;
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  boxlite_exec_free(exec);
  return code;
}

/* The number after `"key":` in a JSON text (the first one), or -1. */
static long long json_number(const char *json, const char *key) {
  char needle[128];
  snprintf(needle, sizeof needle, "\"%s\":", key);
  const char *at = json ? strstr(json, needle) : NULL;
  long long value = -1;
  if (!at || sscanf(at + strlen(needle), "%lld", &value) != 1) return -1;
  return value;
}

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* A GET of / on 127.0.0.1:port from this process, retried until a response arrives (the server in
 * the box may still be starting) or `within` seconds pass; the response in `out`. */
static bool host_get(int port, double within, char *out, size_t size) {
  double deadline = seconds_now() + within;
  while (seconds_now() < deadline) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval timeout = {.tv_sec = 10};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    size_t used = 0;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) {
      const char request[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
      if (write(s, request, strlen(request)) == (ssize_t)strlen(request)) {
        ssize_t n;
        while (used < size - 1 && (n = read(s, out + used, size - 1 - used)) > 0) used += n;
      }
    }
    close(s);
    out[used] = 0;
    if (used > 0) return true;
    nanosleep(&(struct timespec){.tv_nsec = 200 * 1000 * 1000}, NULL);
  }
  return false;
}

/* A server on this host's 127.0.0.1 that writes one line to every client and closes. */
static void *serve_hello(void *arg) {
  int listener = *(int *)arg;
  for (;;) {
    int client = accept(listener, NULL, NULL);
    if (client < 0) return NULL;
    const char hello[] = "hello-from-host\n";
    if (write(client, hello, strlen(hello)) < 0) perror("serve_hello: write");
    close(client);
  }
}

static int start_host_server(void) {
  static int listener;
  listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  pthread_t thread;
  if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 8) != 0 ||
      getsockname(listener, (struct sockaddr *)&addr, &len) != 0 ||
      pthread_create(&thread, NULL, serve_hello, &listener) != 0) {
    perror("host server");
    exit(2);
  }
  pthread_detach(thread);
  return ntohs(addr.sin_port);
}

/* The box connects to this process's server through the host alias; the exit code of nc, and
 * what it printed in `out`. */
static int reach_the_host(char *out, size_t size) {
  char script[256];
  /* stdin stays open a moment, so that nc reads the line before its stdin ends. */
  snprintf(script, sizeof script, "sleep 1 | nc %s %d", HOST_ALIAS, host_server_port);
  return sh(box, script, out, size);
}

/* ------------------------------------------------------------------ cases */

static void info_reports_the_ports_as_asked_before_the_box_runs(void) {
  char *info = NULL;
  CHECK_OK(boxlite_box_create(rt, "busybox:latest", "{\"name\": \"c-net\", \"ports\": [{\"guest_port\": 8080}]}", &box));
  if (!box) {
    fprintf(stderr, "cannot go on without the shared box\n");
    exit(finish() | 1);
  }
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"network\":\"default\""));
  CHECK(info && strstr(info, "\"ports\":[{\"guest_port\":8080,\"host_ip\":\"127.0.0.1\",\"host_port\":0,\"protocol\":\"tcp\"}]"));
  boxlite_string_free(info);
}

static void a_server_in_the_box_answers_on_the_port_picked(void) {
  const char *argv[] = {"sh", "-c",
                        "mkdir -p /tmp/www && echo hello-from-box >/tmp/www/index.html && "
                        "exec httpd -f -p 8080 -h /tmp/www"};
  boxlite_exec *server = NULL;
  char *info = NULL, response[4096];
  CHECK_OK(boxlite_box_exec(box, argv, 3, NULL, &server));
  if (!server) return;
  CHECK_OK(boxlite_box_info(box, &info));
  long long port = json_number(info, "host_port");
  CHECK(info && strstr(info, "\"status\":\"running\"") && strstr(info, "\"guest_port\":8080"));
  CHECK(port > 0 && port < 65536);
  if (port > 0) {
    CHECK(host_get((int)port, 30, response, sizeof response));
    CHECK(strncmp(response, "HTTP/1.", 7) == 0 && strstr(response, " 200 ") && strstr(response, "hello-from-box"));
    if (!strstr(response, "hello-from-box")) fprintf(stderr, "response: %s\n", response);
  }
  CHECK_OK(boxlite_exec_kill(server));
  boxlite_exec_free(server);
  boxlite_string_free(info);
}

static void the_box_reaches_a_host_server_through_the_alias(void) {
  char out[512];
  CHECK(reach_the_host(out, sizeof out) == 0);
  CHECK(strcmp(out, "hello-from-host\n") == 0);
  if (strcmp(out, "hello-from-host\n") != 0) fprintf(stderr, "nc: %s\n", out);
}

static void metrics_count_the_traffic(void) {
  char *metrics = NULL;
  CHECK_OK(boxlite_box_metrics(box, &metrics));
  /* A response of the box's server went out, the request and the host's line came in. */
  CHECK(json_number(metrics, "network_bytes_sent") > 0);
  CHECK(json_number(metrics, "network_bytes_received") > 0);
  CHECK(json_number(metrics, "network_tcp_connections") >= 2);
  if (json_number(metrics, "network_tcp_connections") < 2) fprintf(stderr, "metrics: %s\n", metrics);
  boxlite_string_free(metrics);
}

static void a_deny_list_set_on_the_running_box_refuses_at_once_and_can_be_lifted(void) {
  char out[512], *info = NULL;
  CHECK_OK(boxlite_box_set_network(box, "{\"deny\": [\"" HOST_ALIAS "\"]}"));
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"network\":{\"deny\":[\"" HOST_ALIAS "\"]}"));
  boxlite_string_free(info);
  double t = seconds_now();
  CHECK(reach_the_host(out, sizeof out) != 0);
  CHECK(strstr(out, "hello-from-host") == NULL && strstr(out, "refused"));
  CHECK(seconds_now() - t < 10); /* refused, not dropped: nc does not wait for a timeout */
  CHECK_OK(boxlite_box_set_network(box, "\"default\""));
  CHECK(reach_the_host(out, sizeof out) == 0 && strcmp(out, "hello-from-host\n") == 0);
}

static void bad_policies_are_refused_and_change_nothing(void) {
  char *info = NULL;
  CHECK_RESULT(boxlite_box_set_network(box, "{\"allow\": [\"pypi.org\", \"not a name\"]}"), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("network entry 'not a name'");
  CHECK_RESULT(boxlite_box_set_network(box, "\"none\""), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("cannot be switched on or off");
  CHECK_RESULT(boxlite_box_set_network(box, "{\"allow\": \"pypi.org\"}"), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("`network_json` is not valid network JSON");
  CHECK_RESULT(boxlite_box_set_network(box, NULL), BOXLITE_ERR_NULL_POINTER);
  CHECK_ERRMSG("`network_json`");
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"network\":\"default\""));
  boxlite_string_free(info);
}

static void a_stopped_box_reports_its_ports_as_asked_and_keeps_its_policy(void) {
  char *info = NULL;
  CHECK_OK(boxlite_box_set_network(box, "{\"allow\": [\"pypi.org\"]}"));
  CHECK_OK(boxlite_box_stop(box));
  CHECK_OK(boxlite_box_info(box, &info));
  CHECK(info && strstr(info, "\"status\":\"stopped\""));
  CHECK(info && strstr(info, "\"ports\":[{\"guest_port\":8080,\"host_ip\":\"127.0.0.1\",\"host_port\":0,\"protocol\":\"tcp\"}]"));
  CHECK(info && strstr(info, "\"network\":{\"allow\":[\"pypi.org\"]}"));
  boxlite_string_free(info);
  CHECK_OK(boxlite_box_remove(box, false));
}

static void network_none_leaves_only_loopback(void) {
  boxlite_box *isolated = NULL;
  char out[512], *info = NULL;
  CHECK_OK(boxlite_box_create(rt, "busybox:latest", "{\"network\": \"none\"}", &isolated));
  if (!isolated) return;
  CHECK(sh(isolated, "ls /sys/class/net", out, sizeof out) == 0);
  CHECK(strcmp(out, "lo\n") == 0);
  if (strcmp(out, "lo\n") != 0) fprintf(stderr, "/sys/class/net: %s\n", out);
  CHECK_OK(boxlite_box_info(isolated, &info));
  CHECK(info && strstr(info, "\"network\":\"none\"") && strstr(info, "\"ports\":[]"));
  boxlite_string_free(info);
  CHECK_RESULT(boxlite_box_set_network(isolated, "{\"allow\": [\"pypi.org\"]}"), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("cannot be switched on or off");
  CHECK_OK(boxlite_box_remove(isolated, true));
  boxlite_box_free(isolated);
}

int main(void) {
  const char *home = fixture("BOXLITE_TEST_HOME");
  const char *registry = fixture("REGISTRY");
  host_server_port = start_host_server();
  rt = open_runtime(home, registry);
  if (!rt) return finish();
  RUN(info_reports_the_ports_as_asked_before_the_box_runs);
  RUN(a_server_in_the_box_answers_on_the_port_picked);
  RUN(the_box_reaches_a_host_server_through_the_alias);
  RUN(metrics_count_the_traffic);
  RUN(a_deny_list_set_on_the_running_box_refuses_at_once_and_can_be_lifted);
  RUN(bad_policies_are_refused_and_change_nothing);
  RUN(a_stopped_box_reports_its_ports_as_asked_and_keeps_its_policy);
  RUN(network_none_leaves_only_loopback);
  boxlite_box_free(box);
  boxlite_runtime_free(rt);
  return finish();
}

/* Boots a box from an image, runs `echo hi` in it, prints what it printed, and removes the box.
 *
 *   hello IMAGE [INSECURE_REGISTRY]
 *   hello 127.0.0.1:5000/busybox:latest 127.0.0.1:5000
 *
 * INSECURE_REGISTRY (default: $REGISTRY, if set) is a host:port spoken to over plain http. The
 * state goes to $BOXLITE_HOME (default ~/.boxlite). */
#include <boxlite.h>
#include <stdio.h>
#include <stdlib.h>

static int failed(const char *call, boxlite_result result) {
  fprintf(stderr, "hello: %s: %s: %s\n", call, boxlite_result_str(result), boxlite_errmsg());
  return 1;
}

static int run_echo(boxlite_box *box) {
  const char *argv[] = {"echo", "hi"};
  boxlite_exec *exec = NULL;
  boxlite_result r = boxlite_box_exec(box, argv, 2, NULL, &exec);
  if (r != BOXLITE_OK) return failed("boxlite_box_exec", r);
  /* `echo` writes little to stderr, so stdout can be read to its end first. */
  uint8_t buf[4096];
  size_t n = 0;
  while ((r = boxlite_exec_read(exec, BOXLITE_STDOUT, buf, sizeof buf, -1, &n)) == BOXLITE_OK && n > 0)
    fwrite(buf, 1, n, stdout);
  int exit_code = 0, signal = 0;
  bool timed_out = false;
  if (r == BOXLITE_OK) r = boxlite_exec_wait(exec, -1, &exit_code, &signal, &timed_out);
  boxlite_exec_free(exec);
  if (r != BOXLITE_OK) return failed("reading the output of echo", r);
  return exit_code;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s IMAGE [INSECURE_REGISTRY]\n", argv[0]);
    return 2;
  }
  const char *image = argv[1];
  const char *registry = argc == 3 ? argv[2] : getenv("REGISTRY");
  char options[512] = "{}";
  if (registry && *registry)
    snprintf(options, sizeof options, "{\"registries\": [{\"host\": \"%s\", \"insecure\": true}]}", registry);

  boxlite_runtime *rt = NULL;
  boxlite_box *box = NULL;
  int status = 1;
  boxlite_result r = boxlite_runtime_new(options, &rt);
  if (r != BOXLITE_OK) return failed("boxlite_runtime_new", r);
  r = boxlite_box_create(rt, image, NULL, &box);
  if (r != BOXLITE_OK) {
    failed("boxlite_box_create", r);
    goto done;
  }
  status = run_echo(box);
  if ((r = boxlite_box_stop(box)) != BOXLITE_OK) status = failed("boxlite_box_stop", r);
  if ((r = boxlite_box_remove(box, false)) != BOXLITE_OK) status = failed("boxlite_box_remove", r);
done:
  boxlite_box_free(box);
  boxlite_runtime_free(rt);
  return status;
}

/* Volumes and disk size through the C ABI, on one real VM: "volumes" and "disk_size_gb" in the
 * create JSON, an rw volume written by the box and read on the host, an ro one whose writes are
 * refused, df of the size asked for, both shown in the info JSON; malformed and bad values refused.
 * Needs REGISTRY (scripts/test-images.sh) and BOXLITE_TEST_HOME (an empty directory). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <sys/stat.h>
#include <unistd.h>

static boxlite_runtime *rt;
static char shared[64], rw[128], ro[128];

/* stdout of `sh -c script` in `b` into `out` (stderr dropped); its exit code, or -1 when a call
 * failed (counted). */
static int sh(boxlite_box *b, const char *script, char *out, size_t size) {
  const char *argv[] = {"sh", "-c", script};
  boxlite_exec *exec = NULL;
  size_t used = 0;
  out[0] = 0;
  CHECK_OK(boxlite_box_exec(b, argv, 3, NULL, &exec));
  if (!exec) return -1;
  for (;;) {
    size_t n = 0;
    boxlite_result r = boxlite_exec_read(exec, BOXLITE_STDOUT, (uint8_t *)out + used, size - 1 - used, -1, &n);
    CHECK_OK(r);
    if (r != BOXLITE_OK || n == 0 || used + n == size - 1) break;
    used += n;
  }
  out[used] = 0;
  int code = -1, sig = 0;
  bool timed_out = false;
  CHECK_OK(boxlite_exec_wait(exec, -1, &code, &sig, &timed_out));
  boxlite_exec_free(exec);
  return code;
}

static void a_box_shares_host_directories_and_has_the_disk_size_asked_for(void) {
  char options[1024], out[512], *info = NULL, expected[256];
  snprintf(options, sizeof options,
           "{\"volumes\": [{\"host_path\": \"%s\", \"guest_path\": \"/mnt/rw\"}, "
           "{\"host_path\": \"%s\", \"guest_path\": \"/mnt/ro\", \"read_only\": true}], \"disk_size_gb\": 4}",
           rw, ro);
  boxlite_box *b = NULL;
  CHECK_OK(boxlite_box_create(rt, "busybox:latest", options, &b));
  if (!b) return;
  CHECK_OK(boxlite_box_info(b, &info));
  snprintf(expected, sizeof expected, "\"volumes\":[{\"guest_path\":\"/mnt/rw\",\"host_path\":\"%s\",\"read_only\":false}", rw);
  CHECK(info && strstr(info, expected) && strstr(info, "\"read_only\":true}]") && strstr(info, "\"disk_size_gb\":4"));
  if (info && !strstr(info, expected)) fprintf(stderr, "info: %s\n", info);
  boxlite_string_free(info);

  CHECK(sh(b, "cat /mnt/ro/given.txt; echo from-c > /mnt/rw/out.txt; echo x > /mnt/ro/x 2>/dev/null || echo refused", out, sizeof out) == 0);
  CHECK(strcmp(out, "given\nrefused\n") == 0);
  char path[256], content[64] = {0};
  snprintf(path, sizeof path, "%s/out.txt", rw);
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  if (f) {
    CHECK(fgets(content, sizeof content, f) != NULL);
    fclose(f);
  }
  CHECK(strcmp(content, "from-c\n") == 0);
  snprintf(path, sizeof path, "%s/x", ro);
  struct stat st;
  CHECK(stat(path, &st) != 0);

  CHECK(sh(b, "df -k / | tail -1 | awk '{print $2}'", out, sizeof out) == 0);
  long kib = atol(out);
  CHECK(kib > 3700000 && kib < 4200000);
  if (!(kib > 3700000 && kib < 4200000)) fprintf(stderr, "df: %s\n", out);
  CHECK_OK(boxlite_box_remove(b, true));
  boxlite_box_free(b);
}

static void bad_volumes_and_disk_sizes_are_refused(void) {
  char missing[256], options[512];
  boxlite_box *b = NULL;
  snprintf(missing, sizeof missing, "{\"volumes\": [{\"host_path\": \"%s/missing\", \"guest_path\": \"/mnt\"}]}", shared);
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", missing, &b), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("does not exist");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"volumes\": [{\"host\": \"/tmp\"}]}", &b), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("volumes[0] {\"host\":\"/tmp\"} is not a volume");
  snprintf(options, sizeof options, "{\"volumes\": [{\"host_path\": \"%s\", \"guest_path\": \"relative\"}]}", shared);
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", options, &b), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("guest path 'relative' must be absolute");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"disk_size_gb\": 0}", &b), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("disk_size_gb 0 is out of range");
  CHECK_RESULT(boxlite_box_create(rt, "busybox:latest", "{\"disk_size_gb\": 1}", &b), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("smaller than the disk of image");
  CHECK(b == NULL);
}

int main(void) {
  const char *home = fixture("BOXLITE_TEST_HOME");
  const char *registry = fixture("REGISTRY");
  strcpy(shared, "/tmp/boxlite-cvol.XXXXXX");
  if (!mkdtemp(shared)) return 2;
  snprintf(rw, sizeof rw, "%s/rw", shared);
  snprintf(ro, sizeof ro, "%s/ro", shared);
  char given[160];
  snprintf(given, sizeof given, "%s/given.txt", ro);
  if (mkdir(rw, 0700) || mkdir(ro, 0700)) return 2;
  FILE *f = fopen(given, "w");
  if (!f) return 2;
  fputs("given\n", f);
  fclose(f);
  rt = open_runtime(home, registry);
  if (!rt) return finish();
  RUN(a_box_shares_host_directories_and_has_the_disk_size_asked_for);
  RUN(bad_volumes_and_disk_sizes_are_refused);
  boxlite_runtime_free(rt);
  char cleanup[160];
  snprintf(cleanup, sizeof cleanup, "rm -rf '%s'", shared);
  if (system(cleanup) != 0) fprintf(stderr, "could not remove %s\n", shared);
  return finish();
}

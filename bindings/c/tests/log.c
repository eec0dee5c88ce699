/* The log callback: events reach it with their level instead of stderr, its userdata is freed
 * when it is replaced, and NULL restores stderr. Boots no VM: a corrupt image record in the home
 * makes the runtime warn when it lists images. Needs BOXLITE_TEST_HOME (an empty directory). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <pthread.h>

typedef struct {
  pthread_mutex_t lock;
  int warnings, frees;
  char last[1024];
} log_record;

static void on_log(void *userdata, boxlite_log_level level, const char *message) {
  log_record *r = userdata;
  pthread_mutex_lock(&r->lock);
  if (level == BOXLITE_LOG_WARN) {
    r->warnings++;
    snprintf(r->last, sizeof r->last, "%s", message);
  }
  pthread_mutex_unlock(&r->lock);
}

static void on_free(void *userdata) { ((log_record *)userdata)->frees++; }

static void warnings_reach_the_callback_and_null_restores_stderr(void) {
  static log_record record = {PTHREAD_MUTEX_INITIALIZER, 0, 0, ""};
  char path[8192], dir[4096];
  const char *home = fixture("BOXLITE_TEST_HOME");
  snprintf(dir, sizeof dir, "%s/log-home", home);
  CHECK_OK(boxlite_log_set_callback(on_log, &record, on_free));

  char options[8192];
  snprintf(options, sizeof options, "{\"home\": \"%s\"}", dir);
  boxlite_runtime *rt = NULL;
  CHECK_OK(boxlite_runtime_new(options, &rt));
  if (!rt) return;
  snprintf(path, sizeof path, "%s/images/refs/corrupt.json", dir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f) {
    fputs("not json", f);
    fclose(f);
  }
  char *images = NULL;
  CHECK_OK(boxlite_images_list(rt, &images));
  CHECK(images && strcmp(images, "[]") == 0);
  boxlite_string_free(images);
  CHECK(record.warnings == 1);
  CHECK(strstr(record.last, "skipping unreadable image record") && strstr(record.last, "corrupt.json"));
  CHECK(strncmp(record.last, "WARN", 4) != 0); /* the level is the argument, not part of the text */
  CHECK(record.frees == 0);

  CHECK_OK(boxlite_log_set_callback(NULL, NULL, NULL));
  CHECK(record.frees == 1);
  CHECK_OK(boxlite_images_list(rt, &images)); /* to stderr now */
  boxlite_string_free(images);
  CHECK(record.warnings == 1);
  boxlite_runtime_free(rt);
}

int main(void) {
  RUN(warnings_reach_the_callback_and_null_restores_stderr);
  return finish();
}

/* C ABI tests of boxlite_runtime_pull and boxlite_canceller against the local test registry: a
 * pull succeeds, a cancelled canceller aborts before any work, and a cancel from another thread
 * aborts a pull in progress and leaves nothing in the image store. Boots no VM. Needs REGISTRY
 * (scripts/test-images.sh) and BOXLITE_TEST_HOME (a directory the other suites share). */
#define _XOPEN_SOURCE 700 /* nftw */
#include "harness.h"

#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

static const char *home;
static const char *registry;
static boxlite_runtime *rt;

/* ------------------------------------------------------------------ helpers */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Entries of `<store_home>/images/<sub>` (-1 if it cannot be listed); with `suffix`, only the
 * names ending in it. */
static int entries(const char *store_home, const char *sub, const char *suffix) {
  char path[4096];
  snprintf(path, sizeof path, "%s/images/%s", store_home, sub);
  DIR *dir = opendir(path);
  if (!dir) return -1;
  int count = 0;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    size_t len = strlen(entry->d_name), suffix_len = suffix ? strlen(suffix) : 0;
    if (entry->d_name[0] == '.') continue;
    if (suffix && (len < suffix_len || strcmp(entry->d_name + len - suffix_len, suffix) != 0)) continue;
    count++;
  }
  closedir(dir);
  return count;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* Cancels `canceller` once a layer download is under way in `store_home` (a partial blob is in
 * images/tmp), so the cancel lands mid-pull however fast the registry is. */
typedef struct {
  const char *store_home;
  boxlite_canceller *canceller;
  double cancelled_at; /* 0 if it never saw a download */
  boxlite_result result;
} mid_pull_cancel;

static void *cancel_mid_pull(void *arg) {
  mid_pull_cancel *c = arg;
  for (double deadline = now() + 30; now() < deadline; sleep_ms(5)) {
    if (entries(c->store_home, "tmp", "-blob") > 0) {
      sleep_ms(50); /* some bytes in */
      c->cancelled_at = now();
      c->result = boxlite_canceller_cancel(c->canceller);
      return NULL;
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------ cases */

static void pulling_an_image_records_it(void) {
  char image[512];
  boxlite_canceller *unused = NULL;
  snprintf(image, sizeof image, "%s/busybox:latest", registry);
  CHECK_OK(boxlite_runtime_pull(rt, image, NULL));
  CHECK(entries(home, "refs", ".json") >= 1);
  CHECK(entries(home, "disks", ".ext4") >= 1);
  /* Again, with a canceller that is never cancelled: the image is there, the call succeeds. */
  CHECK_OK(boxlite_canceller_new(&unused));
  CHECK_OK(boxlite_runtime_pull(rt, image, unused));
  boxlite_canceller_free(unused);
  CHECK(entries(home, "tmp", NULL) == 0);
}

static void a_missing_image_is_an_image_error(void) {
  char image[512];
  snprintf(image, sizeof image, "%s/no-such-image:v1", registry);
  CHECK_RESULT(boxlite_runtime_pull(rt, image, NULL), BOXLITE_ERR_IMAGE);
  CHECK_ERRMSG("no-such-image");
}

static void a_cancelled_canceller_aborts_before_any_work(void) {
  char image[512];
  boxlite_canceller *canceller = NULL;
  int refs = entries(home, "refs", ".json"), disks = entries(home, "disks", NULL);
  snprintf(image, sizeof image, "%s/python:slim", registry);
  CHECK_OK(boxlite_canceller_new(&canceller));
  if (!canceller) return;
  CHECK_OK(boxlite_canceller_cancel(canceller));
  CHECK_OK(boxlite_canceller_cancel(canceller)); /* again: a no-op */
  double started = now();
  CHECK_RESULT(boxlite_runtime_pull(rt, image, canceller), BOXLITE_ERR_ABORTED);
  CHECK(now() - started < 0.5);
  CHECK_ERRMSG("was aborted by its canceller");
  CHECK_ERRMSG(image);
  CHECK(entries(home, "refs", ".json") == refs && entries(home, "disks", NULL) == disks);
  CHECK(entries(home, "tmp", NULL) == 0);
  boxlite_canceller_free(canceller);
}

static void a_cancel_from_another_thread_aborts_the_pull_and_leaves_nothing(void) {
  char fresh[] = "/tmp/boxlite-c-pull.XXXXXX", image[512];
  if (!mkdtemp(fresh)) {
    CHECK(!"mkdtemp");
    return;
  }
  boxlite_runtime *own = open_runtime(fresh, registry); /* a fresh home: nothing of python:slim cached */
  boxlite_canceller *canceller = NULL;
  CHECK_OK(boxlite_canceller_new(&canceller));
  if (own && canceller) {
    snprintf(image, sizeof image, "%s/python:slim", registry);
    mid_pull_cancel cancel = {fresh, canceller, 0, BOXLITE_OK};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, cancel_mid_pull, &cancel) == 0);
    CHECK_RESULT(boxlite_runtime_pull(own, image, canceller), BOXLITE_ERR_ABORTED);
    double returned = now();
    pthread_join(thread, NULL);
    CHECK_OK(cancel.result);
    CHECK_ERRMSG("was aborted by its canceller");
    CHECK(cancel.cancelled_at > 0); /* the cancel came mid-download */
    /* Far sooner than the whole pull (6-8 s in a debug build, most of it building the disk). A
     * debug build notices the cancel only between bursts of hashing, up to ~1.5 s apart. */
    CHECK(returned - cancel.cancelled_at < 5.0);
    /* Nothing left: no partial file, no disk, no reference. A layer whose download had just
     * ended when the cancel came is still being verified (sync, rename into blobs/) on a library
     * thread when the call returns: allow it a moment. */
    for (int i = 0; i < 200 && entries(fresh, "tmp", NULL) != 0; i++) sleep_ms(10);
    CHECK(entries(fresh, "tmp", NULL) == 0);
    CHECK(entries(fresh, "disks", NULL) == 0);
    CHECK(entries(fresh, "refs", NULL) == 0);
    /* The canceller stays cancelled; the runtime stays usable. */
    CHECK_RESULT(boxlite_runtime_pull(own, image, canceller), BOXLITE_ERR_ABORTED);
    snprintf(image, sizeof image, "%s/busybox:latest", registry);
    CHECK_OK(boxlite_runtime_pull(own, image, NULL));
    CHECK(entries(fresh, "refs", ".json") == 1);
  }
  boxlite_canceller_free(canceller);
  boxlite_runtime_free(own);
  remove_tree(fresh);
}

int main(void) {
  home = fixture("BOXLITE_TEST_HOME");
  registry = fixture("REGISTRY");
  rt = open_runtime(home, registry);
  if (!rt) return finish();
  RUN(pulling_an_image_records_it);
  RUN(a_missing_image_is_an_image_error);
  RUN(a_cancelled_canceller_aborts_before_any_work);
  RUN(a_cancel_from_another_thread_aborts_the_pull_and_leaves_nothing);
  boxlite_runtime_free(rt);
  return finish();
}

/* C ABI tests of the image store: registries from BOXLITE_INSECURE_REGISTRIES when the options
 * name none, boxlite_images_list, boxlite_image_remove (refused while a box uses the image,
 * forced) and boxlite_images_prune (with boxes). Boots no VM. Needs REGISTRY
 * (scripts/test-images.sh). */
#define _XOPEN_SOURCE 700 /* mkdtemp, setenv, nftw */
#include "harness.h"

#include <ftw.h>
#include <sys/stat.h>

static const char *registry;
static char home[] = "/tmp/boxlite-c-images.XXXXXX";
static boxlite_runtime *rt;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* Checks that `json` (freed here) contains `needle`. */
#define CHECK_JSON(json, needle)                                                          \
  do {                                                                                    \
    if (!(json) || !strstr((json), (needle))) {                                           \
      fprintf(stderr, "%s:%d: JSON lacks %s: %s\n", __FILE__, __LINE__, (needle),          \
              (json) ? (json) : "(null)");                                                \
      current_test_failed = 1;                                                            \
    }                                                                                     \
  } while (0)

static void a_runtime_without_registries_takes_them_from_the_environment(void) {
  char options[4096], expected[512];
  snprintf(options, sizeof options, "{\"home\": \"%s\"}", home);
  CHECK_OK(boxlite_runtime_new(options, &rt));
  if (!rt) return;
  CHECK_OK(boxlite_runtime_pull(rt, "busybox:latest", NULL)); /* unqualified: found via the env */
  char *list = NULL;
  CHECK_OK(boxlite_images_list(rt, &list));
  snprintf(expected, sizeof expected, "\"reference\":\"%s/busybox:latest\"", registry);
  CHECK_JSON(list, expected);
  CHECK_JSON(list, "\"layers\":1");
  boxlite_string_free(list);
}

static void a_malformed_environment_entry_is_named(void) {
  char options[4096];
  boxlite_runtime *bad = NULL;
  snprintf(options, sizeof options, "{\"home\": \"%s\"}", home);
  setenv("BOXLITE_INSECURE_REGISTRIES", "127.0.0.1:99999", 1);
  CHECK_RESULT(boxlite_runtime_new(options, &bad), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("BOXLITE_INSECURE_REGISTRIES");
  CHECK_ERRMSG("127.0.0.1:99999");
  CHECK(bad == NULL);
  setenv("BOXLITE_INSECURE_REGISTRIES", registry, 1);
}

static void an_image_a_box_uses_is_removed_only_with_force(void) {
  boxlite_box *box = NULL;
  char *out = NULL, expected[512];
  if (!rt) return;
  CHECK_OK(boxlite_box_create(rt, "busybox:latest", "{\"name\": \"c-image-user\"}", &box));
  CHECK_RESULT(boxlite_image_remove(rt, "busybox:latest", false, &out), BOXLITE_ERR_INVALID_STATE);
  CHECK_ERRMSG("c-image-user");
  CHECK(out == NULL);
  CHECK_RESULT(boxlite_image_remove(rt, "nosuch:latest", false, &out), BOXLITE_ERR_NOT_FOUND);
  CHECK_OK(boxlite_image_remove(rt, "busybox:latest", true, &out));
  snprintf(expected, sizeof expected, "\"images\":[\"%s/busybox:latest\"]", registry);
  CHECK_JSON(out, expected);
  CHECK_JSON(out, "\"base_disks\":[]"); /* the box still needs it */
  boxlite_string_free(out);
  out = NULL;

  CHECK_RESULT(boxlite_images_prune(rt, "{\"box\": true}", &out), BOXLITE_ERR_INVALID_ARGUMENT);
  CHECK_ERRMSG("unknown field `box`");
  CHECK_OK(boxlite_images_prune(rt, "{\"boxes\": true}", &out));
  char id_json[64];
  snprintf(id_json, sizeof id_json, "\"boxes\":[\"%s\"]", box ? boxlite_box_id(box) : "?");
  CHECK_JSON(out, id_json);
  CHECK_JSON(out, "\"base_disks\":[\"sha256:");
  boxlite_string_free(out);
  boxlite_box_free(box);

  CHECK_OK(boxlite_images_list(rt, &out));
  CHECK(out && strcmp(out, "[]") == 0);
  boxlite_string_free(out);
  CHECK_OK(boxlite_images_prune(rt, NULL, &out)); /* nothing left to prune */
  CHECK_JSON(out, "\"bytes_freed\":0");
  boxlite_string_free(out);
}

int main(void) {
  registry = fixture("REGISTRY");
  if (!mkdtemp(home)) return 2;
  /* Before any runtime exists, so no library thread reads the environment meanwhile. */
  unsetenv("BOXLITE_REGISTRIES");
  setenv("BOXLITE_INSECURE_REGISTRIES", registry, 1);
  RUN(a_runtime_without_registries_takes_them_from_the_environment);
  RUN(a_malformed_environment_entry_is_named);
  RUN(an_image_a_box_uses_is_removed_only_with_force);
  boxlite_runtime_free(rt);
  nftw(home, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return finish();
}

//! The image store of a runtime: listing, removing and pruning images. Results are JSON strings
//! freed with `boxlite_string_free`, as `boxlite_box_info`.

use crate::args::{options, out_param, string};
use crate::boxes::json_string;
use crate::error::{boundary, boxlite_result};
use crate::runtime::{boxlite_runtime, context};
use serde::Deserialize;
use std::ffi::c_char;

/// The images pulled into the runtime's home, as a JSON array sorted by reference; each an object
/// with `"reference"` (normalized, e.g. `"127.0.0.1:5000/busybox:latest"`), `"digest"` (of the
/// manifest), `"config_digest"`, `"layers"`, `"size_bytes"` (the layers as stored) and
/// `"pulled_at"` (unix seconds). `out` receives a string to free with `boxlite_string_free`.
/// Errors: `BOXLITE_ERR_STORAGE`. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_images_list(rt: *const boxlite_runtime, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let out = unsafe { out_param(out, "out")? };
        let images: Vec<serde_json::Value> = ctx
            .runtime
            .images()?
            .into_iter()
            .map(|i| {
                serde_json::json!({
                    "reference": i.reference, "digest": i.manifest_digest, "config_digest": i.config_digest,
                    "layers": i.layer_count, "size_bytes": i.size_bytes, "pulled_at": i.pulled_at,
                })
            })
            .collect();
        *out = json_string(&images)?;
        Ok(())
    })
}

/// Removes an image: its reference, then its blobs and base disk unless another image or a box
/// still needs them.
///
/// `reference`: as `boxlite_images_list` names it, or as a pull would resolve it (`"busybox"`
/// with the runtime's registries). `force`: remove an image whose base disk boxes use; the disk
/// is then kept until those boxes are removed (a later prune frees it). `out` receives a JSON
/// object, freed with `boxlite_string_free`: `"boxes"` (empty here), `"images"` (references
/// removed), `"blobs"` (digests deleted), `"base_disks"` (config digests of the disks deleted)
/// and `"bytes_freed"` (on disk).
///
/// Errors: `BOXLITE_ERR_NOT_FOUND` (no such image in the home), `BOXLITE_ERR_INVALID_STATE`
/// (boxes use its base disk and `force` is false; the message names them),
/// `BOXLITE_ERR_STORAGE`. Waits for pulls and box creations under way, in any process. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `reference` is NULL or NUL-terminated; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_image_remove(
    rt: *mut boxlite_runtime,
    reference: *const c_char,
    force: bool,
    out: *mut *mut c_char,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all three): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let reference = unsafe { string(reference, "reference")? }.to_string();
        let out = unsafe { out_param(out, "out")? };
        let runtime = ctx.runtime.clone();
        let removed = ctx.run(async move { runtime.remove_image(&reference, force).await })?;
        *out = json_string(&removed)?;
        Ok(())
    })
}

/// `options_json` of `boxlite_images_prune`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PruneConfig {
    boxes: bool,
    all: bool,
}

/// Deletes the image blobs and base disks that no image references and no box uses.
///
/// `options_json`: NULL, or a JSON object with `"boxes"` (true: first remove every box that is not
/// running, i.e. created, stopped or failed, with its disk) and `"all"` (true: also remove the
/// images no box uses). Unknown keys are rejected. `out` receives a JSON object as
/// `boxlite_image_remove`'s (`"boxes"` lists the ids of the boxes removed), freed with
/// `boxlite_string_free`.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (bad options), `BOXLITE_ERR_STORAGE`. Waits for pulls
/// and box creations under way, in any process. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `options_json` is NULL or NUL-terminated; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_images_prune(
    rt: *mut boxlite_runtime,
    options_json: *const c_char,
    out: *mut *mut c_char,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all three): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let config: PruneConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let runtime = ctx.runtime.clone();
        let prune = boxlite::PruneOptions { boxes: config.boxes, all_images: config.all };
        let removed = ctx.run(async move { runtime.prune(prune).await })?;
        *out = json_string(&removed)?;
        Ok(())
    })
}

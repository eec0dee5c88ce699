//! The runtime's image store operations that need to know about boxes: finding a cached image,
//! removing one, and pruning what nothing uses. A box's disk is an overlay of its image's base
//! disk, so a base disk that any box uses (in any state) is never deleted.

use super::Runtime;
use crate::error::{Error, Result};
use crate::image::{allocated_bytes, disk_name, Image, Removed};
use std::collections::HashSet;

/// What [`Runtime::prune`] removes besides unreferenced blobs and base disks.
#[derive(Clone, Copy, Debug, Default)]
pub struct PruneOptions {
    /// Also remove every box that is not active (created, stopped or failed), with its disk.
    pub boxes: bool,
    /// Also remove the images no box uses (not only what no image references).
    pub all_images: bool,
}

impl Runtime {
    /// The image `reference` names if this home has it ready (base disk built), without any
    /// network access: what `create` would use instead of pulling.
    pub fn find_image(&self, reference: &str) -> Result<Option<Image>> {
        self.inner.images.get(reference, &self.inner.registries)
    }

    /// Removes an image: its reference, then its blobs and base disk unless another image or a
    /// box still needs them. An image whose base disk boxes use (and no other reference shares)
    /// is refused with `INVALID_STATE` naming them; with `force` its reference is removed and
    /// the base disk kept until those boxes are gone (a later prune frees it).
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<Removed> {
        let store = &self.inner.images;
        let lock = store.lock().await?;
        let image = store.find(reference, &self.inner.registries)?.ok_or_else(|| {
            Error::NotFound(format!("no image '{reference}' in this home (`boxlite images` lists them)"))
        })?;
        let disk = disk_name(&image.base_disk);
        let shared = store.list()?.iter().any(|other| other.reference != image.reference && disk_name(&other.base_disk) == disk);
        if !shared && !force {
            let users: Vec<String> = self
                .state()
                .list()?
                .into_iter()
                .filter(|rec| disk_name(&rec.image.base_disk) == disk)
                .map(|rec| rec.name.unwrap_or(rec.id))
                .collect();
            if !users.is_empty() {
                return Err(Error::InvalidState(format!(
                    "image {} is used by box(es) {}: their disks are overlays of its base disk; remove them first, or remove the image with force (its base disk is then kept until they are gone)",
                    image.reference,
                    users.join(", ")
                )));
            }
        }
        store.remove_ref(&lock, &image)?;
        let mut removed = store.collect(&lock, Some(&image), &self.disks_in_use()?)?;
        removed.images.push(image.reference);
        Ok(removed)
    }

    /// Deletes the blobs and base disks that no image references and no box uses; with
    /// `options`, first the boxes that are not active and the images no box uses. Waits for the
    /// pulls and box creations under way (in any process) to finish first.
    pub async fn prune(&self, options: PruneOptions) -> Result<Removed> {
        let mut removed = Removed::default();
        if options.boxes {
            for rec in self.list()?.into_iter().filter(|rec| !rec.status.is_active()) {
                let bytes = allocated_bytes(&self.box_dir(&rec.id));
                match self.remove(&rec.id, false).await {
                    Ok(()) => {
                        removed.boxes.push(rec.id);
                        removed.bytes_freed += bytes;
                    }
                    // Started or removed by someone else meanwhile: not ours to prune.
                    Err(Error::InvalidState(_) | Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let store = &self.inner.images;
        let lock = store.lock().await?;
        let in_use = self.disks_in_use()?;
        if options.all_images {
            for image in store.list()? {
                if !disk_name(&image.base_disk).is_some_and(|d| in_use.contains(&d)) {
                    store.remove_ref(&lock, &image)?;
                    removed.images.push(image.reference);
                }
            }
        }
        let collected = store.collect(&lock, None, &in_use)?;
        removed.blobs = collected.blobs;
        removed.base_disks = collected.base_disks;
        removed.bytes_freed += collected.bytes_freed;
        Ok(removed)
    }

    /// The base disks (by file name) of every box of the home, whatever its state.
    fn disks_in_use(&self) -> Result<HashSet<String>> {
        let mut used: HashSet<String> = self.state().list()?.iter().filter_map(|rec| disk_name(&rec.image.base_disk)).collect();
        // A snapshot's disk layer chains onto its image's base disk too.
        used.extend(self.snapshot_base_disks()?.iter().filter_map(|d| disk_name(d)));
        Ok(used)
    }
}

//! Images: pulling from registries or local OCI layouts, applying layers, building base disks.

//! BoxLite runtime: turns an OCI image into a running micro-VM and runs commands in it.
#![warn(missing_docs)]

pub mod error;
pub mod image;

pub use error::{Error, Result};

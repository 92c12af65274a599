//! Known-vulnerable packages: OSV advisories in a local database matched against lockfiles and
//! the package databases of images, with each ecosystem's own version order.

pub mod db;
pub mod installed;
pub mod osv;
pub mod packages;
pub mod rpm;
pub mod version;

pub use db::{Database, DbError, ImportSummary};
pub use packages::{Lockfile, Package};

//! The file system the log store runs on: a small trait with the real implementation ([`StdFs`]) and a
//! fault-injecting in-memory one for tests ([`MemFs`]).
//!
//! The store only appends to files, reads them at offsets, truncates a torn tail once at open, and creates,
//! removes and lists files in one directory. Durability is explicit: bytes appended to a file are durable
//! after [`FsFile::sync`] returns `Ok`; a created or removed name is durable after [`FileSystem::sync_dir`].

use std::io;
use std::path::Path;
use std::sync::Arc;

mod mem;
mod std_fs;

pub use mem::{FsStats, MemFs};
pub use std_fs::StdFs;

/// An open file: positioned reads, appends, fdatasync.
pub trait FsFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`; fails if the file is shorter.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Appends all of `data` at the end of the file (the bytes are not durable until [`FsFile::sync`]).
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far, and the file's length, durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// The current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// True when the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cuts the file to `len` bytes (durable after [`FsFile::sync`]).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// A held exclusive lock on a file; released when dropped.
pub trait FsLock: Send + Sync {}

/// The file system operations the log store uses.
pub trait FileSystem: Send + Sync {
    /// Creates a directory and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens an existing file for reading and appending.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Creates a new, empty file for reading and appending; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the creations, removals and renames of names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing) without waiting: fails with
    /// [`io::ErrorKind::WouldBlock`] if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>>;
}

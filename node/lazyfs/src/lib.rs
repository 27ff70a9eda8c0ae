//! # drakkar-lazyfs
//!
//! Dev only: a passthrough FUSE filesystem for disk faults, after Jepsen's
//! [LazyFS](https://github.com/dsrhaslab/lazyfs). A directory mounted with [`LazyMount::mount`] shows
//! a backing directory, and:
//!
//! - **slow disk**: while [`LazyMount::set_fsync_delay`] holds a delay, every fsync, fdatasync and
//!   directory fsync answers only after it (on a thread of its own: reads and writes go on meanwhile);
//! - **power loss**: bytes written but not yet synced are tracked per file ([`track`]), and
//!   [`LazyMount::cut_power`] then [`LazyMount::restore_power`] discard them: each file goes back to
//!   the content of its last fsync, files created since the last sync of themselves or their directory
//!   disappear. What was fsynced survives; what was not is lost, as on a machine that lost power.
//!
//! Not modelled: renames, unlinks and directory creations are durable at once (as in LazyFS);
//! `close` makes nothing durable and is not delayed. The backing directory itself is never fsynced.
//!
//! Mounting needs `/dev/fuse` and root (or the `fusermount3` helper of Debian's `fuse3` for a user).
//! The filesystem runs on threads of the process that mounted it; dropping the [`LazyMount`] unmounts.
//!
//! ```no_run
//! use std::io::Write;
//! use drakkar_lazyfs::LazyMount;
//!
//! # fn main() -> std::io::Result<()> {
//! let (backing, dir) = (tempfile_dir("backing"), tempfile_dir("mnt"));
//! let disk = LazyMount::mount(&backing, &dir)?;
//! let mut f = std::fs::File::create(dir.join("log"))?;
//! f.write_all(b"synced")?;
//! f.sync_data()?;
//! f.write_all(b" and lost")?;
//! drop(f);
//! // A power loss: cut, kill whatever wrote, restore.
//! disk.cut_power();
//! let loss = disk.restore_power()?;
//! assert_eq!(std::fs::read(dir.join("log"))?, b"synced");
//! assert_eq!(loss.bytes_discarded, 9);
//! # Ok(())
//! # }
//! # fn tempfile_dir(n: &str) -> std::path::PathBuf { std::env::temp_dir().join(n) }
//! ```

mod fs;
pub mod track;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use track::PowerLoss;

/// A mounted lazy filesystem. Dropping it unmounts.
pub struct LazyMount {
    session: Option<fuser::BackgroundSession>,
    shared: Arc<fs::Shared>,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for LazyMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyMount").field("mountpoint", &self.mountpoint).finish_non_exhaustive()
    }
}

impl LazyMount {
    /// Mounts a view of `backing` (an existing directory) on `mountpoint` (created if missing).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyMount> {
        std::fs::create_dir_all(mountpoint)?;
        let backing = backing.canonicalize()?;
        if !backing.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, backing.display().to_string()));
        }
        let shared = Arc::new(fs::Shared::new(backing));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("drakkar-lazyfs".into()),
            fuser::MountOption::Subtype("drakkar-lazyfs".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        // Several threads: a request waits neither for another's disk I/O nor for a delayed fsync.
        config.n_threads = Some(4);
        let filesystem = fs::LazyFs { shared: shared.clone() };
        let session = fuser::spawn_mount(filesystem, mountpoint, &config)?;
        Ok(LazyMount { session: Some(session), shared, mountpoint: mountpoint.to_path_buf() })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Delays every fsync, fdatasync and directory fsync by `delay` from now on (`Duration::ZERO`:
    /// none). Fsyncs already waiting keep their delay.
    pub fn set_fsync_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.fsync_delay_us.store(us, Ordering::Relaxed);
    }

    /// The current fsync delay.
    pub fn fsync_delay(&self) -> Duration {
        Duration::from_micros(self.shared.fsync_delay_us.load(Ordering::Relaxed))
    }

    /// Cuts the power: from now on every change fails with EIO, and fsyncs still waiting make nothing
    /// durable. Then stop (kill -9) every process writing here, and [`LazyMount::restore_power`].
    pub fn cut_power(&self) {
        self.shared.cut_power();
    }

    /// Discards every unsynced change (see the crate doc) and serves again, as after a reboot.
    /// Files still open from before are closed (their handles fail with EBADF).
    pub fn restore_power(&self) -> io::Result<PowerLoss> {
        self.shared.restore_power()
    }

    /// Files with changes a power loss would discard now.
    pub fn dirty_files(&self) -> usize {
        self.shared.dirty_files()
    }

    /// Unmounts, reporting a failure (dropping unmounts too, silently).
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

//! The FUSE side: a passthrough of a backing directory, inode numbers mapped to backing paths, every
//! change recorded in the [`Tracker`] before it is made, and fsyncs held back while a delay is set.
//!
//! Timeouts of entries and attributes are zero and files are opened without `FOPEN_KEEP_CACHE`, so the
//! kernel caches nothing across a power loss: a restarted process sees what the backing files hold.
//! The backing directory itself is never fsynced: what is durable is what the tracker says.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::track::{PowerLoss, Tracker, read_full_at};

/// Entries and attributes are never cached by the kernel (see the module doc).
const TTL: Duration = Duration::ZERO;
/// The root directory's inode number (FUSE's).
const ROOT: u64 = 1;

/// State shared by the FUSE threads, delayed fsyncs and the controlling handle.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// The delay of every fsync, fdatasync and directory fsync, in microseconds (0: none).
    pub(crate) fsync_delay_us: AtomicU64,
}

/// Inodes, open files, unsynced changes and the power switch.
pub(crate) struct State {
    /// Backing path of each inode still named.
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open files: handle -> (inode, backing file).
    handles: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
    tracker: Tracker,
    /// False between a power cut and its restoration: every change fails with EIO.
    powered: bool,
    /// Bumped at every power cut: a delayed fsync from before it makes nothing durable.
    epoch: u64,
}

impl Shared {
    pub(crate) fn new(backing: PathBuf) -> Shared {
        let mut state = State {
            paths: HashMap::new(),
            inos: HashMap::new(),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            tracker: Tracker::new(),
            powered: true,
            epoch: 0,
        };
        state.inos.insert(backing.clone(), ROOT);
        state.paths.insert(ROOT, backing);
        Shared { state: Mutex::new(state), fsync_delay_us: AtomicU64::new(0) }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the power: changes fail from now on, pending delayed fsyncs will make nothing durable.
    pub(crate) fn cut_power(&self) {
        let mut st = self.lock();
        st.powered = false;
        st.epoch += 1;
    }

    /// Discards everything unsynced, forgets the open files, and serves again.
    pub(crate) fn restore_power(&self) -> io::Result<PowerLoss> {
        let mut st = self.lock();
        st.powered = false;
        st.epoch += 1;
        let paths = st.paths.clone();
        let (loss, removed) = st.tracker.power_loss(|ino| paths.get(&ino).cloned())?;
        for ino in removed {
            st.unname(ino);
        }
        st.handles.clear();
        st.powered = true;
        Ok(loss)
    }

    pub(crate) fn dirty_files(&self) -> usize {
        self.lock().tracker.dirty_files()
    }
}

impl State {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// The inode number of `path`, assigned if it has none.
    fn ino_of(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.inos.get(path) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(path.to_path_buf(), ino);
        self.paths.insert(ino, path.to_path_buf());
        ino
    }

    /// `ino` lost its name (unlinked, replaced, or removed by a power loss).
    fn unname(&mut self, ino: u64) {
        if let Some(p) = self.paths.remove(&ino) {
            self.inos.remove(&p);
        }
    }

    fn file(&self, fh: FileHandle) -> Result<(u64, Arc<File>), Errno> {
        self.handles.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn powered(&self) -> Result<(), Errno> {
        if self.powered { Ok(()) } else { Err(Errno::EIO) }
    }

    fn open_handle(&mut self, ino: u64, file: File) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, Arc::new(file)));
        FileHandle(fh)
    }

    /// Inodes named directly in directory `dir`.
    fn children_of(&self, dir: &Path) -> Vec<u64> {
        self.paths.iter().filter(|(_, p)| p.parent() == Some(dir)).map(|(&ino, _)| ino).collect()
    }

    /// Marks what an fsync of `ino` (through `fh`, when it has one) made durable.
    fn synced(&mut self, ino: u64, is_dir: bool) {
        if is_dir {
            if let Some(dir) = self.paths.get(&ino).cloned() {
                let children = self.children_of(&dir);
                self.tracker.names_synced(children);
            }
        } else {
            self.tracker.synced(ino);
        }
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let t = Duration::new(secs.unsigned_abs(), u32::try_from(nanos).unwrap_or(0));
    if secs >= 0 { UNIX_EPOCH + t } else { UNIX_EPOCH - t }
}

fn attr(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
        perm: (m.mode() & 0o7777) as u16,
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        rdev: u32::try_from(m.rdev()).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    }
}

/// The new path of something at `rest` under a renamed `to` (`to` itself for the renamed file: joining
/// an empty path would add a trailing slash, which only a directory may have).
fn moved_to(to: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) }
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// Backing open options for FUSE open flags: the access mode only (appends arrive with their offset;
/// truncation arrives as a `setattr` and is tracked there), and always reading: the tracker reads the
/// bytes a write or truncation is about to replace.
fn open_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true);
    if OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY {
        o.write(true);
    }
    o
}

/// The filesystem given to fuser.
pub(crate) struct LazyFs {
    pub(crate) shared: Arc<Shared>,
}

impl LazyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn entry(&self, path: &Path, reply: ReplyEntry) {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                let ino = self.lock().ino_of(path);
                reply.entry(&TTL, &attr(ino, &m), Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let st = self.lock();
        let m = match fh.and_then(|fh| st.file(fh).ok()) {
            Some((_, f)) => f.metadata(),
            None => std::fs::symlink_metadata(st.path(ino)?),
        };
        Ok(attr(ino.0, &m.map_err(errno)?))
    }

    /// An fsync of `ino`, after the configured delay (on its own thread, so other requests go on).
    fn sync(&self, ino: INodeNo, is_dir: bool, reply: ReplyEmpty) {
        let delay = Duration::from_micros(self.shared.fsync_delay_us.load(Ordering::Relaxed));
        let epoch = self.lock().epoch;
        let shared = self.shared.clone();
        let finish = move || {
            let mut st = shared.lock();
            if !st.powered || st.epoch != epoch {
                return reply.error(Errno::EIO);
            }
            st.synced(ino.0, is_dir);
            reply.ok();
        };
        if delay.is_zero() {
            finish();
        } else if let Err(e) = std::thread::Builder::new().name("lazyfs-fsync".into()).spawn(move || {
            std::thread::sleep(delay);
            finish();
        }) {
            // No thread for the delay: the reply went with the closure; the kernel sees the
            // request fail as the process would see a dead disk.
            eprintln!("drakkar-lazyfs: no thread for a delayed fsync: {e}");
        }
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // The lock is released before `entry` takes it again.
        let path = self.lock().child(parent, name);
        match path {
            Ok(path) => self.entry(&path, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| -> Result<(), Errno> {
            let mut st = self.lock();
            st.powered()?;
            let path = st.path(ino)?;
            if let Some(len) = size {
                let file = match fh.and_then(|fh| st.file(fh).ok()) {
                    Some((_, f)) => f,
                    None => Arc::new(OpenOptions::new().write(true).open(&path).map_err(errno)?),
                };
                st.tracker.before_set_len(ino.0, &file, len).map_err(errno)?;
                file.set_len(len).map_err(errno)?;
            }
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
            }
            if atime.is_some() || mtime.is_some() {
                let to_time = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(to_time(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(to_time(t));
                }
                File::open(&path).and_then(|f| f.set_times(times)).map_err(errno)?;
            }
            Ok(())
        })();
        match result.and_then(|()| self.getattr_of(ino, fh)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let path = self.lock().path(ino);
        match path.and_then(|p| std::fs::read_link(p).map_err(errno)) {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let made = (|| {
            let st = self.lock();
            st.powered()?;
            let path = st.child(parent, name)?;
            std::fs::DirBuilder::new().mode(mode & !umask).create(&path).map_err(errno)?;
            Ok(path)
        })();
        match made {
            Ok(path) => self.entry(&path, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let result = st.powered().and_then(|()| st.child(parent, name)).and_then(|path| {
            std::fs::remove_file(&path).map_err(errno)?;
            if let Some(ino) = st.inos.get(&path).copied() {
                st.tracker.forget(ino);
                st.unname(ino);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let result = st.powered().and_then(|()| st.child(parent, name)).and_then(|path| {
            std::fs::remove_dir(&path).map_err(errno)?;
            if let Some(ino) = st.inos.get(&path).copied() {
                st.unname(ino);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let made = (|| {
            let st = self.lock();
            st.powered()?;
            let path = st.child(parent, link_name)?;
            std::os::unix::fs::symlink(target, &path).map_err(errno)?;
            Ok(path)
        })();
        match made {
            Ok(path) => self.entry(&path, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let result = (|| {
            st.powered()?;
            let (from, to) = (st.child(parent, name)?, st.child(newparent, newname)?);
            if flags.contains(RenameFlags::RENAME_NOREPLACE) && std::fs::symlink_metadata(&to).is_ok() {
                return Err(Errno::EEXIST);
            }
            if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
                return Err(Errno::EINVAL);
            }
            std::fs::rename(&from, &to).map_err(errno)?;
            // Renames are durable at once (as in LazyFS): the replaced file is gone for good.
            if let Some(replaced) = st.inos.get(&to).copied() {
                st.tracker.forget(replaced);
                st.unname(replaced);
            }
            let moved: Vec<(u64, PathBuf)> = st
                .paths
                .iter()
                .filter_map(|(&ino, p)| p.strip_prefix(&from).ok().map(|rest| (ino, moved_to(&to, rest))))
                .collect();
            for (ino, new_path) in moved {
                st.unname(ino);
                st.inos.insert(new_path.clone(), ino);
                st.paths.insert(ino, new_path);
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let result = st.path(ino).and_then(|p| open_options(flags.0).open(p).map_err(errno));
        match result {
            Ok(file) => reply.opened(st.open_handle(ino.0, file), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let made = (|| {
            let mut st = self.lock();
            st.powered()?;
            let path = st.child(parent, name)?;
            let existed = std::fs::symlink_metadata(&path).is_ok();
            let mut o = open_options(flags);
            o.create(true).write(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            let file = o.open(&path).map_err(errno)?;
            let ino = st.ino_of(&path);
            if !existed {
                st.tracker.created(ino);
            } else if flags & libc::O_TRUNC != 0 {
                st.tracker.before_set_len(ino, &file, 0).map_err(errno)?;
                file.set_len(0).map_err(errno)?;
            }
            let m = file.metadata().map_err(errno)?;
            Ok((st.open_handle(ino, file), attr(ino, &m)))
        })();
        match made {
            Ok((fh, a)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = self.lock().file(fh);
        let result = file.and_then(|(_, f)| {
            let mut buf = vec![0u8; size as usize];
            let n = read_full_at(&f, &mut buf, offset).map_err(errno)?;
            buf.truncate(n);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock();
        let result = st.powered().and_then(|()| st.file(fh)).and_then(|(ino, f)| {
            st.tracker.before_write(ino, &f, offset, data.len() as u64).map_err(errno)?;
            f.write_all_at(data, offset).map_err(errno)
        });
        match result {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): nothing is buffered here, and closing makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync(ino, false, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let path = self.lock().path(ino);
        match path.map(|p| p.is_dir()) {
            Ok(true) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(false) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listed = (|| {
            let mut st = self.lock();
            let dir = st.path(ino)?;
            let mut names: Vec<(std::ffi::OsString, FileType)> = std::fs::read_dir(&dir)
                .map_err(errno)?
                .filter_map(Result::ok)
                .map(|e| {
                    let kind = e.file_type().ok().and_then(FileType::from_std);
                    (e.file_name(), kind.unwrap_or(FileType::RegularFile))
                })
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let parent = dir.parent().map_or(ROOT, |p| st.inos.get(p).copied().unwrap_or(ROOT));
            let mut entries =
                vec![(ino.0, FileType::Directory, ".".into()), (parent, FileType::Directory, "..".into())];
            for (name, kind) in names {
                let child = st.ino_of(&dir.join(&name));
                entries.push((child, kind, name));
            }
            Ok(entries)
        })();
        match listed {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync(ino, true, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Room is the backing filesystem's business; report plenty.
        reply.statfs(1 << 30, 1 << 30, 1 << 30, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        // No extended attributes: ENOSYS tells the kernel not to ask again.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let path = self.lock().path(ino);
        match path {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

//! An in-memory file system that injects faults: failing appends and syncs, process death, crashes that
//! lose every byte not yet synced (or keep a torn prefix of them), lost directory operations, flipped bits.
//!
//! Each file keeps the bytes written so far and the length made durable by its last successful sync (like
//! redb's crash-test backend). Names keep two views: the current one and the one made durable by the last
//! `sync_dir`. A [`MemFs::crash`] rolls everything back to the durable state, optionally keeping a prefix
//! of each file's unsynced bytes (a torn write) or the unsynced directory operations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FileSystem, FsFile, FsLock};

/// Counters of the calls made to a [`MemFs`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Successful appends.
    pub appends: u64,
    /// Bytes appended.
    pub bytes_appended: u64,
    /// Successful file syncs.
    pub syncs: u64,
    /// Successful directory syncs.
    pub dir_syncs: u64,
    /// Files created.
    pub creates: u64,
    /// Files removed.
    pub removes: u64,
}

#[derive(Clone, Debug, Default)]
struct Node {
    data: Vec<u8>,
    /// Bytes `data[..durable_len]` survive a crash.
    durable_len: usize,
    /// Set when the file was truncated below its durable length since the last sync: the durable content.
    durable_image: Option<Vec<u8>>,
    /// Set after a failed sync: like Linux after an fsync error, later syncs report success but the bytes
    /// that were dirty at the failure never become durable.
    sync_lies_from: Option<usize>,
}

#[derive(Clone, Debug, Default)]
struct Faults {
    appends_left: Option<u64>,
    partial_append: usize,
    syncs_left: Option<u64>,
    dir_syncs_left: Option<u64>,
    ops_left: Option<u64>,
    dead: bool,
}

/// Not a fault: how long each file sync takes (lets concurrent writers overlap in tests).
#[derive(Clone, Copy, Debug, Default)]
struct Latency(std::time::Duration);

#[derive(Clone, Debug, Default)]
struct State {
    nodes: HashMap<u64, Node>,
    next_node: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    locks: HashSet<PathBuf>,
    generation: u64,
    faults: Faults,
    sync_latency: Latency,
    stats: FsStats,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

impl State {
    /// Counts one mutating operation against the death budget.
    fn mutate(&mut self, what: &str) -> io::Result<()> {
        if self.faults.dead {
            return Err(injected("process is dead"));
        }
        if let Some(left) = self.faults.ops_left.as_mut() {
            if *left == 0 {
                self.faults.dead = true;
                return Err(injected(&format!("process died before {what}")));
            }
            *left -= 1;
        }
        Ok(())
    }

    fn node(&mut self, id: u64) -> io::Result<&mut Node> {
        self.nodes.get_mut(&id).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file vanished"))
    }
}

/// A shared, cloneable in-memory file system with fault injection. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

struct MemFile {
    state: Arc<Mutex<State>>,
    node: u64,
    generation: u64,
}

struct MemLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl FsLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemFile {
    /// The state, if this handle was opened since the last crash.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.generation != self.generation {
            return Err(io::Error::other("stale handle: the file system crashed since it was opened"));
        }
        Ok(st)
    }
}

impl FsFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut st = self.live()?;
        let node = st.node(self.node)?;
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| node.data.get(start..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut st = self.live()?;
        st.mutate("append")?;
        if let Some(left) = st.faults.appends_left.as_mut() {
            if *left == 0 {
                let partial = st.faults.partial_append.min(data.len());
                st.node(self.node)?.data.extend_from_slice(&data[..partial]);
                return Err(injected("append failed"));
            }
            *left -= 1;
        }
        st.node(self.node)?.data.extend_from_slice(data);
        st.stats.appends += 1;
        st.stats.bytes_appended += data.len() as u64;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let latency = lock(&self.state).sync_latency.0;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let mut st = self.live()?;
        st.mutate("sync")?;
        if let Some(left) = st.faults.syncs_left.as_mut() {
            if *left == 0 {
                let node = st.node(self.node)?;
                node.sync_lies_from.get_or_insert(node.durable_len);
                return Err(injected("fsync failed"));
            }
            *left -= 1;
        }
        let node = st.node(self.node)?;
        let len = node.data.len();
        match node.sync_lies_from {
            Some(from) => node.durable_len = node.durable_len.max(len.min(from)),
            None => {
                node.durable_len = len;
                node.durable_image = None;
            }
        }
        st.stats.syncs += 1;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.live()?;
        Ok(st.node(self.node)?.data.len() as u64)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut st = self.live()?;
        st.mutate("truncate")?;
        let node = st.node(self.node)?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        if len < node.durable_len && node.durable_image.is_none() {
            node.durable_image = Some(node.data[..node.durable_len].to_vec());
        }
        node.data.resize(len, 0);
        node.durable_len = node.durable_len.min(len);
        Ok(())
    }
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        MemFs::default()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Makes every file sync take `d` (not a fault; it survives crashes and forks).
    pub fn set_sync_latency(&self, d: std::time::Duration) {
        self.st().sync_latency = Latency(d);
    }

    /// After `n` more successful appends, every append fails, first writing `partial` bytes of its data.
    pub fn fail_appends_after(&self, n: u64, partial: usize) {
        let mut st = self.st();
        st.faults.appends_left = Some(n);
        st.faults.partial_append = partial;
    }

    /// After `n` more successful file syncs, every file sync fails. A file whose sync failed never makes
    /// the bytes dirty at that moment durable, even if a later sync reports success.
    pub fn fail_syncs_after(&self, n: u64) {
        self.st().faults.syncs_left = Some(n);
    }

    /// After `n` more successful directory syncs, every directory sync fails.
    pub fn fail_dir_syncs_after(&self, n: u64) {
        self.st().faults.dir_syncs_left = Some(n);
    }

    /// After `n` more mutating calls (create, append, sync, truncate, remove, rename, sync_dir), the process
    /// "dies": that call and every later call fail until [`MemFs::crash`].
    pub fn die_after(&self, n: u64) {
        self.st().faults.ops_left = Some(n);
    }

    /// True once a [`MemFs::die_after`] budget ran out.
    pub fn is_dead(&self) -> bool {
        self.st().faults.dead
    }

    /// Removes every armed fault.
    pub fn clear_faults(&self) {
        self.st().faults = Faults::default();
    }

    /// Simulates a power loss and reboot. Every file goes back to its durable bytes plus
    /// `tear(path, unsynced)` (capped at `unsynced`) of the bytes appended after its last sync. Names go back
    /// to the last `sync_dir`, unless `keep_dir_ops`. Open handles and locks become invalid; faults clear.
    pub fn crash(&self, keep_dir_ops: bool, mut tear: impl FnMut(&Path, u64) -> u64) {
        let mut st = self.st();
        let names = if keep_dir_ops { st.names.clone() } else { st.durable_names.clone() };
        let live: HashSet<u64> = names.values().copied().collect();
        st.nodes.retain(|id, _| live.contains(id));
        for (path, id) in &names {
            let Some(node) = st.nodes.get_mut(id) else { continue };
            if let Some(image) = node.durable_image.take() {
                node.data = image;
            } else {
                let durable = node.durable_len;
                let unsynced = (node.data.len() - durable) as u64;
                let keep = if node.sync_lies_from.is_some() { 0 } else { tear(path, unsynced).min(unsynced) };
                node.data.truncate(durable + keep as usize);
            }
            node.durable_len = node.data.len();
            node.sync_lies_from = None;
        }
        st.names = names.clone();
        st.durable_names = names;
        st.locks.clear();
        st.generation += 1;
        st.faults = Faults::default();
    }

    /// A crash that loses every unsynced byte and directory operation.
    pub fn crash_clean(&self) {
        self.crash(false, |_, _| 0);
    }

    /// An independent copy of this file system as it is now (durable and unsynced state alike), without
    /// locks or faults: used to try several crashes from the same point.
    pub fn fork(&self) -> MemFs {
        let mut copy = self.st().clone();
        copy.locks.clear();
        copy.faults = Faults::default();
        copy.generation += 1;
        MemFs { state: Arc::new(Mutex::new(copy)) }
    }

    /// Flips bit `bit` (0..8) of byte `offset` of `path`, in the durable and current content alike (media
    /// corruption).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut st = self.st();
        let id = *st.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let node = st.node(id)?;
        let i = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let byte = node.data.get_mut(i).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        *byte ^= 1 << (bit % 8);
        if let Some(b) = node.durable_image.as_mut().and_then(|img| img.get_mut(i)) {
            *b ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// The current content of a file.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.st();
        let id = st.names.get(path)?;
        st.nodes.get(id).map(|n| n.data.clone())
    }

    /// Creates (or replaces) a file holding `data`, durable at once, name included.
    pub fn write_file(&self, path: &Path, data: &[u8]) {
        let mut st = self.st();
        let id = st.next_node;
        st.next_node += 1;
        let node = Node { data: data.to_vec(), durable_len: data.len(), ..Node::default() };
        st.nodes.insert(id, node);
        st.names.insert(path.to_path_buf(), id);
        st.durable_names.insert(path.to_path_buf(), id);
    }

    /// The bytes of `path` appended since its last sync.
    pub fn unsynced_len(&self, path: &Path) -> u64 {
        let st = self.st();
        st.names
            .get(path)
            .and_then(|id| st.nodes.get(id))
            .map_or(0, |n| (n.data.len() - n.durable_len) as u64)
    }

    /// Every file name, current view, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.st().names.keys().cloned().collect()
    }

    /// Every file name as of the last directory sync (what a crash keeps), sorted.
    pub fn durable_paths(&self) -> Vec<PathBuf> {
        self.st().durable_names.keys().cloned().collect()
    }

    /// Call counters since creation.
    pub fn stats(&self) -> FsStats {
        self.st().stats
    }
}

impl FileSystem for MemFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // Directories are implicit: a name's parent is its directory.
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let st = self.st();
        if st.faults.dead {
            return Err(injected("process is dead"));
        }
        let node = *st.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(MemFile { state: self.state.clone(), node, generation: st.generation }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let mut st = self.st();
        st.mutate("create")?;
        if st.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let id = st.next_node;
        st.next_node += 1;
        st.nodes.insert(id, Node::default());
        st.names.insert(path.to_path_buf(), id);
        st.stats.creates += 1;
        Ok(Arc::new(MemFile { state: self.state.clone(), node: id, generation: st.generation }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st();
        st.mutate("remove")?;
        st.names.remove(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.stats.removes += 1;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.st();
        st.mutate("rename")?;
        let id = st.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.st();
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st();
        st.mutate("sync_dir")?;
        if let Some(left) = st.faults.dir_syncs_left.as_mut() {
            if *left == 0 {
                return Err(injected("directory fsync failed"));
            }
            *left -= 1;
        }
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        st.durable_names.extend(current);
        st.stats.dir_syncs += 1;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let mut st = self.st();
        if st.faults.dead {
            return Err(injected("process is dead"));
        }
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another holder"));
        }
        Ok(Box::new(MemLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_torn_prefix() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        let p = dir.join("a");
        let f = fs.create(&p).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        f.append(b"world").unwrap();
        let fork = fs.fork();
        fs.crash(false, |_, n| n - 2);
        assert_eq!(fs.read_file(&p).unwrap(), b"hellowor");
        assert!(f.append(b"x").is_err(), "handles die with the crash");
        fork.crash_clean();
        assert_eq!(fork.read_file(&p).unwrap(), b"hello");
    }

    #[test]
    fn unsynced_names_vanish_and_removed_names_return() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.write_file(&dir.join("old"), b"x");
        fs.create(&dir.join("new")).unwrap();
        fs.remove(&dir.join("old")).unwrap();
        let fork = fs.fork();
        fs.crash_clean();
        assert_eq!(fs.paths(), vec![dir.join("old")]);
        fork.crash(true, |_, _| 0);
        assert_eq!(fork.paths(), vec![dir.join("new")]);
    }

    #[test]
    fn failed_sync_never_becomes_durable() {
        let fs = MemFs::new();
        let p = Path::new("/d/a");
        fs.write_file(p, b"");
        let f = fs.open(p).unwrap();
        f.append(b"abc").unwrap();
        fs.fail_syncs_after(0);
        assert!(f.sync().is_err());
        fs.clear_faults();
        f.sync().unwrap(); // the lie: reports success
        fs.crash_clean();
        assert_eq!(fs.read_file(p).unwrap(), b"");
    }

    #[test]
    fn truncate_below_durable_is_undone_by_a_crash() {
        let fs = MemFs::new();
        let p = Path::new("/d/a");
        fs.write_file(p, b"abcdef");
        let f = fs.open(p).unwrap();
        f.truncate(2).unwrap();
        fs.crash_clean();
        assert_eq!(fs.read_file(p).unwrap(), b"abcdef");
        let f = fs.open(p).unwrap();
        f.truncate(2).unwrap();
        f.sync().unwrap();
        fs.crash_clean();
        assert_eq!(fs.read_file(p).unwrap(), b"ab");
    }

    #[test]
    fn locks_exclude_and_release() {
        let fs = MemFs::new();
        let p = Path::new("/d/LOCK");
        let l = fs.lock(p).unwrap();
        assert_eq!(fs.lock(p).err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        drop(l);
        fs.lock(p).unwrap();
    }

    #[test]
    fn death_fails_everything_after_the_budget() {
        let fs = MemFs::new();
        let f = fs.create(Path::new("/d/a")).unwrap();
        fs.die_after(1);
        f.append(b"a").unwrap();
        assert!(f.sync().is_err());
        assert!(f.append(b"b").is_err());
        assert!(fs.is_dead());
    }
}

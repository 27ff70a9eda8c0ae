//! What was written but not yet synced, per file, and how to take it back.
//!
//! Writes go straight to the backing file (reads need no merging); before a write or truncation
//! changes bytes that were synced, those bytes are saved in the file's undo log. A power loss applies
//! the undo logs newest first and truncates each file to its synced length, so exactly the synced
//! content remains. Appends past the synced length cost nothing to track: the truncation drops them.
//!
//! Invariants: a file without a [`FileLog`] is wholly durable (name and content); a file with one has
//! durable content `[0, synced_len)` as it was at the last sync, recoverable by undoing `undo` in
//! reverse order and truncating to `synced_len`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// What a power loss discarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Files whose unsynced writes were undone (truncated to their synced length, overwritten bytes
    /// restored).
    pub files_rolled_back: usize,
    /// Files created since the last sync of both the file and its directory, removed.
    pub files_removed: usize,
    /// Bytes discarded: written past each file's synced length, plus synced bytes restored.
    pub bytes_discarded: u64,
}

/// One file's unsynced changes.
#[derive(Debug)]
struct FileLog {
    /// Whether the file's name is durable (false for a file created since the last sync of both the
    /// file and its directory: a power loss removes it).
    named: bool,
    /// The file's length at its last sync.
    synced_len: u64,
    /// Synced bytes overwritten since then, as (offset, bytes before the change), oldest first.
    undo: Vec<(u64, Vec<u8>)>,
}

impl FileLog {
    /// Saves the current bytes of `[from, to)` that lie below the synced length.
    fn save(&mut self, file: &File, from: u64, to: u64) -> io::Result<()> {
        let to = to.min(self.synced_len);
        if from >= to {
            return Ok(());
        }
        let mut buf = vec![0u8; usize::try_from(to - from).map_err(io::Error::other)?];
        let n = read_full_at(file, &mut buf, from)?;
        buf.truncate(n);
        if !buf.is_empty() {
            self.undo.push((from, buf));
        }
        Ok(())
    }
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at the end of the file; the count read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The unsynced changes of every file, by inode number.
#[derive(Debug, Default)]
pub struct Tracker {
    files: HashMap<u64, FileLog>,
}

impl Tracker {
    /// An empty tracker: everything is durable.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// The log of `ino`, started (everything in `file` synced so far) if it has none.
    fn log(&mut self, ino: u64, file: &File) -> io::Result<&mut FileLog> {
        use std::collections::hash_map::Entry;
        Ok(match self.files.entry(ino) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let synced_len = file.metadata()?.len();
                e.insert(FileLog { named: true, synced_len, undo: Vec::new() })
            }
        })
    }

    /// Call before writing `len` bytes at `offset` of `file` (inode `ino`).
    pub fn before_write(&mut self, ino: u64, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.log(ino, file)?.save(file, offset, offset.saturating_add(len))
    }

    /// Call before truncating (or extending) `file` (inode `ino`) to `len` bytes.
    pub fn before_set_len(&mut self, ino: u64, file: &File, len: u64) -> io::Result<()> {
        let current = file.metadata()?.len();
        let log = self.log(ino, file)?;
        if len < current { log.save(file, len, current) } else { Ok(()) }
    }

    /// Call when `ino` was just created (empty): until it or its directory is synced, a power loss
    /// removes it.
    pub fn created(&mut self, ino: u64) {
        self.files.insert(ino, FileLog { named: false, synced_len: 0, undo: Vec::new() });
    }

    /// `ino` was synced (fsync or fdatasync): its name and current content are durable. (On Linux's
    /// journaling filesystems an fsync of a new file commits its directory entry too.)
    pub fn synced(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// A directory holding `children` was synced: their names are durable (not their content).
    pub fn names_synced(&mut self, children: impl IntoIterator<Item = u64>) {
        for ino in children {
            if let Some(log) = self.files.get_mut(&ino) {
                log.named = true;
            }
        }
    }

    /// `ino` was removed (unlinked, or replaced by a rename): nothing of it to take back.
    pub fn forget(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// Files with unsynced changes.
    pub fn dirty_files(&self) -> usize {
        self.files.len()
    }

    /// Whether `ino` has unsynced changes.
    pub fn is_dirty(&self, ino: u64) -> bool {
        self.files.contains_key(&ino)
    }

    /// A power loss: every file's unsynced changes are undone on the backing files (`path_of` gives a
    /// file's current backing path, `None` when it no longer has one), new unsynced files removed.
    /// Returns what was discarded and the inodes removed. Afterwards everything is durable again.
    pub fn power_loss(
        &mut self,
        path_of: impl Fn(u64) -> Option<PathBuf>,
    ) -> io::Result<(PowerLoss, Vec<u64>)> {
        let mut loss = PowerLoss::default();
        let mut removed = Vec::new();
        let mut files: Vec<(u64, FileLog)> = self.files.drain().collect();
        files.sort_by_key(|(ino, _)| *ino);
        for (ino, log) in files {
            let Some(path) = path_of(ino) else { continue };
            if !log.named {
                loss.bytes_discarded += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                loss.files_removed += 1;
                removed.push(ino);
                continue;
            }
            let file = OpenOptions::new().write(true).open(&path)?;
            let current = file.metadata()?.len();
            for (offset, bytes) in log.undo.iter().rev() {
                file.write_all_at(bytes, *offset)?;
                loss.bytes_discarded += bytes.len() as u64;
            }
            file.set_len(log.synced_len)?;
            loss.bytes_discarded += current.saturating_sub(log.synced_len);
            loss.files_rolled_back += 1;
        }
        Ok((loss, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A file in `dir` opened for reading and writing.
    fn open(path: &Path) -> File {
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap()
    }

    fn write(t: &mut Tracker, ino: u64, f: &File, offset: u64, data: &[u8]) {
        t.before_write(ino, f, offset, data.len() as u64).unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    #[test]
    fn only_synced_content_survives_a_power_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let f = open(&path);
        let mut t = Tracker::new();
        write(&mut t, 2, &f, 0, b"hello ");
        t.synced(2);
        assert!(!t.is_dirty(2));
        write(&mut t, 2, &f, 6, b"world");
        // Synced bytes overwritten, then more appended.
        write(&mut t, 2, &f, 0, b"HE");
        write(&mut t, 2, &f, 1, b"EEEE");
        assert_eq!(std::fs::read(&path).unwrap(), b"HEEEE world");
        assert!(t.is_dirty(2));
        let (loss, removed) = t.power_loss(|_| Some(path.clone())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello ");
        assert_eq!(loss.files_rolled_back, 1);
        assert_eq!(loss.bytes_discarded, 5 + 2 + 4);
        assert!(removed.is_empty());
        assert_eq!(t.dirty_files(), 0);
    }

    #[test]
    fn truncations_below_the_synced_length_are_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = open(&path);
        let mut t = Tracker::new();
        write(&mut t, 3, &f, 0, b"0123456789");
        t.synced(3);
        t.before_set_len(3, &f, 4).unwrap();
        f.set_len(4).unwrap();
        // A write past the new end leaves a hole where synced bytes were.
        write(&mut t, 3, &f, 6, b"xy");
        assert_eq!(std::fs::read(&path).unwrap(), b"0123\0\0xy");
        t.power_loss(|_| Some(path.clone())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
    }

    #[test]
    fn a_file_synced_twice_keeps_the_second_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = open(&path);
        let mut t = Tracker::new();
        write(&mut t, 4, &f, 0, b"one");
        t.synced(4);
        write(&mut t, 4, &f, 3, b" two");
        t.synced(4);
        write(&mut t, 4, &f, 0, b"ONE TWO three");
        t.power_loss(|_| Some(path.clone())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one two");
    }

    #[test]
    fn new_files_need_a_sync_of_themselves_or_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("new-{i}"))).collect();
        let mut t = Tracker::new();
        for (i, p) in paths.iter().enumerate() {
            let ino = 10 + i as u64;
            let f = open(p);
            t.created(ino);
            write(&mut t, ino, &f, 0, b"data");
        }
        t.synced(10); // the file itself: name and data durable
        t.names_synced([11]); // its directory: the name durable, the data not
        let (loss, removed) = t.power_loss(|ino| Some(paths[(ino - 10) as usize].clone())).unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"data");
        assert_eq!(std::fs::read(&paths[1]).unwrap(), b"");
        assert!(!paths[2].exists());
        assert_eq!((loss.files_rolled_back, loss.files_removed), (1, 1));
        assert_eq!(removed, vec![12]);
    }

    #[test]
    fn forgotten_and_pathless_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = open(&path);
        let mut t = Tracker::new();
        write(&mut t, 5, &f, 0, b"abc");
        write(&mut t, 6, &f, 0, b"abc");
        t.forget(5);
        let (loss, _) = t.power_loss(|_| None).unwrap();
        assert_eq!(loss, PowerLoss::default());
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }
}

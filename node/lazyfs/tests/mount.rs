//! The filesystem mounted for real: unsynced writes are really lost on a power loss (so the nemesis is
//! not a no-op), synced ones survive, and fsyncs really wait while a delay is set. Needs root and
//! `/dev/fuse` (CI has both); elsewhere each test prints `SKIPPED:` and passes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use drakkar_lazyfs::LazyMount;

/// A mounted filesystem on a fresh backing directory, or `None` (with the reason printed) when FUSE
/// cannot be mounted here.
fn mounted(dir: &Path) -> Option<LazyMount> {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: mounting a FUSE filesystem needs root and /dev/fuse");
        return None;
    }
    let backing = dir.join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    Some(LazyMount::mount(&backing, &dir.join("mnt")).expect("mounting as root with /dev/fuse"))
}

#[test]
fn a_power_loss_keeps_synced_data_and_loses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = mounted(dir.path()) else { return };
    let mnt = disk.mountpoint().to_path_buf();
    std::fs::create_dir(mnt.join("sub")).unwrap();
    let log = mnt.join("sub/log");
    let mut f = File::create(&log).unwrap();
    f.write_all(b"synced").unwrap();
    f.sync_data().unwrap();
    f.write_all(b" then lost").unwrap();
    // Read back through the mount before the power loss: everything is there.
    assert_eq!(std::fs::read(&log).unwrap(), b"synced then lost");
    // A file never synced, and one whose directory was synced (its name survives, empty).
    std::fs::write(mnt.join("sub/new"), b"never synced").unwrap();
    std::fs::write(mnt.join("named"), b"data not synced").unwrap();
    File::open(&mnt).unwrap().sync_all().unwrap();
    // A synced file overwritten in place without a sync.
    let mut g = OpenOptions::new().create(true).truncate(false).write(true).open(mnt.join("meta")).unwrap();
    g.write_all(b"version 1").unwrap();
    g.sync_all().unwrap();
    g.set_len(0).unwrap();
    g.write_all(b"v2").unwrap();
    assert!(disk.dirty_files() >= 4, "{}", disk.dirty_files());

    disk.cut_power();
    // While the power is out, writes fail.
    assert!(f.write_all(b"more").and_then(|()| f.sync_data()).is_err());
    drop((f, g));
    let loss = disk.restore_power().unwrap();

    assert_eq!(std::fs::read(&log).unwrap(), b"synced", "{loss:?}");
    assert!(!mnt.join("sub/new").exists());
    assert_eq!(std::fs::read(mnt.join("named")).unwrap(), b"");
    assert_eq!(std::fs::read(mnt.join("meta")).unwrap(), b"version 1");
    assert_eq!(loss.files_removed, 1, "{loss:?}");
    assert!(loss.files_rolled_back >= 3 && loss.bytes_discarded >= 10, "{loss:?}");
    assert_eq!(disk.dirty_files(), 0);
    // The backing files hold the same: nothing is cached above them.
    assert_eq!(std::fs::read(dir.path().join("backing/sub/log")).unwrap(), b"synced");
    // It serves again.
    std::fs::write(mnt.join("after"), b"x").unwrap();
    disk.unmount().unwrap();
}

/// The write-fsync-rename-fsync pattern of every identity and manifest file: the renamed file is a
/// file under its new name, before and after a power loss.
#[test]
fn a_file_renamed_into_place_survives() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = mounted(dir.path()) else { return };
    let mnt = disk.mountpoint().to_path_buf();
    std::fs::write(mnt.join("id.tmp"), b"id 1").unwrap();
    File::open(mnt.join("id.tmp")).unwrap().sync_all().unwrap();
    std::fs::rename(mnt.join("id.tmp"), mnt.join("id")).unwrap();
    File::open(&mnt).unwrap().sync_all().unwrap();
    assert_eq!(std::fs::read(mnt.join("id")).unwrap(), b"id 1");
    disk.cut_power();
    disk.restore_power().unwrap();
    assert_eq!(std::fs::read(mnt.join("id")).unwrap(), b"id 1");
    assert!(!mnt.join("id.tmp").exists());
    disk.unmount().unwrap();
}

#[test]
fn a_reopened_file_is_read_back_shorter_after_a_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = mounted(dir.path()) else { return };
    let path = disk.mountpoint().join("wal");
    let mut f = File::create(&path).unwrap();
    f.write_all(&[7u8; 4096]).unwrap();
    f.sync_all().unwrap();
    // Read it once so the kernel has its pages cached, then append without a sync.
    assert_eq!(std::fs::read(&path).unwrap().len(), 4096);
    f.write_all(&[8u8; 8192]).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 12288);
    disk.cut_power();
    drop(f);
    disk.restore_power().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 4096]);
}

#[test]
fn fsyncs_wait_while_the_disk_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = mounted(dir.path()) else { return };
    let path = disk.mountpoint().join("f");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"a").unwrap();
    disk.set_fsync_delay(Duration::from_millis(300));
    assert_eq!(disk.fsync_delay(), Duration::from_millis(300));
    let started = Instant::now();
    f.sync_data().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    // Reads and writes do not wait for a delayed fsync of another thread.
    let slow = std::thread::spawn({
        let f = f.try_clone().unwrap();
        move || f.sync_all()
    });
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    std::fs::write(disk.mountpoint().join("g"), b"b").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"a");
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    slow.join().unwrap().unwrap();
    // Healed: fast again, and what the slow fsyncs covered is durable.
    disk.set_fsync_delay(Duration::ZERO);
    let started = Instant::now();
    f.sync_data().unwrap();
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    disk.cut_power();
    drop(f);
    disk.restore_power().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"a");
}

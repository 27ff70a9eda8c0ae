//! Resource use of a process, from `/proc` (Linux; elsewhere the values read as zero).

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on every Linux architecture in use).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) used so far by process `pid` (None: this process).
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces and parentheses): utime is the 12th.
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(0.0, |t| t as f64 / USER_HZ)
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_visible() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        assert!(super::rss_bytes() > 0);
        // Burn a little CPU so the counter is above zero.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(super::cpu_seconds(None) > 0.0);
        assert_eq!(super::cpu_seconds(Some(u32::MAX)), 0.0);
    }
}

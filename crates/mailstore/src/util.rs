//! Small file-system and time helpers shared by the modules.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Wraps an `io::Error` with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it are
/// durable (on Linux, `fsync` on a directory opened read-only does this).
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Replaces `path` atomically with `contents`: write a temporary file in the
/// same directory, fsync it, rename it over `path`, fsync the directory.
/// A crash leaves either the old or the new file, never a mix. The new file
/// gets the old file's permission bits, or `default_mode` if it is new.
pub fn atomic_write(path: &Path, contents: &[u8], default_mode: u32) -> Result<()> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => default_mode,
        Err(e) => return Err(io_err(path)(e)),
    };
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // `mode` is filtered by the umask on create; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
        f.write_all(contents).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        fsync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive `flock` on `<file>.lock`, held while `file` is rewritten so
/// that concurrent editors take turns (readers need none: every rewrite is
/// an atomic rename). Released when dropped.
#[derive(Debug)]
pub(crate) struct EditLock {
    _file: File,
}

impl EditLock {
    /// Takes the lock for `file`, creating `file`'s directory and the lock
    /// file if needed. Blocks while another editor holds it.
    pub(crate) fn take(file: &Path) -> Result<Self> {
        let dir = parent_dir(file);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        f.lock().map_err(io_err(&path))?;
        Ok(Self { _file: f })
    }
}

/// The text of a file that may not exist yet (then empty).
pub(crate) fn read_optional(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The text of a file that must exist.
pub(crate) fn read_existing(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `text` with a final newline, so that an appended line starts a line.
pub(crate) fn with_newline(mut text: String) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Identity of a file version: a rewrite by rename changes the inode, an
/// in-place edit changes size or mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// The machine's host name, as Maildir names want it.
pub(crate) fn system_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Seconds and microseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_parts(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_micros()),
        Err(_) => (0, 0),
    }
}

/// Formats `t` as an RFC 5322 section 3.3 date-time in UTC, e.g.
/// `Sun, 29 Nov 2026 18:01:49 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let (secs, _) = unix_parts(t);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD.get((days % 7) as usize).copied().unwrap_or("Thu");
    let (y, mo, d) = civil_from_days(days as i64);
    let mon = MON
        .get((mo as usize).saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!("{wd}, {d} {mon} {y} {h:02}:{m:02}:{s:02} +0000")
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01):
/// Howard Hinnant's days -> (year, month, day) algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date: the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A fast, non-cryptographic 64-bit mixer (SplitMix64) for unique-name and
/// queue-id randomness; seeded once per process from the OS.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// 64 random bits from the OS (falls back to time and pid if unavailable).
pub(crate) fn os_random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        let (s, us) = unix_parts(SystemTime::now());
        splitmix64(s ^ (u64::from(us) << 20) ^ u64::from(std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_asked_for_during_a_flush_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::sync::Arc::new(DirFlusher::new(dir.path().to_path_buf()));
        // Pretend round 0 is under way, so that every caller joins round 1.
        {
            let mut s = f.state.lock().unwrap();
            s.running = true;
            s.open = 1;
        }
        let threads: Vec<_> = (0..5)
            .map(|_| {
                let f = std::sync::Arc::clone(&f);
                std::thread::spawn(move || f.flush())
            })
            .collect();
        while f.state.lock().unwrap().members < 5 {
            std::thread::yield_now();
        }
        // "Round 0" ends; one of the five runs round 1 for all of them.
        f.state.lock().unwrap().running = false;
        f.ended.notify_all();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(f.rounds(), 1);
        assert_eq!(f.flushed_through(), Some(1));
        assert_eq!(f.next_round(), 2);
        assert!(f.state.lock().unwrap().ended.is_empty());
        // Later calls each get a round of their own when alone.
        f.flush().unwrap();
        f.flush().unwrap();
        assert_eq!(f.rounds(), 3);
    }

    #[test]
    fn a_failed_round_fails_each_member_and_a_later_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let f = std::sync::Arc::new(DirFlusher::new(gone.clone()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let f = std::sync::Arc::clone(&f);
                std::thread::spawn(move || f.flush())
            })
            .collect();
        for t in threads {
            match t.join().unwrap() {
                Err(Error::Io { path, source }) => {
                    assert_eq!(path, gone);
                    assert_eq!(source.kind(), io::ErrorKind::NotFound);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(f.flushed_through(), None);
        fs::create_dir(&gone).unwrap();
        let round = f.next_round();
        f.flush().unwrap();
        assert_eq!(f.flushed_through(), Some(round));
        assert!(f.state.lock().unwrap().ended.is_empty());
    }

    #[test]
    fn many_threads_flushing_at_once_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::sync::Arc::new(DirFlusher::new(dir.path().to_path_buf()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let f = std::sync::Arc::clone(&f);
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        fs::write(d.join(format!("{t}-{i}")), b"x").unwrap();
                        f.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = f.state.lock().unwrap();
        assert!(s.rounds >= 1 && s.rounds <= 400, "{}", s.rounds);
        assert!(s.ended.is_empty() && s.members == 0 && !s.running);
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_975_309);
        assert_eq!(rfc5322_date(t), "Sun, 29 Nov 2026 18:01:49 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_error_names_path() {
        let e = atomic_write(Path::new("/nonexistent-dir/x"), b"", 0o600).unwrap_err();
        assert!(e.to_string().contains("nonexistent-dir"), "{e}");
    }
}

/// Directory flushes shared by the threads that need one at the same time
/// (group commit). A thread that asks while a flush is under way joins the
/// next round, which one of the waiting threads runs as soon as the current
/// one ends: with many sessions committing at once, one `fsync` of the
/// directory (one device flush) covers all of them instead of one each.
/// A round that fails fails for every thread in it, and nobody's entry is
/// then called durable by a later round (after a failed fsync the kernel may
/// have dropped what it could not write).
#[derive(Debug)]
pub(crate) struct DirFlusher {
    dir: PathBuf,
    state: std::sync::Mutex<FlushState>,
    ended: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    /// The round that new arrivals join (not started yet).
    open: u64,
    /// Threads in round `open`.
    members: usize,
    /// A round is running.
    running: bool,
    /// Rounds run so far.
    rounds: u64,
    /// The last round that succeeded.
    last_ok: Option<u64>,
    /// Ended rounds not yet collected by all their members: round →
    /// (members still to collect, the error's OS code or kind).
    ended: std::collections::HashMap<u64, (usize, Option<FlushError>)>,
}

#[derive(Debug, Clone, Copy)]
enum FlushError {
    Os(i32),
    Kind(io::ErrorKind),
}

/// A panicking member cannot leave the counters half-changed (nothing
/// between their updates can panic): a poisoned lock is used as it is.
fn lock(m: &std::sync::Mutex<FlushState>) -> std::sync::MutexGuard<'_, FlushState> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DirFlusher {
    pub(crate) fn new(dir: PathBuf) -> Self {
        DirFlusher {
            dir,
            state: Default::default(),
            ended: Default::default(),
        }
    }

    #[cfg(test)]
    fn rounds(&self) -> u64 {
        self.state.lock().map(|s| s.rounds).unwrap_or(0)
    }

    /// The round that a flush asked for now would join: an entry changed
    /// before this call is durable once [`DirFlusher::flushed_through`]
    /// reaches it.
    pub(crate) fn next_round(&self) -> u64 {
        lock(&self.state).open
    }

    /// The last round that succeeded (rounds run in order, each flushing
    /// everything changed before it began).
    pub(crate) fn flushed_through(&self) -> Option<u64> {
        lock(&self.state).last_ok
    }

    /// Returns once a flush of the directory that began after this call
    /// has ended: every entry change made before the call is durable.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut s = lock(&self.state);
        let mine = s.open;
        s.members += 1;
        loop {
            if let Some((left, err)) = s.ended.get_mut(&mine) {
                *left -= 1;
                let err = *err;
                if *left == 0 {
                    s.ended.remove(&mine);
                }
                return match err {
                    None => Ok(()),
                    Some(FlushError::Os(code)) => {
                        Err(io_err(&self.dir)(io::Error::from_raw_os_error(code)))
                    }
                    Some(FlushError::Kind(kind)) => Err(io_err(&self.dir)(kind.into())),
                };
            }
            if !s.running && s.open == mine {
                s.running = true;
                let members = s.members;
                s.members = 0;
                s.open += 1;
                drop(s);
                let r = File::open(&self.dir).and_then(|d| d.sync_all());
                s = lock(&self.state);
                s.running = false;
                s.rounds += 1;
                let err = r.err().map(|e| match e.raw_os_error() {
                    Some(code) => FlushError::Os(code),
                    None => FlushError::Kind(e.kind()),
                });
                if err.is_none() {
                    s.last_ok = Some(mine);
                }
                s.ended.insert(mine, (members, err));
                self.ended.notify_all();
                continue;
            }
            s = self
                .ended
                .wait(s)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

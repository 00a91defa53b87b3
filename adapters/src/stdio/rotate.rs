//! `ROTATED_FILE` output: a file that is moved aside when it grows too large or too old.
//!
//! Rotated files are numbered: `<path>.1` is the most recent, `<path>.2` the one before,
//! and so on. Numbers (rather than timestamps) keep names predictable and make "keep at
//! most N" a matter of deleting `<path>.N` before shifting. Rotation happens only
//! between lines, so no line is ever split across two files.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::config::Rotation;
use super::writer::{BUFFER_BYTES, LineBuffer, LineSink, Lost, combine};

const MIB: u64 = 1024 * 1024;
/// What a size limit of 0 means: Mixer's rotation library (lumberjack) used 100 MB.
const DEFAULT_MEGABYTES: u64 = 100;
const SECS_PER_DAY: u64 = 86_400;

/// When to rotate and how many rotated files to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rotate before a line would take the file past this size.
    pub max_bytes: u64,
    /// Rotate a file this old; `None`: never by age.
    pub max_age: Option<Duration>,
    /// Rotated files kept; 0 keeps all of them.
    pub max_files: u32,
}

impl Limits {
    /// The limits as the params name them: `max_megabytes_before_rotation` (MiB; 0 means
    /// lumberjack's 100), `max_days_before_rotation` (0: no age limit) and
    /// `max_rotated_files` (0: keep all). Mixer swapped the last two when it called its
    /// rotation library; the names are honoured here instead.
    pub fn from_config(r: &Rotation) -> Limits {
        let megabytes = match u64::from(r.max_megabytes_before_rotation) {
            0 => DEFAULT_MEGABYTES,
            mb => mb,
        };
        Limits {
            max_bytes: megabytes.saturating_mul(MIB),
            max_age: match r.max_days_before_rotation {
                0 => None,
                days => Some(Duration::from_secs(u64::from(days) * SECS_PER_DAY)),
            },
            max_files: r.max_rotated_files,
        }
    }
}

/// The live file and what decides its next rotation.
pub struct RotatingFile {
    path: PathBuf,
    file: LineBuffer<File>,
    /// Bytes in the live file, including what is still buffered.
    size: u64,
    /// When the live file was started: its age is measured from here.
    started: SystemTime,
    limits: Limits,
}

impl RotatingFile {
    /// Opens (appending) or creates the file, and its directory if needed (as Mixer's
    /// rotation library did). An existing file keeps counting towards its size and,
    /// where the file system records it, its creation time towards its age.
    pub fn open(path: &Path, limits: Limits) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let meta = file.metadata()?;
        Ok(RotatingFile {
            path: path.to_owned(),
            file: LineBuffer::with_capacity(BUFFER_BYTES, file),
            size: meta.len(),
            started: meta.created().unwrap_or_else(|_| SystemTime::now()),
            limits,
        })
    }

    fn due(&self, incoming: usize, now: SystemTime) -> bool {
        // An empty file is never rotated, so a line longer than the size limit still
        // lands whole in a fresh file instead of rotating forever.
        if self.size == 0 {
            return false;
        }
        let too_big = self.size.saturating_add(incoming as u64) > self.limits.max_bytes;
        let too_old = self.limits.max_age.is_some_and(|age| {
            now.duration_since(self.started)
                .is_ok_and(|lived| lived >= age)
        });
        too_big || too_old
    }

    /// Moves the live file to `<path>.1` (shifting older ones up and deleting what
    /// exceeds the limit) and starts a new one. The buffer must have been flushed.
    fn rotate(&mut self) -> io::Result<()> {
        shift_rotated(&self.path, self.limits.max_files)?;
        match fs::rename(&self.path, numbered(&self.path, 1)) {
            Ok(()) => {}
            // Already moved by an earlier attempt whose reopen failed: just reopen.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.file = LineBuffer::with_capacity(BUFFER_BYTES, open_append(&self.path)?);
        self.size = 0;
        self.started = SystemTime::now();
        Ok(())
    }
}

impl LineSink for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> Result<(), Lost> {
        let now = SystemTime::now();
        let mut lost = None;
        if self.due(line.len(), now) {
            // The old file's lines go out before it is renamed; if they cannot, rotating
            // waits for the next line (the lost ones are counted all the same).
            match self.file.flush_lines() {
                Ok(()) => {
                    if let Err(e) = self.rotate() {
                        tracing::warn!(
                            path = %self.path.display(),
                            error = %e,
                            "cannot rotate the stdio output file; writing on to the current file",
                        );
                        // Retry after another full size or age period rather than on
                        // every line.
                        self.size = 0;
                        self.started = now;
                    }
                }
                Err(e) => lost = Some(e),
            }
        }
        let written = self.file.write_line(line).err();
        self.size += line.len() as u64;
        combine(lost, written)
    }

    fn flush_lines(&mut self) -> Result<(), Lost> {
        self.file.flush_lines()
    }
}

/// Opens `path` for appending, creating it if missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `<path>.<n>`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Makes room for a new `<path>.1`: renames `<path>.i` to `<path>.(i+1)`, oldest first,
/// after deleting those that would end up beyond `max_files` (0: no limit). Only the
/// unbroken run `<path>.1`, `<path>.2`, ... is considered, so unrelated files are safe.
fn shift_rotated(path: &Path, max_files: u32) -> io::Result<()> {
    let mut count = 0u32;
    while numbered(path, count + 1).exists() {
        count += 1;
    }
    if max_files > 0 {
        // Also removes files left by an earlier, larger limit.
        for i in max_files..=count {
            fs::remove_file(numbered(path, i))?;
        }
        count = count.min(max_files - 1);
    }
    for i in (1..=count).rev() {
        fs::rename(numbered(path, i), numbered(path, i + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, max_files: u32) -> Limits {
        Limits {
            max_bytes,
            max_age: None,
            max_files,
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A 30-byte line (newline included) tagged `n`.
    fn line(n: usize) -> Vec<u8> {
        format!("{n:<29}\n").into_bytes()
    }

    #[test]
    fn limits_from_params() {
        let l = Limits::from_config(&Rotation {
            max_megabytes_before_rotation: 2,
            max_days_before_rotation: 3,
            max_rotated_files: 4,
        });
        assert_eq!(
            l,
            Limits {
                max_bytes: 2 * MIB,
                max_age: Some(Duration::from_secs(3 * 86_400)),
                max_files: 4,
            }
        );
        let zero = Limits::from_config(&Rotation {
            max_megabytes_before_rotation: 0,
            max_days_before_rotation: 0,
            max_rotated_files: 0,
        });
        assert_eq!(zero, limits(100 * MIB, 0));
        // Mixer's default (104857600 "megabytes") does not overflow.
        let huge = Limits::from_config(&Rotation {
            max_megabytes_before_rotation: 104_857_600,
            max_days_before_rotation: 30,
            max_rotated_files: 1000,
        });
        assert_eq!(huge.max_bytes, 104_857_600 * MIB);
    }

    #[test]
    fn rotates_by_size_and_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/access.log");
        let mut f = RotatingFile::open(&path, limits(100, 2)).unwrap();
        for n in 0..10 {
            f.write_line(&line(n)).unwrap();
        }
        f.flush_lines().unwrap();
        // Three 30-byte lines fit under 100 bytes, a fourth would not.
        let lines_of = |p: &Path| -> Vec<String> {
            read(p).lines().map(|l| l.trim_end().to_owned()).collect()
        };
        assert_eq!(lines_of(&path), ["9"]);
        assert_eq!(lines_of(&numbered(&path, 1)), ["6", "7", "8"]);
        assert_eq!(lines_of(&numbered(&path, 2)), ["3", "4", "5"]);
        // Lines 0-2 were in the oldest file, deleted to honour the limit.
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn no_limit_keeps_every_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = RotatingFile::open(&path, limits(30, 0)).unwrap();
        for n in 0..5 {
            f.write_line(&line(n)).unwrap();
        }
        f.flush_lines().unwrap();
        assert_eq!(read(&path).trim_end(), "4");
        for k in 1..=4u32 {
            assert_eq!(read(&numbered(&path, k)).trim_end(), (4 - k).to_string());
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = RotatingFile::open(&path, limits(10, 3)).unwrap();
        let long = format!("{}\n", "x".repeat(50));
        f.write_line(long.as_bytes()).unwrap();
        f.write_line(long.as_bytes()).unwrap();
        f.flush_lines().unwrap();
        assert_eq!(read(&path), long);
        assert_eq!(read(&numbered(&path, 1)), long);
        assert!(!numbered(&path, 2).exists());
    }

    #[test]
    fn existing_file_counts_and_a_lowered_limit_prunes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "old-live\n").unwrap();
        for k in 1..=5u32 {
            fs::write(numbered(&path, k), format!("old-{k}\n")).unwrap();
        }
        // Unrelated files next to the log are left alone.
        fs::write(dir.path().join("a.log.keep"), "mine").unwrap();
        let mut f = RotatingFile::open(&path, limits(12, 2)).unwrap();
        // 9 bytes already there; 9 + 8 > 12 rotates before this line.
        f.write_line(b"new-one\n").unwrap();
        f.flush_lines().unwrap();
        assert_eq!(read(&path), "new-one\n");
        assert_eq!(read(&numbered(&path, 1)), "old-live\n");
        assert_eq!(read(&numbered(&path, 2)), "old-1\n");
        for k in 3..=6u32 {
            assert!(!numbered(&path, k).exists(), "{k} should be gone");
        }
        assert_eq!(read(&dir.path().join("a.log.keep")), "mine");
    }

    #[test]
    fn rotates_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let day = Duration::from_secs(SECS_PER_DAY);
        let mut f = RotatingFile::open(
            &path,
            Limits {
                max_bytes: MIB,
                max_age: Some(day),
                max_files: 5,
            },
        )
        .unwrap();
        f.write_line(b"first\n").unwrap();
        f.write_line(b"second\n").unwrap();
        // Pretend the live file was started two days ago.
        f.started = SystemTime::now() - 2 * day;
        f.write_line(b"third\n").unwrap();
        f.write_line(b"fourth\n").unwrap();
        f.flush_lines().unwrap();
        assert_eq!(read(&numbered(&path, 1)), "first\nsecond\n");
        assert_eq!(read(&path), "third\nfourth\n");
        assert!(!numbered(&path, 2).exists());
    }
}

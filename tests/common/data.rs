//! Test data: a temporary directory removed on drop, random files from /dev/urandom,
//! and byte-for-byte comparison with a useful message.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir; removed with its contents on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tunstack-{test}-{}-{n}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `len` random bytes (from /dev/urandom) to `name` and returns its path.
    pub fn random_file(&self, name: &str, len: u64) -> PathBuf {
        let path = self.file(name);
        let copied = File::open("/dev/urandom")
            .and_then(|urandom| {
                let mut output = File::create(&path)?;
                io::copy(&mut urandom.take(len), &mut output)
            })
            .unwrap_or_else(|e| panic!("cannot write random data to {}: {e}", path.display()));
        assert_eq!(copied, len, "short read from /dev/urandom");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Panics unless the files hold the same bytes, saying where they first differ.
pub fn assert_same_bytes(expected: &Path, actual: &Path, what: &str) {
    let read = |path: &Path| {
        fs::read(path).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", path.display()))
    };
    let (expected_bytes, actual_bytes) = (read(expected), read(actual));
    if expected_bytes == actual_bytes {
        return;
    }
    let first_difference = expected_bytes
        .iter()
        .zip(&actual_bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(expected_bytes.len().min(actual_bytes.len()));
    panic!(
        "{what}: echoed bytes differ from the bytes sent: sent {} bytes, got back {} bytes, \
         first difference at offset {first_difference}",
        expected_bytes.len(),
        actual_bytes.len()
    );
}

/// What to call an nc echo that took `elapsed` with `-w idle`: nc exits 0, saying nothing,
/// when no data came for `idle` seconds, so a short echo from a slow run says so.
pub fn nc_echo_label(what: &str, elapsed: std::time::Duration, idle: u64) -> String {
    let ran = elapsed.as_secs_f64();
    if ran >= idle as f64 {
        format!(
            "{what} (nc ran {ran:.1} s: with -w {idle} it quits quietly after {idle} s without data)"
        )
    } else {
        format!("{what} (nc ran {ran:.1} s)")
    }
}

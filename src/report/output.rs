//! Output folders that are never half-written.
//!
//! - [`AtomicFile`]: a file is written beside its destination under a temporary name,
//!   flushed, synced, and renamed over it: a reader (or a crash) sees the old file or the
//!   new one, never a truncated one. Any write error (a full disk, a file-size limit)
//!   surfaces as an error, never as a short file.
//! - [`publish`]: a run's reports are written into a staging folder inside `--out` and
//!   moved into place together, under an exclusive lock on `--out/.lbsim.lock`, so two
//!   runs into one folder cannot interleave. The files the previous run wrote that this
//!   one did not (a `sweep.csv` of another scenario, SVGs after `--png`) are removed:
//!   they are listed in `--out/.lbsim-files`, so files lbsim did not write are never
//!   touched.
//! - [`check_writable`]: run before any work, so an unwritable `--out` fails in a second,
//!   not after the whole simulation.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ReportError;

/// Lock file in an output folder, held while a run moves its files in.
pub const LOCK: &str = ".lbsim.lock";
/// The files the last run wrote into an output folder, one per line.
pub const MANIFEST: &str = ".lbsim-files";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other process or thread uses: `<prefix>.<pid>.<n>`.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn write_err(path: &Path) -> impl Fn(io::Error) -> ReportError + '_ {
    move |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A file written under a temporary name and renamed into place by [`AtomicFile::commit`].
/// Dropped without a commit, the temporary file is removed and the destination is left
/// as it was.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (its folder is created).
    pub fn create(path: &Path) -> Result<AtomicFile, ReportError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        }
        let name = path
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir
            .unwrap_or(Path::new("."))
            .join(unique(&format!(".{name}.tmp")));
        let file = File::create(&tmp).map_err(write_err(&tmp))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(BufWriter::new(file)),
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs to disk and renames the file into place.
    pub fn commit(mut self) -> Result<PathBuf, ReportError> {
        let Some(w) = self.file.take() else {
            return Ok(self.path.clone());
        };
        let file = w.into_inner().map_err(|e| ReportError::Write {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(write_err(&self.path))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(write_err(&self.path))?;
        Ok(self.path.clone())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(write_err(path))?;
    f.commit()
}

/// Checks, before any work, that files can be created in `dir` (creating it): a probe
/// file is written and removed.
pub fn check_writable(dir: &Path) -> Result<(), ReportError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ReportError::Write {
            path: dir.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a folder",
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let probe = dir.join(unique(".lbsim-probe"));
    let mut f = File::create(&probe).map_err(write_err(dir))?;
    let written = f.write_all(b"probe\n").and_then(|()| f.sync_all());
    drop(f);
    let _ = std::fs::remove_file(&probe);
    written.map_err(write_err(dir))
}

/// A staging folder inside an output folder; removed when dropped.
#[derive(Debug)]
pub struct Staging {
    /// The output folder.
    pub out: PathBuf,
    /// Where reports are written first.
    pub dir: PathBuf,
}

impl Staging {
    /// Creates `out` and a fresh staging folder in it.
    pub fn new(out: &Path) -> Result<Staging, ReportError> {
        std::fs::create_dir_all(out).map_err(write_err(out))?;
        let dir = out.join(unique(".lbsim-staging"));
        std::fs::create_dir(&dir).map_err(write_err(&dir))?;
        Ok(Staging {
            out: out.to_path_buf(),
            dir,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Syncs `files` to disk, all at once: a sync waits on the disk, not the CPU, so with one
/// thread per file the wait is about that of the slowest file rather than the sum (one
/// after another, the syncs took about a third of the default scenario's report
/// writing). The first failure in the order of `files` is the one returned.
fn sync_all(files: &[PathBuf]) -> Result<(), ReportError> {
    let sync = |f: &PathBuf| {
        File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(write_err(f))
    };
    std::thread::scope(|s| {
        let syncs: Vec<_> = files
            .iter()
            .map(|f| {
                let thread = std::thread::Builder::new().spawn_scoped(s, move || sync(f));
                (f, thread.ok())
            })
            .collect();
        // A file whose thread could not start, or panicked, is synced here instead.
        syncs.into_iter().try_for_each(|(f, thread)| match thread {
            Some(t) => t.join().unwrap_or_else(|_| sync(f)),
            None => sync(f),
        })
    })
}

/// Moves the staged `files` (paths inside `staging.dir`) into the output folder under its
/// lock, removes what the previous run listed in the manifest and this one did not
/// write, and writes the new manifest. Returns the files' final paths.
pub fn publish(staging: Staging, files: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    let out = staging.out.clone();
    let lock_path = out.join(LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(write_err(&lock_path))?;
    lock.lock().map_err(write_err(&lock_path))?;
    // Sync what the reports wrote before it becomes visible.
    sync_all(files)?;
    let names: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&staging.dir).unwrap_or(f).to_path_buf())
        .collect();
    let manifest = out.join(MANIFEST);
    let previous = std::fs::read_to_string(&manifest).unwrap_or_default();
    let mut finals = Vec::with_capacity(files.len());
    for (f, rel) in files.iter().zip(&names) {
        let dest = out.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::rename(f, &dest).map_err(write_err(&dest))?;
        finals.push(dest);
    }
    for old in previous.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let rel = Path::new(old);
        // Only plain relative names this module wrote: never `..` or absolute paths.
        let safe = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if safe && !names.iter().any(|n| n == rel) {
            let _ = std::fs::remove_file(out.join(rel));
        }
    }
    let listing: String = names.iter().map(|n| format!("{}\n", n.display())).collect();
    write_atomic(&manifest, listing.as_bytes())?;
    drop(lock);
    drop(staging);
    Ok(finals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncommitted_file_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        write_atomic(&p, b"old\n").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half").unwrap();
            // Dropped without commit: a crash in the middle.
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "temporary file left behind: {names:?}");
    }

    #[test]
    fn publish_replaces_the_previous_run_and_keeps_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let run = |names: &[&str]| {
            let s = Staging::new(&out).unwrap();
            let files: Vec<PathBuf> = names
                .iter()
                .map(|n| write_atomic(&s.dir.join(n), n.as_bytes()).unwrap())
                .collect();
            publish(s, &files).unwrap()
        };
        run(&["summary.csv", "sweep.csv"]);
        assert!(out.join("sweep.csv").exists());
        run(&["summary.csv"]);
        assert!(!out.join("sweep.csv").exists(), "stale sweep.csv kept");
        assert_eq!(
            std::fs::read_to_string(out.join("notes.txt")).unwrap(),
            "mine"
        );
        let left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("staging") || n.contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn an_unwritable_folder_is_found_before_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(check_writable(&file).is_err());
        assert!(check_writable(&file.join("sub")).is_err());
        check_writable(&dir.path().join("new")).unwrap();
    }
}

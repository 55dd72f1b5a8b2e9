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
//!
//! A file written into a staging folder starts syncing to disk as soon as it is complete,
//! on a thread of its own ([`sync_soon`]; [`AtomicFile::commit`] does it for its files):
//! a sync waits on the disk, not the CPU, so the syncs overlap with the reports still
//! being drawn (and those written during the run with the run), and [`publish`] mostly
//! finds them done. It waits for any still under way, and syncs the files that none was
//! started for, before a file becomes visible.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;

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

    /// Flushes, syncs to disk and renames the file into place. In a staging folder the
    /// sync is started in the background instead ([`sync_soon`]), and [`publish`] waits
    /// for it before the file becomes visible.
    pub fn commit(mut self) -> Result<PathBuf, ReportError> {
        let Some(w) = self.file.take() else {
            return Ok(self.path.clone());
        };
        let file = w.into_inner().map_err(|e| ReportError::Write {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        if let Some(file) = sync_in_background(&self.path, file) {
            file.sync_all().map_err(write_err(&self.path))?;
        }
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
        lock_syncs().insert(dir.clone(), Vec::new());
        Ok(Staging {
            out: out.to_path_buf(),
            dir,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Syncs still under way end on their own (on files removed with the folder).
        lock_syncs().remove(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sync under way: the file and its thread.
type Sync = (PathBuf, JoinHandle<io::Result<()>>);

/// The syncs started in each live staging folder (by folder), for [`publish`] to wait
/// for. A staging folder is registered while its [`Staging`] lives, so that a file
/// written into it is known to be synced by [`publish`] before it becomes visible.
static SYNCS: LazyLock<Mutex<HashMap<PathBuf, Vec<Sync>>>> = LazyLock::new(Mutex::default);

fn lock_syncs() -> MutexGuard<'static, HashMap<PathBuf, Vec<Sync>>> {
    SYNCS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts syncing `file` (open on `path`) on a thread of its own when `path` is in a live
/// staging folder; otherwise, or when no thread could be started, gives the file back.
fn sync_in_background(path: &Path, file: File) -> Option<File> {
    let mut syncs = lock_syncs();
    let Some((_, started)) = syncs.iter_mut().find(|(dir, _)| path.starts_with(dir)) else {
        return Some(file);
    };
    let file = std::sync::Arc::new(file);
    let shared = std::sync::Arc::clone(&file);
    match std::thread::Builder::new().spawn(move || shared.sync_all()) {
        Ok(thread) => {
            started.push((path.to_path_buf(), thread));
            None
        }
        // `file` is the only handle left once the closure that held the other is gone.
        Err(_) => std::sync::Arc::into_inner(file),
    }
}

/// Starts syncing the complete file `path` in the background when it is in a live
/// staging folder, so that [`publish`] finds it synced (for files written without
/// [`AtomicFile`], e.g. plots). Elsewhere it does nothing.
pub fn sync_soon(path: &Path) {
    let in_staging = lock_syncs().keys().any(|dir| path.starts_with(dir));
    if in_staging && let Ok(file) = File::open(path) {
        // Not in the background after all: publish syncs it.
        let _ = sync_in_background(path, file);
    }
}

/// Waits for the syncs started in staging folder `dir`; returns each file's outcome.
fn wait_syncs(dir: &Path) -> HashMap<PathBuf, io::Result<()>> {
    let started = lock_syncs().get_mut(dir).map(std::mem::take);
    started
        .unwrap_or_default()
        .into_iter()
        .map(|(path, thread)| {
            let done = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("sync thread panicked")));
            (path, done)
        })
        .collect()
}

/// Syncs `files` (in staging folder `dir`) to disk: waits for the syncs started as they
/// were written ([`sync_soon`]), and syncs the others all at once. A sync waits on the
/// disk, not the CPU, so with one thread per file the wait is about that of the slowest
/// file rather than the sum (one after another, the syncs took about a third of the
/// default scenario's report writing). The first failure in the order of `files` is the
/// one returned.
fn sync_all(dir: &Path, files: &[PathBuf]) -> Result<(), ReportError> {
    let mut started = wait_syncs(dir);
    let sync = |f: &PathBuf| {
        File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(write_err(f))
    };
    std::thread::scope(|s| {
        let syncs: Vec<_> = files
            .iter()
            .map(|f| match started.remove(f) {
                Some(done) => Pending::Done(done.map_err(write_err(f))),
                None => match std::thread::Builder::new().spawn_scoped(s, move || sync(f)) {
                    Ok(thread) => Pending::Thread(f, thread),
                    Err(_) => Pending::Here(f),
                },
            })
            .collect();
        // A file whose thread could not start, or panicked, is synced here instead.
        syncs.into_iter().try_for_each(|pending| match pending {
            Pending::Done(done) => done,
            Pending::Thread(f, t) => t.join().unwrap_or_else(|_| sync(f)),
            Pending::Here(f) => sync(f),
        })
    })
}

/// A file's sync in [`sync_all`].
enum Pending<'a, 's> {
    /// Done in the background, with this outcome.
    Done(Result<(), ReportError>),
    /// Under way on this thread.
    Thread(
        &'a PathBuf,
        std::thread::ScopedJoinHandle<'s, Result<(), ReportError>>,
    ),
    /// To do here.
    Here(&'a PathBuf),
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
    let names: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&staging.dir).unwrap_or(f).to_path_buf())
        .collect();
    // The new manifest is staged too, and synced with the reports' files (in the
    // background, as the others), before any of them becomes visible; it is moved into
    // place last.
    let listing: String = names.iter().map(|n| format!("{}\n", n.display())).collect();
    let staged_manifest = write_atomic(&staging.dir.join(MANIFEST), listing.as_bytes())?;
    sync_all(
        &staging.dir,
        &[files, std::slice::from_ref(&staged_manifest)].concat(),
    )?;
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
    std::fs::rename(&staged_manifest, &manifest).map_err(write_err(&manifest))?;
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

    /// The files whose syncs were started in staging folder `dir` and not waited for.
    fn started(dir: &Path) -> Option<Vec<PathBuf>> {
        let syncs = lock_syncs();
        Some(syncs.get(dir)?.iter().map(|(f, _)| f.clone()).collect())
    }

    #[test]
    fn staged_files_start_syncing_when_written_and_publish_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = Staging::new(&out).unwrap();
        let csv = write_atomic(&s.dir.join("a.csv"), b"a\n").unwrap();
        let svg = s.dir.join("b.svg");
        std::fs::write(&svg, "<svg/>").unwrap();
        sync_soon(&svg);
        // Outside a staging folder: synced at once, nothing started.
        let elsewhere = dir.path().join("c.csv");
        write_atomic(&elsewhere, b"c\n").unwrap();
        sync_soon(&elsewhere);
        assert_eq!(started(&s.dir), Some(vec![csv.clone(), svg.clone()]));
        let staged = s.dir.clone();
        let finals = publish(s, &[csv, svg]).unwrap();
        assert_eq!(finals, [out.join("a.csv"), out.join("b.svg")]);
        assert_eq!(
            std::fs::read_to_string(out.join(MANIFEST)).unwrap(),
            "a.csv\nb.svg\n"
        );
        // Waited for, and the folder is no longer staging.
        assert_eq!(started(&staged), None);
        assert!(!staged.exists());
    }

    #[test]
    fn a_failed_background_sync_fails_the_publish_and_shows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = Staging::new(&out).unwrap();
        let a = write_atomic(&s.dir.join("a.csv"), b"a\n").unwrap();
        let b = s.dir.join("b.csv");
        std::fs::write(&b, "b\n").unwrap();
        // b's sync, started in the background, fails (a full disk).
        let failing = std::thread::spawn(|| Err(io::Error::other("no space left")));
        lock_syncs()
            .get_mut(&s.dir)
            .unwrap()
            .push((b.clone(), failing));
        let err = publish(s, &[a, b.clone()]).unwrap_err();
        assert!(
            matches!(&err, ReportError::Write { path, .. } if *path == b),
            "{err}"
        );
        let shown: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != LOCK)
            .collect();
        assert!(shown.is_empty(), "{shown:?}");
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

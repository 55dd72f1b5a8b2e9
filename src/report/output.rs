//! Output folders that are never half-written.
//!
//! - [`AtomicFile`]: a file is written beside its destination under a temporary name,
//!   flushed, synced, and renamed over it: a reader (or a crash) sees the old file or the
//!   new one, never a truncated one. Any write error (a full disk, a file-size limit)
//!   surfaces as an error, never as a short file.
//! - [`Staging`] and [`publish`]: a run's reports are written into a staging folder inside
//!   `--out` and moved into place together, under an exclusive lock on
//!   `--out/.lbsim.lock`, so two runs into one folder cannot interleave. The files the
//!   previous run wrote that this one did not (a `sweep.csv` of another scenario, SVGs
//!   after `--png`) are removed: they are listed in `--out/.lbsim-files`, so files lbsim
//!   did not write are never touched.
//! - [`Folder`]: where a report writes its files, an ordinary folder or a staging folder
//!   ([`Staging::folder`]).
//! - [`check_writable`]: run before any work, so an unwritable `--out` fails in a second,
//!   not after the whole simulation.
//!
//! A file written through a staging folder's [`Folder`] starts syncing to disk as soon as
//! it is complete, on a thread of its own (the staging folder keeps the threads): a sync
//! waits on the disk, not the CPU, so the syncs overlap with the reports still being
//! drawn (and those written during the run with the run), and [`publish`] mostly finds
//! them done. It waits for any still under way, and syncs the files that none was started
//! for, before a file becomes visible.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
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
pub struct AtomicFile<'a> {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    /// The staging folder's syncs, when the file is written into one ([`Folder::create`]).
    syncs: Option<&'a Syncs>,
}

impl AtomicFile<'static> {
    /// Starts writing `path` (its folder is created); [`AtomicFile::commit`] syncs it.
    pub fn create(path: &Path) -> Result<AtomicFile<'static>, ReportError> {
        AtomicFile::open(path, None)
    }
}

impl<'a> AtomicFile<'a> {
    fn open(path: &Path, syncs: Option<&'a Syncs>) -> Result<AtomicFile<'a>, ReportError> {
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
            syncs,
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs to disk and renames the file into place. In a staging folder the
    /// sync is started in the background instead, and [`publish`] waits for it before
    /// the file becomes visible.
    pub fn commit(mut self) -> Result<PathBuf, ReportError> {
        let Some(w) = self.file.take() else {
            return Ok(self.path.clone());
        };
        let file = w.into_inner().map_err(|e| ReportError::Write {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        match self.syncs {
            Some(syncs) => syncs.start(&self.path, file),
            None => file.sync_all().map_err(write_err(&self.path))?,
        }
        std::fs::rename(&self.tmp, &self.path).map_err(write_err(&self.path))?;
        Ok(self.path.clone())
    }
}

impl Write for AtomicFile<'_> {
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

impl Drop for AtomicFile<'_> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically (and synced).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    write_to(AtomicFile::create(path)?, bytes)
}

fn write_to(mut f: AtomicFile<'_>, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    f.write_all(bytes).map_err(write_err(&f.path))?;
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

/// A folder that reports write their files into ([`crate::report::Report::write`]). Each
/// file is synced to disk once complete: in an ordinary folder ([`Folder::new`]) before
/// it is renamed into place; in a staging folder ([`Staging::folder`]) on a thread of its
/// own, which [`publish`] waits for.
#[derive(Clone, Debug)]
pub struct Folder<'a> {
    path: PathBuf,
    /// The staging folder's syncs; `None` for an ordinary folder.
    syncs: Option<&'a Syncs>,
}

impl Folder<'static> {
    /// The ordinary folder `path` (created when a file is written into it).
    pub fn new(path: &Path) -> Folder<'static> {
        Folder {
            path: path.to_path_buf(),
            syncs: None,
        }
    }
}

impl<'a> Folder<'a> {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in it.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The folder `name` inside it (of the same staging folder, when it is in one).
    pub fn sub(&self, name: impl AsRef<Path>) -> Folder<'a> {
        Folder {
            path: self.join(name),
            syncs: self.syncs,
        }
    }

    /// Starts writing the file `name` in it, atomically.
    pub fn create(&self, name: impl AsRef<Path>) -> Result<AtomicFile<'a>, ReportError> {
        AtomicFile::open(&self.join(name), self.syncs)
    }

    /// Writes `bytes` to the file `name` in it, atomically; returns its path.
    pub fn write(&self, name: impl AsRef<Path>, bytes: &[u8]) -> Result<PathBuf, ReportError> {
        write_to(self.create(name)?, bytes)
    }

    /// Has `write` write the file `name` in it (given its path), for files written
    /// without [`AtomicFile`] (plots); once written, in a staging folder, starts its sync.
    /// Returns its path.
    pub fn write_with(
        &self,
        name: impl AsRef<Path>,
        write: impl FnOnce(&Path) -> Result<(), ReportError>,
    ) -> Result<PathBuf, ReportError> {
        let path = self.join(name);
        write(&path)?;
        if let Some(syncs) = self.syncs {
            syncs.start_path(&path);
        }
        Ok(path)
    }
}

/// A staging folder inside an output folder, and the syncs of the files written into it
/// ([`Staging::folder`]); removed when dropped.
#[derive(Debug)]
pub struct Staging {
    /// The output folder.
    pub out: PathBuf,
    /// Where reports are written first.
    pub dir: PathBuf,
    syncs: Syncs,
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
            syncs: Syncs::default(),
        })
    }

    /// The staging folder, to write into: each file starts syncing as soon as it is
    /// complete, and [`publish`] waits for the syncs. (A file written into
    /// [`Staging::dir`] otherwise is synced by [`publish`].)
    pub fn folder(&self) -> Folder<'_> {
        Folder {
            path: self.dir.clone(),
            syncs: Some(&self.syncs),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Syncs still under way end on their own (on files removed with the folder).
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The syncs started in one staging folder, for [`publish`] to wait for.
#[derive(Debug, Default)]
struct Syncs(Mutex<Vec<Started>>);

/// A sync under way: the file and the thread syncing it.
type Started = (PathBuf, JoinHandle<io::Result<()>>);

impl Syncs {
    fn lock(&self) -> MutexGuard<'_, Vec<Started>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts syncing `file` (open on `path`) on a thread of its own. When no thread can
    /// be started, the file is left to [`Syncs::sync_all`], which syncs it by name.
    fn start(&self, path: &Path, file: File) {
        if let Ok(thread) = std::thread::Builder::new().spawn(move || file.sync_all()) {
            self.lock().push((path.to_path_buf(), thread));
        }
    }

    /// Starts syncing the complete file `path`; one that cannot be opened is left to
    /// [`Syncs::sync_all`], which reports the error.
    fn start_path(&self, path: &Path) {
        if let Ok(file) = File::open(path) {
            self.start(path, file);
        }
    }

    /// Waits for every sync started so far; returns each file's outcome.
    fn wait(&self) -> HashMap<PathBuf, io::Result<()>> {
        let started = std::mem::take(&mut *self.lock());
        started
            .into_iter()
            .map(|(path, thread)| {
                let done = thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("sync thread panicked")));
                (path, done)
            })
            .collect()
    }

    /// Syncs `files` to disk: starts the syncs of those none was started for, all at once,
    /// then waits for every sync. A sync waits on the disk, not the CPU, so with one
    /// thread per file the wait is about that of the slowest file rather than the sum
    /// (one after another, the syncs took about a third of the default scenario's report
    /// writing). A file whose sync could not be started is synced here. The first failure
    /// in the order of `files` is the one returned.
    fn sync_all(&self, files: &[PathBuf]) -> Result<(), ReportError> {
        let started: HashSet<PathBuf> = self.lock().iter().map(|(f, _)| f.clone()).collect();
        for f in files.iter().filter(|f| !started.contains(*f)) {
            self.start_path(f);
        }
        let mut done = self.wait();
        files.iter().try_for_each(|f| {
            let outcome = done
                .remove(f)
                .unwrap_or_else(|| File::open(f).and_then(|h| h.sync_all()));
            outcome.map_err(write_err(f))
        })
    }
}

/// Moves the staged `files` (paths inside `staging.dir`) into the output folder under its
/// lock, once every one is synced, removes what the previous run listed in the manifest
/// and this one did not write, and writes the new manifest. Returns the files' final
/// paths.
pub fn publish(staging: Staging, files: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    let out = staging.out.clone();
    let lock = lock_output(&out)?;
    let names: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&staging.dir).unwrap_or(f).to_path_buf())
        .collect();
    // The new manifest is staged too, and synced with the reports' files, before any of
    // them becomes visible; it is moved into place last.
    let listing: String = names.iter().map(|n| format!("{}\n", n.display())).collect();
    let staged_manifest = staging.folder().write(MANIFEST, listing.as_bytes())?;
    staging
        .syncs
        .sync_all(&[files, std::slice::from_ref(&staged_manifest)].concat())?;
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
    remove_left_over(&out, &previous, &names);
    std::fs::rename(&staged_manifest, &manifest).map_err(write_err(&manifest))?;
    drop(lock);
    drop(staging);
    Ok(finals)
}

/// Takes the exclusive lock of output folder `out` ([`LOCK`]), held until the file is
/// dropped.
fn lock_output(out: &Path) -> Result<File, ReportError> {
    let path = out.join(LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(write_err(&path))?;
    lock.lock().map_err(write_err(&path))?;
    Ok(lock)
}

/// Removes from `out` the files of the `previous` manifest that are not in `names`:
/// those the previous run wrote and this one did not.
fn remove_left_over(out: &Path, previous: &str, names: &[PathBuf]) {
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
                .map(|n| s.folder().write(n, n.as_bytes()).unwrap())
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

    /// The files whose syncs were started in `s` and not waited for.
    fn started(s: &Staging) -> Vec<PathBuf> {
        s.syncs.lock().iter().map(|(f, _)| f.clone()).collect()
    }

    /// The names in `out` but the lock.
    fn shown(out: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != LOCK)
            .collect()
    }

    #[test]
    fn staged_files_start_syncing_when_written_and_publish_waits_for_them() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = Staging::new(&out).unwrap();
        let csv = s.folder().write("a.csv", b"a\n").unwrap();
        let svg = s
            .folder()
            .write_with("b.svg", |p| {
                std::fs::write(p, "<svg/>").map_err(write_err(p))
            })
            .unwrap();
        let sim = s.folder().sub("sim").write("c.csv", b"c\n").unwrap();
        // Into the same folder, but not through the staging folder's handle: synced
        // when committed, nothing started.
        let other = Folder::new(&s.dir).write("d.csv", b"d\n").unwrap();
        assert_eq!(started(&s), [csv.clone(), svg.clone(), sim.clone()]);
        // A slow sync: publish waits for it before it moves any file in.
        let (ended, early) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let slow = {
            let (ended, early, out) = (ended.clone(), early.clone(), out.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let moved = out.join("a.csv").exists() || out.join(MANIFEST).exists();
                early.store(moved, Ordering::SeqCst);
                ended.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        s.syncs.lock().push((other.clone(), slow));
        let staged = s.dir.clone();
        let finals = publish(s, &[csv, svg, sim, other]).unwrap();
        assert!(
            ended.load(Ordering::SeqCst),
            "publish did not wait for a sync"
        );
        assert!(
            !early.load(Ordering::SeqCst),
            "a file was shown before its sync ended"
        );
        assert_eq!(
            finals,
            ["a.csv", "b.svg", "sim/c.csv", "d.csv"].map(|f| out.join(f))
        );
        assert_eq!(
            std::fs::read_to_string(out.join(MANIFEST)).unwrap(),
            "a.csv\nb.svg\nsim/c.csv\nd.csv\n"
        );
        assert!(!staged.exists());
    }

    #[test]
    fn a_failed_background_sync_fails_the_publish_and_shows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = Staging::new(&out).unwrap();
        let a = s.folder().write("a.csv", b"a\n").unwrap();
        let b = s.dir.join("b.csv");
        std::fs::write(&b, "b\n").unwrap();
        // b's sync, started in the background, fails (a full disk).
        let failing = std::thread::spawn(|| Err(io::Error::other("no space left")));
        s.syncs.lock().push((b.clone(), failing));
        let staged = s.dir.clone();
        let err = publish(s, &[a, b.clone()]).unwrap_err();
        assert!(
            matches!(&err, ReportError::Write { path, .. } if *path == b),
            "{err}"
        );
        assert!(shown(&out).is_empty(), "{:?}", shown(&out));
        assert!(!staged.exists());
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

//! Compaction: the database copied into a fresh one beside it and swapped in, while the
//! projector goes on applying.
//!
//! sled's log keeps the pages each write replaced until a segment is mostly dead, so the
//! projector's database (which rewrites the same states with every part) grows to several
//! times its entries: after 100,000 statements of the ingest workload 627 MB on disk for
//! 41 MB of keys and values, 180 MB as a fresh copy (BENCHMARKS.md, the eleventh round), in
//! sled's default segments of 512 KiB. A database made in the 16 MiB segments of
//! [`sledconf`] stays near what a copy takes (a copy is made in 512 KiB segments, which
//! suit it best; the thirty-first round), so one started by itself is swapped in only when
//! [`WORTH`] it.
//!
//! A copy starts between two batches. A thread copies every entry while the projector goes
//! on applying; a sled subscriber on the whole database notes every key written meanwhile,
//! and the thread copies those again in rounds (each the keys written during the one before)
//! until few are left. Then the projector, between two batches (nothing is being written),
//! copies the last round's keys, notes the size in the copy, and swaps it in as a rebuild
//! does ([`crate::rebuild::swap_in`]). The pause is the last round's copy, not the whole
//! database's. A copy starts when asked for (`leerspoor project --compact`) or by itself
//! when due and quiet ([`QUIET`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::projection::{Projection, ProjectionError};
use crate::rebuild::Current;

/// A copy is due when the database takes this many times what it took after its last copy
/// (or [`FLOOR_BYTES`], whichever is more) and the projector has been quiet for [`QUIET`].
pub const FACTOR: u64 = 2;

/// Below this many bytes on disk no copy is due.
pub const FLOOR_BYTES: u64 = 64 * 1024 * 1024;

/// How long no `LRS_STORED` message came before a due copy starts by itself. Under a
/// sustained ingest a copy takes CPU the projector needs (a copy of 1.2M entries took 32 s
/// beside it, at 200,000 statements; BENCHMARKS.md) and the states rewritten meanwhile make
/// the copy itself larger, so it waits for a quiet moment (a night); `leerspoor project
/// --compact` starts one at once.
pub const QUIET: Duration = Duration::from_secs(30);

/// Entries per sled batch in the copy.
const BATCH: usize = 10_000;

/// A copy started by itself is swapped in only when it takes at most this share of what the
/// database takes (nine tenths): in sled's large segments ([`sledconf::SEGMENT_BYTES`]) a
/// database the ingest left takes about what a fresh copy does (BENCHMARKS.md, the
/// thirty-first round), and a copy that gives back little is not worth its swap (nor the
/// small segments it is made in, [`sledconf::COPY_SEGMENT_BYTES`]). A copy asked for is
/// swapped in unless it takes more than the database in use and no erased statement's bytes
/// wait in that database's old pages ([`Projection::nothing_erased`]): a copy is how those
/// leave them.
pub const WORTH: (u64, u64) = (9, 10);

/// A round that found at most this many keys written says the copy is ready for the pause.
const PAUSE_KEYS: usize = 20_000;

/// Rounds after which the copy is ready whatever is left (a projector writing faster than a
/// round copies would never get under [`PAUSE_KEYS`]).
const MAX_ROUNDS: u64 = 6;

/// What a compaction did.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CompactReport {
    /// Entries copied by the thread.
    pub entries: u64,
    /// Rounds that copied again, beside the applying, the keys written during the one
    /// before (the first round: the whole copy).
    pub rounds: u64,
    /// Keys written during the thread's last round, copied in the pause (which also waits
    /// for that round).
    pub written_in_pause: u64,
    pub bytes_before: u64,
    /// What the copy took (when kept back, what it would have taken).
    pub bytes_after: u64,
    /// How long the copy took, and the pause at its end.
    pub seconds: f64,
    pub pause_seconds: f64,
    /// The database in use after it.
    pub database: String,
    /// A copy started by itself that would not have given back enough ([`WORTH`]), or one
    /// asked for that took more than the database in use, which held no erased statement's
    /// bytes: removed, the database in use stays (and is due again once it takes twice as
    /// much).
    #[serde(default)]
    pub kept_back: bool,
    /// Whether no erased statement's bytes were in the database in use, before or while the
    /// copy was made ([`Projection::nothing_erased`]).
    #[serde(default)]
    pub nothing_erased: bool,
}

impl CompactReport {
    /// The sizes, as `leerspoor compact` and `leerspoor project --compact` say them: before
    /// and after, or the database in use and the copy that was removed.
    pub fn sizes(&self) -> String {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        if self.kept_back {
            format!(
                "{:.0} MB on disk, kept; its copy took {:.0} MB and was removed",
                mb(self.bytes_before),
                mb(self.bytes_after)
            )
        } else {
            format!(
                "{:.0} MB -> {:.0} MB on disk",
                mb(self.bytes_before),
                mb(self.bytes_after)
            )
        }
    }

    /// Why a copy that took more than the database in use was kept, or why that database
    /// stayed; empty otherwise. In use, sled's segment cleaner keeps the database in its large
    /// segments below what a copy takes (BENCHMARKS.md, the thirty-third round).
    pub fn why(&self) -> &'static str {
        let larger = self.bytes_after > self.bytes_before;
        match (self.kept_back, self.nothing_erased) {
            (false, _) if larger => {
                "; larger than before, kept all the same: an erasure since the last copy left \
                 its bytes in sled's old pages, and only a copy takes them out"
            }
            (true, true) if larger => {
                "; sled's segment cleaner keeps the database in use smaller than a copy, and \
                 no erased statement's bytes were in its old pages"
            }
            (true, _) => "; the copy would not have given back a tenth",
            (false, _) => "",
        }
    }
}

/// Whether the database is due a copy: `size` bytes on disk against `copied` after the last.
pub fn due(size: u64, copied: u64) -> bool {
    size > FACTOR.saturating_mul(copied.max(FLOOR_BYTES))
}

/// Compacts the database of a stopped projector in `data_dir` (`leerspoor compact`): the same
/// copy and swap, with nothing applied meanwhile, so no round follows the first. `None` when
/// the folder holds no projector database. Waits up to `lock_wait` for the database's lock
/// (sled's threads hold it for a moment after a projector closed it).
pub fn compact_stopped(
    data_dir: &Path,
    cache_bytes: u64,
    lock_wait: Duration,
) -> Result<Option<CompactReport>, ProjectionError> {
    let active = crate::rebuild::active_path(data_dir);
    if !active.is_dir() {
        return Ok(None);
    }
    crate::rebuild::remove_unfinished(data_dir, &active);
    let tree = Projection::open_tree_when_free(&active, cache_bytes, lock_wait)?;
    let projection = Projection::from_tree(tree, &active, cache_bytes)?;
    let current = Current::new(projection);
    let copying = Copying::start(&current.get(), data_dir)?;
    copying.finish(data_dir, &current).map(Some)
}

/// A copy under way.
pub struct Copying {
    name: String,
    path: PathBuf,
    from: sled::Db,
    started: Instant,
    bytes_before: u64,
    signals: Arc<Signals>,
    stop_watching: Arc<AtomicBool>,
    copier: Option<JoinHandle<Result<Copied, ProjectionError>>>,
    watcher: Option<JoinHandle<()>>,
    /// Keys written since the copy (or its last round) read them.
    written: Written,
    /// Started by itself, not asked for: swapped in only when it takes at most this share
    /// of the database in use ([`WORTH`]).
    only_below: Option<(u64, u64)>,
    /// Whether no erased statement's bytes were in the database when the copy started.
    nothing_erased: bool,
    /// The parts that had erased something when the copy started
    /// ([`Projection::erasures`]): more at the pause, and the copy itself read bytes that
    /// went.
    erasures: u64,
}

/// Between the projector and its copy thread.
#[derive(Default)]
struct Signals {
    /// Set by the projector: stop now (a copy given up).
    cancel: AtomicBool,
    /// Set by the projector: stop after this round (the pause has begun).
    take_over: AtomicBool,
    /// Set by the thread: few enough keys are left for the pause. It goes on copying rounds
    /// until the projector takes over, so that what the pause copies is what was written
    /// during one short round, not during the projector's batch until then.
    ready: AtomicBool,
}

/// The copy thread's result: the copy, the entries it read, its rounds.
type Copied = (sled::Db, u64, u64);

/// Keys written while a copy runs, noted by its watcher.
type Written = Arc<std::sync::Mutex<HashSet<sled::IVec>>>;

fn lock(written: &Written) -> std::sync::MutexGuard<'_, HashSet<sled::IVec>> {
    written.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Copying {
    /// Starts copying `projection` into a fresh database in `data_dir`. Call it between two
    /// batches: the subscriber must see every write after the copy's first read.
    pub fn start(projection: &Projection, data_dir: &Path) -> Result<Copying, ProjectionError> {
        let name = format!("projector-{}.sled", crate::rebuild::unique_suffix());
        let path = data_dir.join(&name);
        let to = Projection::open_copy_tree(&path, projection.cache_bytes())?;
        let from = projection.db().clone();
        let signals = Arc::new(Signals::default());
        let stop_watching = Arc::new(AtomicBool::new(false));
        let (nothing_erased, erasures) = (projection.nothing_erased()?, projection.erasures()?);
        let subscriber = from.watch_prefix(Vec::<u8>::new());
        let written: Written = Arc::default();
        let (stop, noting) = (stop_watching.clone(), written.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|err| io_error(&err))?;
        let watcher = std::thread::Builder::new()
            .name("projector-compact-watch".into())
            .spawn(move || runtime.block_on(watch(subscriber, &noting, &stop)))
            .map_err(|err| io_error(&err))?;
        let (source, signalled, rewritten) = (from.clone(), signals.clone(), written.clone());
        let (copy_path, cache_bytes) = (path.clone(), projection.cache_bytes());
        let copier = std::thread::Builder::new()
            .name("projector-compact".into())
            .spawn(move || {
                let entries = copy_entries(&source, &to, &signalled.cancel)?;
                let to = if signalled.cancel.load(Ordering::Acquire) {
                    to
                } else {
                    reopened(to, &copy_path, cache_bytes)?
                };
                let rounds = copy_written(&source, &to, &rewritten, &signalled)?;
                Ok((to, entries, rounds))
            })
            .map_err(|err| io_error(&err))?;
        Ok(Copying {
            name,
            path,
            bytes_before: projection.size_on_disk().unwrap_or(0),
            from,
            started: Instant::now(),
            signals,
            stop_watching,
            copier: Some(copier),
            watcher: Some(watcher),
            written,
            only_below: None,
            nothing_erased,
            erasures,
        })
    }

    /// A copy the projector started by itself: [`Copying::finish`] keeps the database in use
    /// when the copy would take more than `share` of it (numerator, denominator; [`WORTH`]).
    pub fn swapped_in_only_below(mut self, share: (u64, u64)) -> Copying {
        self.only_below = Some(share);
        self
    }

    /// Whether the thread has copied every entry (then [`Copying::finish`] pauses briefly).
    pub fn is_copied(&self) -> bool {
        self.signals.ready.load(Ordering::Acquire)
            || self.copier.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Copies what was written meanwhile and swaps the copy in. Blocking; call it between
    /// two batches, with nothing applied until it returns.
    pub fn finish(
        mut self,
        data_dir: &Path,
        current: &Current,
    ) -> Result<CompactReport, ProjectionError> {
        let paused = Instant::now();
        self.signals.take_over.store(true, Ordering::Release);
        let (to, entries, rounds) = self
            .copier
            .take()
            .map_or_else(|| Err(gone()), |copier| copier.join().map_err(|_| gone()))??;
        self.stop_watcher();
        let keys = std::mem::take(&mut *lock(&self.written));
        let written_in_pause = keys.len() as u64;
        copy_keys(&self.from, &to, keys)?;
        to.flush()?;
        let bytes_after = to.size_on_disk()?;
        let in_use = self.from.size_on_disk()?;
        let too_large = |(part, whole): (u64, u64)| {
            bytes_after.saturating_mul(whole) > in_use.saturating_mul(part)
        };
        // Nothing erased while it was made: the copy holds no erased bytes (and with nothing
        // erased before, neither does the database in use).
        let clean = current.get().erasures()? == self.erasures;
        let nothing_erased = self.nothing_erased && clean;
        let keep_in_use = match self.only_below {
            Some(share) => too_large(share),
            None => nothing_erased && too_large((1, 1)),
        };
        if keep_in_use {
            // Not worth it, or larger with nothing to scrub: the copy goes (with `self`), and
            // the next is due at twice this.
            drop(to);
            current.get().set_copied(in_use)?;
            return Ok(CompactReport {
                entries,
                rounds,
                written_in_pause,
                bytes_before: in_use,
                bytes_after,
                seconds: self.started.elapsed().as_secs_f64(),
                pause_seconds: paused.elapsed().as_secs_f64(),
                database: current
                    .get()
                    .path()
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kept_back: true,
                nothing_erased,
            });
        }
        let fresh = Projection::from_tree(to, &self.path, current.get().cache_bytes())?;
        fresh.set_copied(bytes_after)?;
        if clean {
            // Its entries were read after every erasure: its pages hold none of their bytes.
            fresh.mark_nothing_erased()?;
        }
        fresh.flush()?;
        crate::rebuild::swap_in(data_dir, current, &self.name, Arc::new(fresh))
            .map_err(|err| io_error(&err))?;
        self.path = PathBuf::new();
        Ok(CompactReport {
            entries,
            rounds,
            written_in_pause,
            bytes_before: self.bytes_before,
            bytes_after,
            seconds: self.started.elapsed().as_secs_f64(),
            pause_seconds: paused.elapsed().as_secs_f64(),
            database: std::mem::take(&mut self.name),
            kept_back: false,
            nothing_erased,
        })
    }

    /// Stops the watcher once it saw every write made so far.
    fn stop_watcher(&mut self) {
        self.stop_watching.store(true, Ordering::Release);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

impl Drop for Copying {
    /// Abandons a copy not finished (a rebuild, a shutdown): its threads stop within a batch
    /// and its directory goes, so that the database it read is closed again.
    fn drop(&mut self) {
        self.signals.cancel.store(true, Ordering::Release);
        if let Some(copier) = self.copier.take() {
            let _ = copier.join();
        }
        self.stop_watcher();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How long the watcher waits for a write before it looks whether it is told to stop.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// Notes the key of every write `subscriber` reports until `stop` is set and a
/// [`WATCH_TICK`] passed without one (once told to stop, the writer is paused: every write
/// it made is in the channel, so the first quiet moment means all were seen), or until the
/// database closes.
///
/// Through sled's `Future` for its subscriber, not `Subscriber::next_timeout`: a write that
/// changes nothing (a key set to the value it holds, a removal of a key not there, which
/// the projector's parts make) reaches a subscriber as an empty event, which the future
/// skips but `next_timeout` (sled 0.34.7) reports as `Disconnected`, and then again at every
/// call: the watcher stopped there, and the copy missed every key written after it.
async fn watch(mut subscriber: sled::Subscriber, noting: &Written, stop: &AtomicBool) {
    loop {
        match tokio::time::timeout(WATCH_TICK, &mut subscriber).await {
            Ok(Some(event)) => {
                lock(noting).insert(event.key().clone());
            }
            // The database closed.
            Ok(None) => return,
            Err(_) => {
                if stop.load(Ordering::Acquire) {
                    return;
                }
            }
        }
    }
}

/// Copies every entry of `from` into `to` in batches, then flushes `to`; stops early when
/// `cancel` is set. Returns the entries copied.
fn copy_entries(
    from: &sled::Db,
    to: &sled::Db,
    cancel: &AtomicBool,
) -> Result<u64, ProjectionError> {
    let mut batch = sled::Batch::default();
    let (mut in_batch, mut entries) = (0, 0);
    for item in from.iter() {
        let (key, value) = item?;
        batch.insert(key, value);
        in_batch += 1;
        entries += 1;
        if in_batch == BATCH {
            if cancel.load(Ordering::Acquire) {
                return Ok(entries);
            }
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    to.apply_batch(batch)?;
    to.flush()?;
    Ok(entries)
}

/// How long [`reopened`] waits for the copy's lock (sled's threads hold it for a moment after
/// the last handle went).
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// The copy, written with sled's flusher every [`sledconf::COPY_CLEANING_MS`], opened again
/// as the projector opens a database after a restart: without the flusher thread, cleaned as
/// it is written ([`sledconf::cleaned_unless_reopened`]). With the thread, a copy swapped in
/// after an erasure was rewritten at ~2 MB/s while the node was idle (BENCHMARKS.md, the
/// forty-fifth round). Takes a few seconds at a million statements, beside the applying.
fn reopened(copy: sled::Db, path: &Path, cache_bytes: u64) -> Result<sled::Db, ProjectionError> {
    copy.flush()?;
    drop(copy);
    Projection::open_tree_when_free(path, cache_bytes, REOPEN_WAIT)
}

/// Rounds beside the applying: the keys written during the round before, copied again, until
/// the projector takes over (or the copy is given up); ready once a round found few enough
/// for the pause (or after [`MAX_ROUNDS`]). Returns the rounds, the first (the whole copy)
/// included.
fn copy_written(
    from: &sled::Db,
    to: &sled::Db,
    written: &Written,
    signals: &Signals,
) -> Result<u64, ProjectionError> {
    let mut rounds = 1;
    while !signals.cancel.load(Ordering::Acquire) && !signals.take_over.load(Ordering::Acquire) {
        let keys = std::mem::take(&mut *lock(written));
        if keys.len() <= PAUSE_KEYS || rounds >= MAX_ROUNDS {
            signals.ready.store(true, Ordering::Release);
        }
        if keys.is_empty() {
            // Nothing written since the last round: the projector is between batches or
            // idle, and takes over soon.
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        copy_keys(from, to, keys)?;
        rounds += 1;
    }
    Ok(rounds)
}

/// Copies `keys`' current values from `from` into `to` (a removal where there is none), in
/// key order.
fn copy_keys(
    from: &sled::Db,
    to: &sled::Db,
    keys: HashSet<sled::IVec>,
) -> Result<(), ProjectionError> {
    let mut keys: Vec<sled::IVec> = keys.into_iter().collect();
    keys.sort_unstable();
    for chunk in keys.chunks(BATCH) {
        let mut batch = sled::Batch::default();
        for key in chunk {
            match from.get(key)? {
                Some(value) => batch.insert(key.clone(), value),
                None => batch.remove(key.clone()),
            }
        }
        to.apply_batch(batch)?;
    }
    Ok(())
}

fn gone() -> ProjectionError {
    ProjectionError::Compaction("the compaction's copy thread stopped without a result".into())
}

fn io_error(err: &dyn std::fmt::Display) -> ProjectionError {
    ProjectionError::Compaction(format!("compaction: {err}"))
}

/// The projector's compactions: when one is due (checked between batches, every
/// [`CHECK_EVERY`] at most) or asked for, a [`Copying`] runs beside the applying.
#[derive(Default)]
pub struct Compaction {
    copying: Option<Copying>,
    asked: bool,
    /// Whoever asked (`leerspoor project --compact`), answered when the copy is in use.
    waiting: Vec<async_nats::Subject>,
    checked: Option<Instant>,
}

/// How often the database's size is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// What a step between two batches did.
pub enum Step {
    Nothing,
    Started {
        bytes: u64,
    },
    Done(
        Result<CompactReport, ProjectionError>,
        Vec<async_nats::Subject>,
    ),
}

impl Compaction {
    /// Someone asked for a copy now; `reply` is answered when it is in use.
    pub fn ask(&mut self, reply: Option<async_nats::Subject>) {
        // A copy under way that started by itself now answers the asker: swapped in whatever
        // it gives back.
        if let Some(copying) = &mut self.copying {
            copying.only_below = None;
        }
        self.asked = true;
        self.waiting.extend(reply);
    }

    /// Gives up a copy under way (a rebuild replaces the database it copies). Returns whoever
    /// waited for it.
    pub fn abandon(&mut self) -> Vec<async_nats::Subject> {
        self.copying = None;
        self.asked = false;
        std::mem::take(&mut self.waiting)
    }

    /// Between two batches: finishes a copy whose thread is done, or starts one when asked
    /// for, or due after `quiet_for` without a message.
    /// Whether a copy is under way (its pause needs nothing waiting to be written).
    pub fn is_copying(&self) -> bool {
        self.copying.is_some()
    }

    pub async fn step(&mut self, current: &Current, data_dir: &Path, quiet_for: Duration) -> Step {
        if let Some(copying) = self.copying.take_if(|copying| copying.is_copied()) {
            let (current, data_dir) = (current.clone(), data_dir.to_owned());
            let done = tokio::task::spawn_blocking(move || copying.finish(&data_dir, &current))
                .await
                .unwrap_or_else(|_| Err(gone()));
            self.checked = Some(Instant::now());
            return Step::Done(done, std::mem::take(&mut self.waiting));
        }
        if self.copying.is_some() {
            return Step::Nothing;
        }
        let look = self.asked
            || (quiet_for >= QUIET && self.checked.is_none_or(|at| at.elapsed() >= CHECK_EVERY));
        if !look {
            return Step::Nothing;
        }
        self.checked = Some(Instant::now());
        let projection = current.get();
        let size = projection.size_on_disk().unwrap_or(0);
        if !self.asked && !due(size, projection.copied().unwrap_or(0)) {
            return Step::Nothing;
        }
        let by_itself = !std::mem::take(&mut self.asked);
        let data_dir = data_dir.to_owned();
        let started = tokio::task::spawn_blocking(move || {
            Copying::start(&projection, &data_dir).map(|copying| match by_itself {
                true => copying.swapped_in_only_below(WORTH),
                false => copying,
            })
        })
        .await;
        match started {
            Ok(Ok(copying)) => {
                self.copying = Some(copying);
                Step::Started { bytes: size }
            }
            Ok(Err(err)) => Step::Done(Err(err), std::mem::take(&mut self.waiting)),
            Err(_) => Step::Done(Err(gone()), std::mem::take(&mut self.waiting)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More keys written than the pause takes: a round beside the applying copies them
    /// (values where there are, removals where not); the thread says it is ready once a
    /// round finds few, and stops when the projector takes over.
    #[test]
    fn a_round_copies_what_was_written_and_removes_what_went() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = |name: &str| {
            sled::Config::new()
                .path(dir.path().join(name))
                .open()
                .expect("open")
        };
        let (from, to) = (open("from"), open("to"));
        let written: Written = Arc::default();
        for n in 0..PAUSE_KEYS as u32 + 10 {
            let key = sled::IVec::from(&n.to_be_bytes());
            // Every third key went from the database after the copy read it.
            to.insert(&key, b"old".as_slice()).expect("insert");
            if n % 3 != 0 {
                from.insert(&key, b"new".as_slice()).expect("insert");
            }
            lock(&written).insert(key);
        }
        let signals = Signals::default();
        let rounds = std::thread::scope(|scope| {
            let copier = scope.spawn(|| copy_written(&from, &to, &written, &signals));
            // The projector takes over once the thread says it is ready.
            while !signals.ready.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            signals.take_over.store(true, Ordering::Release);
            copier.join().expect("thread").expect("copy")
        });
        assert!(rounds >= 2, "{rounds}");
        assert!(lock(&written).is_empty());
        let copied: Vec<_> = to.iter().map(|item| item.expect("read")).collect();
        let expected: Vec<_> = from.iter().map(|item| item.expect("read")).collect();
        assert_eq!(copied, expected);
    }

    /// What a part that erased something leaves: the copy asked for is then swapped in
    /// whatever it takes (the projector's tests erase through statements).
    fn erased_once(projection: &Projection) {
        projection
            .db()
            .insert(crate::projection::ERASURES, &1u64.to_be_bytes())
            .expect("insert");
        assert!(!projection.nothing_erased().expect("read"));
    }

    /// A write that changes nothing (the projector's parts set order and presence keys that
    /// are there already) reaches the watcher as an empty event: the keys written after it
    /// still reach the copy.
    #[test]
    fn a_write_that_changes_nothing_does_not_stop_the_watcher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = crate::rebuild::active_path(dir.path());
        let current = Current::new(Projection::open(&first).expect("open"));
        let db = current.get().db().clone();
        db.insert(b"zkept", b"same".as_slice()).expect("insert");
        erased_once(&current.get());
        let copying = Copying::start(&current.get(), dir.path()).expect("start");
        // Every entry copied: what follows reaches the copy only through the watcher.
        while !copying.is_copied() {
            std::thread::yield_now();
        }
        db.insert(b"zkept", b"same".as_slice())
            .expect("the same value again");
        db.remove(b"znever").expect("a key not there removed");
        db.insert(b"zlater", b"after".as_slice()).expect("insert");
        db.insert(b"zkept", b"changed".as_slice()).expect("insert");
        let report = copying.finish(dir.path(), &current).expect("finish");
        assert!(!first.exists(), "swapped in: {report:?}");
        let copy = current.get();
        assert_eq!(
            copy.db().get(b"zlater").expect("read"),
            Some("after".into())
        );
        assert_eq!(
            copy.db().get(b"zkept").expect("read"),
            Some("changed".into())
        );
    }

    /// By itself a copy waits for a database doubled since its last copy and a quiet
    /// projector; asked for, it starts at once, and is swapped in once copied.
    #[tokio::test]
    async fn a_copy_starts_when_asked_or_when_due_and_quiet() {
        const MB: u64 = 1024 * 1024;
        assert!(!due(2 * FLOOR_BYTES, 0));
        assert!(due(2 * FLOOR_BYTES + 1, 0));
        assert!(!due(600 * MB, 300 * MB));
        assert!(due(600 * MB + 1, 300 * MB));

        let dir = tempfile::tempdir().expect("temp dir");
        let first = crate::rebuild::active_path(dir.path());
        let current = Current::new(Projection::open(&first).expect("open"));
        current.get().set_applied(7).expect("applied");
        erased_once(&current.get());
        let mut compaction = Compaction::default();
        // Quiet, but a small database is not due.
        assert!(matches!(
            compaction.step(&current, dir.path(), QUIET).await,
            Step::Nothing
        ));
        compaction.ask(None);
        assert!(matches!(
            compaction.step(&current, dir.path(), Duration::ZERO).await,
            Step::Started { .. }
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let report = loop {
            match compaction.step(&current, dir.path(), Duration::ZERO).await {
                Step::Done(done, _) => break done.expect("compacted"),
                Step::Nothing if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => panic!("the copy neither finished nor stayed under way"),
            }
        };
        assert_eq!(
            crate::rebuild::active_path(dir.path()),
            dir.path().join(&report.database)
        );
        assert_eq!(current.get().applied().expect("applied"), 7);
        assert_eq!(current.get().copied().expect("copied"), report.bytes_after);
        assert!(!first.exists());
    }
}

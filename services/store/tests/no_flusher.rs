//! The store's database runs no sled flusher thread (`sledconf::cleaned_as_written`): in
//! that thread sled 0.34's segment cleaner rewrote a reopened store's log without end
//! (BENCHMARKS.md, the thirty-eighth round). A test binary of its own, so no other test's
//! database adds threads to the process while it counts them.

#![cfg(target_os = "linux")]

/// How many of this process's threads are sled's flusher ("log flusher").
fn flushers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "log flusher")
        .count()
}

#[test]
fn the_store_runs_no_sled_flusher_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let before = flushers();
    let store = store::db::Db::open(&dir.path().join("store.sled")).expect("open the store");
    assert_eq!(
        flushers(),
        before,
        "opening the store started a sled flusher"
    );
    drop(store);
    // The count sees the thread where there is one: a database opened as the projector's is.
    let projector = sledconf::config(&dir.path().join("projector.sled"))
        .open()
        .expect("open");
    assert_eq!(flushers(), before + 1, "a flusher thread is counted");
    drop(projector);
}

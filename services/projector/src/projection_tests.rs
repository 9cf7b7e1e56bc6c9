use std::collections::BTreeMap;

use bus::wire::{EventKind, StoredEvent, StoredEvents};
use serde_json::json;

use super::*;
use crate::part::tests::interrupted;

fn statement(n: usize) -> Value {
    json!({
        "id": format!("00000000-0000-4000-8000-{n:012}"),
        "actor": {"mbox": format!("mailto:w{}@example.org", n % 7)},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
        "object": {"id": format!("https://hub.example/activities/{}", n % 5)},
        "result": {"duration": "PT90S", "completion": true},
        "context": {"extensions": {
            crate::contribution::HUB: format!("hub{}", n % 3),
            crate::contribution::COMPANY: format!("KVK-{}", n % 4),
            crate::contribution::SKILLS: [format!("http://data.europa.eu/esco/skill/s{}", n % 6)],
        }},
        "timestamp": format!("2026-{:02}-15T10:00:00.000Z", n % 12 + 1),
    })
}

/// Four messages of ten statements, then one that stores ten more and voids one of the first.
fn messages() -> (Vec<StoredEvents>, StoredEvents) {
    let stored = |n| StoredEvent {
        kind: EventKind::Stored,
        position: n as u64 + 1,
        statement: statement(n),
    };
    let first = (0..4)
        .map(|m| StoredEvents {
            sequence: m as u64 + 1,
            events: (m * 10..m * 10 + 10).map(stored).collect(),
        })
        .collect();
    let mut events: Vec<StoredEvent> = (40..50).map(stored).collect();
    events.push(StoredEvent {
        kind: EventKind::Voided,
        position: 3,
        statement: statement(2),
    });
    (
        first,
        StoredEvents {
            sequence: 5,
            events,
        },
    )
}

fn applied(projection: &Projection, messages: &[StoredEvents]) -> Result<(), ProjectionError> {
    let all: Vec<(u64, &StoredEvents)> = messages.iter().map(|m| (m.sequence, m)).collect();
    projection.apply_all(&all)
}

fn entries(projection: &Projection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    projection
        .tree
        .iter()
        .map(|item| item.map(|(key, value)| (key.to_vec(), value.to_vec())))
        .collect::<Result<_, _>>()
        .expect("sled reads")
}

fn reopen(path: &Path) -> Projection {
    let wait = std::time::Duration::from_secs(5);
    let tree = Projection::open_tree_when_free(path, DEFAULT_CACHE_BYTES, wait).expect("sled");
    Projection::from_tree(tree, path, DEFAULT_CACHE_BYTES)
        .expect("reopen")
        .with_sub_batch(7)
}

#[test]
fn a_part_cut_short_is_finished_before_the_next_part_and_at_open() {
    let (first, second) = messages();
    let dir = tempfile::tempdir().expect("tempdir");
    // The first message alone before the part that is cut short: the member counts it
    // wrote are cached, and the part cut short changes some of them in sled.
    let (opening, first) = first.split_at(1);
    let whole = Projection::open(&dir.path().join("whole")).expect("open");
    applied(&whole, opening).expect("applied");
    applied(&whole, first).expect("applied");
    let after_first = entries(&whole);
    applied(&whole, std::slice::from_ref(&second)).expect("applied");
    let after_both = entries(&whole);

    for cut in [0, 1, 5] {
        // Cut short, and the next part comes to the same projection (a sled error mid-part).
        let path = dir.path().join(format!("next-{cut}"));
        let projection = Projection::open(&path).expect("open").with_sub_batch(7);
        applied(&projection, opening).expect("applied");
        let result = interrupted(cut, || applied(&projection, first));
        assert!(
            matches!(result, Err(ProjectionError::Part(PartError::Interrupted))),
            "cut {cut}: {result:?}"
        );
        assert_ne!(entries(&projection), after_first, "cut {cut}");
        applied(&projection, std::slice::from_ref(&second)).expect("applied");
        assert_eq!(entries(&projection), after_both, "cut {cut}");

        // Cut short, and the projector stops there.
        let path = dir.path().join(format!("open-{cut}"));
        let projection = Projection::open(&path).expect("open").with_sub_batch(7);
        applied(&projection, opening).expect("applied");
        let result = interrupted(cut, || applied(&projection, first));
        assert!(result.is_err(), "cut {cut}");
        projection.flush().expect("flush");
        drop(projection);
        let projection = reopen(&path);
        assert_eq!(entries(&projection), after_first, "cut {cut}");
        assert_eq!(projection.applied().expect("applied"), 4);
        applied(&projection, std::slice::from_ref(&second)).expect("applied");
        assert_eq!(entries(&projection), after_both, "cut {cut}");
    }
}

/// A message that comes again after a restart changes nothing: its statements are known as
/// counted by their timestamp keys and voided by their markers, whether the filter of marked
/// statements is still being filled or complete.
#[test]
fn a_message_again_after_a_restart_changes_nothing() {
    let (first, second) = messages();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("projection");
    {
        let projection = Projection::open(&path).expect("open");
        applied(&projection, &first).expect("applied");
        applied(&projection, std::slice::from_ref(&second)).expect("applied");
        projection.flush().expect("flush");
    }
    let projection = reopen(&path);
    let before = entries(&projection);
    applied(&projection, &first[..1]).expect("applied again");
    assert_eq!(
        entries(&projection),
        before,
        "while the filter may be filling"
    );
    assert!(projection.seen_filled(), "the fill completes");
    applied(&projection, &first).expect("applied again");
    applied(&projection, std::slice::from_ref(&second)).expect("applied again");
    assert_eq!(entries(&projection), before, "with the filter complete");
}

fn effects_of(messages: &[StoredEvents]) -> Vec<(u64, Vec<Effect>)> {
    messages
        .iter()
        .map(|message| (message.sequence, effects(message)))
        .collect()
}

/// Everything the summaries answer: the digest and applied sequence, every summary, every
/// list by every sortable field both ways (whole, by cursor and narrowed to a hub's or a
/// company's members), the programme.
fn answers(projection: &std::sync::Arc<Projection>) -> Vec<String> {
    let mut found = vec![
        format!("{:?}", projection.digest().expect("digest")),
        format!("{:?}", projection.applied().expect("applied")),
    ];
    let narrowed = [
        ListFilter::default(),
        ListFilter {
            hub: Some("hub0".into()),
            ..ListFilter::default()
        },
        ListFilter {
            company: Some("KVK-1".into()),
            ..ListFilter::default()
        },
        ListFilter {
            hub: Some("hub1".into()),
            from: Some("2026-03".into()),
            ..ListFilter::default()
        },
    ];
    for (kind, prefix) in [
        (SummaryKind::Worker, WORKER),
        (SummaryKind::Hub, HUB),
        (SummaryKind::Company, COMPANY),
    ] {
        found.push(format!("{:?}", projection.all(kind).expect("all")));
        let sorts = std::iter::once(None).chain(order::fields(prefix).iter().copied().map(Some));
        for sort in sorts {
            for descending in [false, true] {
                for filter in &narrowed {
                    let page = projection
                        .list(kind, sort, descending, 1, 3, filter, None)
                        .expect("list");
                    found.push(format!("{page:?}"));
                }
                // The whole list page by page, by cursor.
                let mut cursor: Option<String> = None;
                loop {
                    let page = projection
                        .list(
                            kind,
                            sort,
                            descending,
                            0,
                            2,
                            &ListFilter::default(),
                            cursor.as_deref(),
                        )
                        .expect("list")
                        .expect("a page");
                    found.push(format!("{page:?}"));
                    match page.cursors.last() {
                        Some(last) if page.full => cursor = Some(last.clone()),
                        _ => break,
                    }
                }
            }
        }
    }
    found.push(format!("{:?}", projection.programme(&[], 10)));
    found
}

/// Written behind, a projection answers every question as one written through does, before
/// its checkpoint and after; after it, sled holds the same entries.
#[test]
fn written_behind_answers_as_written_through() {
    let (first, second) = messages();
    let dir = tempfile::tempdir().expect("tempdir");
    let through = std::sync::Arc::new(Projection::open(&dir.path().join("through")).expect("open"));
    let behind = std::sync::Arc::new(
        Projection::open(&dir.path().join("behind"))
            .expect("open")
            .with_sub_batch(7),
    );

    let opened = entries(&behind);
    applied(&through, &first[..2]).expect("applied");
    behind
        .apply_behind(&effects_of(&first[..2]))
        .expect("applied");
    assert!(behind.is_behind());
    assert_eq!(entries(&behind), opened, "nothing in sled yet");
    assert_eq!(answers(&behind), answers(&through), "all in the overlay");

    // Part in sled (a journaled checkpoint of more than 7 writes), part in the overlay; the
    // void in the second message removes keys sled holds.
    assert!(behind.checkpoint().expect("checkpoint") > 7);
    applied(&through, &first[2..]).expect("applied");
    behind
        .apply_behind(&effects_of(&first[2..]))
        .expect("applied");
    applied(&through, std::slice::from_ref(&second)).expect("applied");
    behind
        .apply_behind(&effects_of(std::slice::from_ref(&second)))
        .expect("applied");
    assert_eq!(answers(&behind), answers(&through), "sled and the overlay");

    behind.checkpoint().expect("checkpoint");
    assert!(!behind.is_behind());
    assert_eq!(behind.checkpoint().expect("nothing left"), 0);
    assert_eq!(entries(&behind), entries(&through));
    assert_eq!(answers(&behind), answers(&through), "all in sled");
}

/// A projector that stops before a checkpoint loses what it applied behind, and nothing
/// else: its messages, not acknowledged, come again and are applied as if for the first time.
#[test]
fn what_was_applied_behind_comes_again_after_a_stop() {
    let (first, second) = messages();
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = Projection::open(&dir.path().join("whole")).expect("open");
    applied(&whole, &first[..2]).expect("applied");
    let after_two = entries(&whole);
    applied(&whole, &first[2..]).expect("applied");
    applied(&whole, std::slice::from_ref(&second)).expect("applied");

    let path = dir.path().join("stopped");
    {
        let projection = Projection::open(&path).expect("open");
        projection
            .apply_behind(&effects_of(&first[..2]))
            .expect("applied");
        projection.checkpoint().expect("checkpoint");
        projection
            .apply_behind(&effects_of(&first[2..]))
            .expect("applied");
        projection
            .apply_behind(&effects_of(std::slice::from_ref(&second)))
            .expect("applied");
        assert_eq!(projection.applied().expect("applied"), 5);
        // Stopped here: no checkpoint, no flush.
    }
    let projection = reopen(&path);
    assert!(!projection.is_behind());
    assert_eq!(projection.applied().expect("applied"), 2);
    assert_eq!(entries(&projection), after_two);
    // Redelivered, the first two among them (they were acknowledged, but come again anyway).
    projection
        .apply_behind(&effects_of(&first))
        .expect("applied");
    projection
        .apply_behind(&effects_of(std::slice::from_ref(&second)))
        .expect("applied");
    projection.checkpoint().expect("checkpoint");
    assert_eq!(entries(&projection), entries(&whole));
}

/// Written through while something waits behind, a part goes behind too (sled under the
/// overlay would hide it), and a flush writes it.
#[test]
fn a_part_written_through_while_behind_goes_behind_too() {
    let (first, second) = messages();
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = std::sync::Arc::new(Projection::open(&dir.path().join("whole")).expect("open"));
    applied(&whole, &first).expect("applied");
    applied(&whole, std::slice::from_ref(&second)).expect("applied");

    let projection =
        std::sync::Arc::new(Projection::open(&dir.path().join("mixed")).expect("open"));
    projection
        .apply_behind(&effects_of(&first))
        .expect("applied");
    applied(&projection, std::slice::from_ref(&second)).expect("applied");
    assert!(projection.is_behind());
    assert_eq!(answers(&projection), answers(&whole));
    projection.flush().expect("flush");
    assert!(!projection.is_behind());
    assert_eq!(entries(&projection), entries(&whole));
}

/// Pulls written behind into one layer leave in it what one part of all their messages
/// would: an order key an earlier pull of the layer wrote and a later one moved is taken out
/// of the layer, not written to sled as a removal. Across a checkpoint, the layer after it
/// removes what the one before wrote.
#[test]
fn pulls_of_one_layer_write_what_one_part_of_them_writes() {
    let (first, second) = messages();
    let mut all = first.clone();
    all.push(second);
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = std::sync::Arc::new(Projection::open(&dir.path().join("whole")).expect("open"));
    whole.apply_behind(&effects_of(&all)).expect("applied");
    let pulls = std::sync::Arc::new(Projection::open(&dir.path().join("pulls")).expect("open"));
    for message in &all {
        pulls
            .apply_behind(&effects_of(std::slice::from_ref(message)))
            .expect("applied");
    }
    assert_eq!(pulls.overlay.active(), whole.overlay.active());
    assert_eq!(answers(&pulls), answers(&whole));

    let through = std::sync::Arc::new(Projection::open(&dir.path().join("through")).expect("open"));
    let split = std::sync::Arc::new(Projection::open(&dir.path().join("split")).expect("open"));
    for (n, message) in all.iter().enumerate() {
        applied(&through, std::slice::from_ref(message)).expect("applied");
        split
            .apply_behind(&effects_of(std::slice::from_ref(message)))
            .expect("applied");
        if n % 2 == 1 {
            split.checkpoint().expect("checkpoint");
        }
        assert_eq!(answers(&split), answers(&through), "after message {n}");
    }
    split.checkpoint().expect("checkpoint");
    assert_eq!(entries(&split), entries(&through));
}

/// A checkpoint writes nothing to sled while a part is being applied behind (its sled
/// batches would hold the part's every read: sled's process-wide lock), and everything once
/// no part is.
#[test]
fn a_checkpoint_writes_once_no_part_is_being_applied() {
    let (first, _) = messages();
    let dir = tempfile::tempdir().expect("tempdir");
    let projection = std::sync::Arc::new(
        Projection::open(&dir.path().join("behind"))
            .expect("open")
            .with_sub_batch(7),
    );
    let opened = entries(&projection);
    projection
        .apply_behind(&effects_of(&first))
        .expect("applied");
    let part = projection.applying.begin();
    let checkpoint = std::thread::spawn({
        let projection = projection.clone();
        move || projection.checkpoint()
    });
    while projection.applying.waiting() == 0 && !checkpoint.is_finished() {
        std::thread::yield_now();
    }
    assert!(
        !checkpoint.is_finished(),
        "the checkpoint waits for the part"
    );
    assert_eq!(entries(&projection), opened, "nothing written meanwhile");
    assert!(projection.is_behind());

    drop(part);
    let written = checkpoint
        .join()
        .expect("checkpoint thread")
        .expect("checkpoint");
    assert!(written > 7, "a journaled checkpoint: {written} writes");
    assert!(!projection.is_behind());
    let through = Projection::open(&dir.path().join("through")).expect("open");
    applied(&through, &first).expect("applied");
    assert_eq!(entries(&projection), entries(&through));
}

/// The projector's database runs sled's flusher thread while it is new, and none once opened
/// again (a restart, a compaction's copy once written): in a database opened again that
/// thread's segment cleaner rewrote the log without end (BENCHMARKS.md, the forty-fifth round).
#[test]
fn a_database_opened_again_runs_without_sleds_flusher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("projector.sled");
    let flusher = |path: &Path| Projection::tree_config(path, DEFAULT_CACHE_BYTES).flush_every_ms;
    assert_eq!(flusher(&path), Some(sledconf::CLEANING_MS));
    drop(Projection::open(&path).expect("open"));
    assert_eq!(flusher(&path), None);
}

//! Projection equals recomputation, whatever the arrival order, duplicates, redeliveries,
//! voiding, erasure and restarts.

use std::collections::{BTreeMap, BTreeSet};

use bus::wire::{EventKind, StoredEvent, StoredEvents};
use projector::projection::{Projection, SummaryKind};
use proptest::prelude::*;
use serde_json::{json, Value};

const VERBS: [&str; 5] = [
    "http://adlnet.gov/expapi/verbs/attended",
    "http://adlnet.gov/expapi/verbs/completed",
    "http://adlnet.gov/expapi/verbs/passed",
    "http://adlnet.gov/expapi/verbs/failed",
    "http://id.tincanapi.com/verb/earned",
];

#[derive(Debug, Clone)]
struct Spec {
    workers: Vec<u8>,
    group: bool,
    verb: usize,
    activity: u8,
    hub: Option<u8>,
    company: Option<u8>,
    duration_ms: u32,
    scaled: Option<i8>,
    success: Option<bool>,
    completion: Option<bool>,
    skills: Vec<u8>,
    month: u8,
    voided: bool,
    /// Erased (the right to erasure), possibly after being voided too.
    erased: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(0u8..6, 1..4),
        any::<bool>(),
        0usize..VERBS.len(),
        0u8..4,
        prop::option::of(0u8..3),
        prop::option::of(0u8..3),
        0u32..10_000_000,
        prop::option::of(-100i8..=100),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::collection::vec(0u8..4, 0..3),
        (0u8..4, any::<bool>(), prop::bool::weighted(0.2)),
    )
        .prop_map(
            |(
                workers,
                group,
                verb,
                activity,
                hub,
                company,
                duration_ms,
                scaled,
                success,
                completion,
                skills,
                (month, voided, erased),
            )| Spec {
                workers,
                group,
                verb,
                activity,
                hub,
                company,
                duration_ms,
                scaled,
                success,
                completion,
                skills,
                month,
                voided,
                erased,
            },
        )
}

fn statement(index: usize, spec: &Spec) -> Value {
    let agent = |worker: &u8| json!({"mbox": format!("mailto:w{worker}@example.org")});
    let actor = if spec.group {
        json!({"objectType": "Group", "member": spec.workers.iter().map(agent).collect::<Vec<_>>()})
    } else {
        agent(&spec.workers[0])
    };
    let mut result = json!({"duration": format!("PT{}.{:03}S", spec.duration_ms / 1000, spec.duration_ms % 1000)});
    if let Some(scaled) = spec.scaled {
        result["score"] = json!({"scaled": f64::from(scaled) / 100.0});
    }
    if let Some(success) = spec.success {
        result["success"] = json!(success);
    }
    if let Some(completion) = spec.completion {
        result["completion"] = json!(completion);
    }
    let mut extensions = serde_json::Map::new();
    if let Some(hub) = spec.hub {
        extensions.insert(
            projector::contribution::HUB.into(),
            json!(format!("hub{hub}")),
        );
    }
    if let Some(company) = spec.company {
        extensions.insert(
            projector::contribution::COMPANY.into(),
            json!(format!("KVK-{company}")),
        );
    }
    let skills: BTreeSet<String> = spec
        .skills
        .iter()
        .map(|skill| format!("http://data.europa.eu/esco/skill/s{skill}"))
        .collect();
    extensions.insert(projector::contribution::SKILLS.into(), json!(skills));
    if let Some(group) = learner_group(spec) {
        extensions.insert(xapi::llo::LEARNER_GROUP.into(), json!(group));
    }
    json!({
        "id": format!("00000000-0000-4000-8000-{index:012}"),
        "actor": actor,
        "verb": {"id": VERBS[spec.verb]},
        "object": {"id": format!("https://hub.example/activities/{}", spec.activity)},
        "result": result,
        "context": {"extensions": extensions},
        "timestamp": format!("2026-{:02}-15T10:00:00.000Z", spec.month + 1),
    })
}

/// The learner group a spec's statement names (none for every fourth activity).
fn learner_group(spec: &Spec) -> Option<&'static str> {
    [Some("youth"), Some("worker"), Some("jobseeker"), None][usize::from(spec.activity % 4)]
}

/// The sled database at `path` just closed: sled may hold its lock for a moment.
fn free_tree(path: &std::path::Path) -> sled::Db {
    let wait = std::time::Duration::from_secs(5);
    Projection::open_tree_when_free(path, projector::projection::DEFAULT_CACHE_BYTES, wait)
        .expect("sled")
}

/// Opens the projection again after a drop.
fn reopen(path: &std::path::Path) -> Projection {
    Projection::from_tree(
        free_tree(path),
        path,
        projector::projection::DEFAULT_CACHE_BYTES,
    )
    .expect("reopen")
}

fn event(kind: EventKind, statement: &Value) -> StoredEvent {
    StoredEvent {
        kind,
        position: 0,
        statement: statement.clone(),
    }
}

/// The specs' statements, and their events in order: each stored, then voided and erased
/// where its spec says.
fn statements_and_events(specs: &[Spec]) -> (Vec<Value>, Vec<StoredEvent>) {
    let statements: Vec<Value> = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| statement(index, spec))
        .collect();
    let mut events = Vec::new();
    for (statement, spec) in statements.iter().zip(specs) {
        events.push(event(EventKind::Stored, statement));
        if spec.voided {
            events.push(event(EventKind::Voided, statement));
        }
        if spec.erased {
            events.push(event(EventKind::Erased, statement));
        }
    }
    (statements, events)
}

/// Applies `event` as the `LRS_STORED` message at `sequence`, alone.
fn apply_one(projection: &Projection, sequence: u64, event: StoredEvent) {
    projection
        .apply(
            sequence,
            &StoredEvents {
                sequence,
                events: vec![event],
            },
        )
        .expect("apply");
}

/// Every summary, and every sorted list of every kind; each list must also equal the
/// summaries sorted in memory (by value, then id), so the order keys are checked too.
fn snapshot(projection: &Projection) -> Vec<Vec<Value>> {
    let mut seen = Vec::new();
    for (kind, fields) in [
        (
            SummaryKind::Worker,
            &projector::summary::WorkerState::SORTABLE[..],
        ),
        (
            SummaryKind::Hub,
            &projector::summary::HubState::SORTABLE[..],
        ),
        (
            SummaryKind::Company,
            &projector::summary::CompanyState::SORTABLE[..],
        ),
    ] {
        let all = projection.all(kind).expect("read");
        for field in fields {
            let mut expected = all.clone();
            expected.sort_by(|a, b| {
                let number = |value: &Value| {
                    value
                        .get(*field)
                        .and_then(Value::as_f64)
                        .unwrap_or(f64::MIN)
                };
                number(a).total_cmp(&number(b))
            });
            let (total, listed) = projection
                .list(
                    kind,
                    Some(field),
                    false,
                    0,
                    10_000,
                    &Default::default(),
                    None,
                )
                .expect("read")
                .map(pair)
                .expect("a sortable field");
            assert_eq!(total as usize, all.len(), "count of {kind:?}");
            assert_eq!(listed, expected, "{kind:?} by {field}");
            let (_, descending) = projection
                .list(kind, Some(field), true, 1, 3, &Default::default(), None)
                .expect("read")
                .map(pair)
                .expect("a sortable field");
            expected.reverse();
            assert_eq!(
                descending,
                expected.iter().skip(1).take(3).cloned().collect::<Vec<_>>()
            );
            // Page by page with cursors: the same list, each summary once.
            let mut cursor = None;
            let mut paged = Vec::new();
            loop {
                let page = projection
                    .list(
                        kind,
                        Some(field),
                        true,
                        0,
                        7,
                        &Default::default(),
                        cursor.as_deref(),
                    )
                    .expect("read")
                    .expect("a sortable field");
                paged.extend(page.items);
                if !page.full {
                    break;
                }
                cursor = page.cursors.last().cloned();
            }
            assert_eq!(paged, expected, "{kind:?} by {field}, by cursor");
            seen.push(listed);
        }
        let (_, by_id) = projection
            .list(kind, None, false, 0, 10_000, &Default::default(), None)
            .expect("read")
            .map(pair)
            .expect("by id");
        assert_eq!(by_id, all);
        seen.push(all);
    }
    check_member_lists(projection);
    seen
}

/// Lists narrowed to a hub's or a company's members agree with the summaries' own counts.
fn check_member_lists(projection: &Projection) {
    let list = |kind, filter: bus::wire::ListFilter| {
        projection
            .list(kind, Some("statements"), true, 0, 10_000, &filter, None)
            .expect("read")
            .map(pair)
            .expect("a filter lists take")
    };
    let page = |kind, filter: bus::wire::ListFilter, offset, limit| {
        projection
            .list(kind, Some("statements"), true, offset, limit, &filter, None)
            .expect("read")
            .map(pair)
            .expect("a filter lists take")
    };
    for hub in projection.all(SummaryKind::Hub).expect("read") {
        let id = hub["hub"].as_str().expect("id").to_owned();
        // A short page (read by walking the whole list when the hub is big) is the same
        // part of the hub's list as the long one (read from its members).
        let filter = bus::wire::ListFilter {
            hub: Some(id.clone()),
            ..Default::default()
        };
        let (_, whole) = page(SummaryKind::Worker, filter.clone(), 0, 10_000);
        let (total, short) = page(SummaryKind::Worker, filter.clone(), 1, 2);
        assert_eq!(json!(total), hub["workers"], "{id}");
        assert_eq!(
            short,
            whole.iter().skip(1).take(2).cloned().collect::<Vec<_>>(),
            "{id}"
        );
        let (_, whole) = page(SummaryKind::Company, filter.clone(), 0, 10_000);
        let (_, short) = page(SummaryKind::Company, filter, 0, 1);
        assert_eq!(
            short,
            whole.iter().take(1).cloned().collect::<Vec<_>>(),
            "{id}"
        );
        let (total, workers) = list(
            SummaryKind::Worker,
            bus::wire::ListFilter {
                hub: Some(id.clone()),
                ..Default::default()
            },
        );
        assert_eq!(json!(total), hub["workers"], "{id}");
        assert!(workers.iter().all(|worker| worker["hubs"]
            .as_array()
            .is_some_and(|hubs| hubs.contains(&json!(id)))));
        let statements: Vec<i64> = workers
            .iter()
            .map(|worker| worker["statements"].as_i64().unwrap_or(0))
            .collect();
        assert!(
            statements.windows(2).all(|pair| pair[0] >= pair[1]),
            "descending"
        );
        let (companies, _) = list(
            SummaryKind::Company,
            bus::wire::ListFilter {
                hub: Some(id.clone()),
                ..Default::default()
            },
        );
        assert_eq!(json!(companies), hub["companies"], "{id}");
        for month in hub["months"].as_array().expect("months") {
            let month_id = month["month"].as_str().expect("month").to_owned();
            let (active, _) = list(
                SummaryKind::Worker,
                bus::wire::ListFilter {
                    hub: Some(id.clone()),
                    from: Some(month_id.clone()),
                    to: Some(month_id),
                    ..Default::default()
                },
            );
            assert_eq!(json!(active), month["workers"], "{id} {month}");
        }
    }
    for company in projection.all(SummaryKind::Company).expect("read") {
        let id = company["company"].as_str().expect("id").to_owned();
        let (total, _) = list(
            SummaryKind::Worker,
            bus::wire::ListFilter {
                company: Some(id.clone()),
                ..Default::default()
            },
        );
        assert_eq!(json!(total), company["workers"], "{id}");
    }
    let refused = projection
        .list(
            SummaryKind::Hub,
            None,
            false,
            0,
            10,
            &bus::wire::ListFilter {
                company: Some("x".into()),
                ..Default::default()
            },
            None,
        )
        .expect("read");
    assert!(refused.is_err());
}

/// The projection of just the surviving statements, stored once each, in order.
fn recomputed(statements: &[Value], specs: &[Spec]) -> Vec<Vec<Value>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let projection = Projection::open(dir.path()).expect("open");
    for (sequence, (statement, spec)) in statements.iter().zip(specs).enumerate() {
        if !spec.voided && !spec.erased {
            apply_one(
                &projection,
                sequence as u64 + 1,
                event(EventKind::Stored, statement),
            );
        }
    }
    snapshot(&projection)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn projection_equals_recomputation_in_any_order(
        specs in prop::collection::vec(spec(), 1..25),
        order_seed in any::<u64>(),
        duplicate_every in 2usize..6,
        restart_every in 3usize..9,
        fetch_size in 1usize..6,
        sub_batch in 1usize..40,
    ) {
        let (statements, mut events) = statements_and_events(&specs);
        // Duplicates: some events arrive twice (a republished outbox message).
        let duplicates: Vec<StoredEvent> = events.iter().step_by(duplicate_every).cloned().collect();
        events.extend(duplicates);
        // Arbitrary arrival order, from the seed.
        let mut state = order_seed | 1;
        for index in (1..events.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            events.swap(index, (state % (index as u64 + 1)) as usize);
        }

        let dir = tempfile::tempdir().expect("temp dir");
        // Parts of more writes than `sub_batch` are journaled and applied in several batches.
        let mut projection = Projection::open(dir.path()).expect("open").with_sub_batch(sub_batch);
        let messages: Vec<(u64, StoredEvents)> = events
            .into_iter()
            .enumerate()
            .map(|(index, stored_event)| (index as u64 + 1, StoredEvents { sequence: index as u64 + 1, events: vec![stored_event] }))
            .collect();
        // Messages arrive in fetches of several, applied together as the service does.
        for (index, chunk) in messages.chunks(fetch_size).enumerate() {
            let fetched: Vec<(u64, &StoredEvents)> = chunk.iter().map(|(sequence, message)| (*sequence, message)).collect();
            projection.apply_all(&fetched).expect("apply");
            // A redelivery of the same stream messages changes nothing.
            projection.apply_all(&fetched).expect("apply again");
            if index % restart_every == 0 {
                projection.flush().expect("flush");
                drop(projection);
                projection = reopen(dir.path()).with_sub_batch(sub_batch);
            }
        }
        prop_assert_eq!(snapshot(&projection), recomputed(&statements, &specs));
    }
}

/// Two statements name one skill differently: a replica keeps the later-stored one's name
/// whatever order it applied them in, also when a void came before a statement's own event,
/// and replicas that applied the same events in other orders hold the same digest.
#[test]
fn a_skills_name_is_the_latest_stored_ones_in_any_order_applied() {
    let skill = "http://data.europa.eu/esco/skill/welding";
    let named = |id: &str, name: &str, stored: &str| {
        json!({
            "id": id,
            "actor": {"mbox": "mailto:a@example.org"},
            "verb": {"id": VERBS[1]},
            "object": {"id": "https://hub.example/course"},
            "context": {
                "contextActivities": {"category": [{"id": skill, "definition": {"name": {"en": name}}}]},
                "extensions": {(xapi::llo::SKILLS): [skill]}
            },
            "timestamp": stored,
            "stored": stored
        })
    };
    // The later-stored statement has the smaller id: the time decides, not the id.
    let early = named(
        "f0000000-0000-4000-8000-000000000001",
        "Welding",
        "2026-01-01T00:00:00.000Z",
    );
    let late = named(
        "00000000-0000-4000-8000-000000000002",
        "Lassen",
        "2026-01-02T00:00:00.000Z",
    );
    let applied = |events: Vec<StoredEvent>| {
        let dir = tempfile::tempdir().expect("temp dir");
        let projection = Projection::open(dir.path()).expect("open");
        for (index, event) in events.into_iter().enumerate() {
            apply_one(&projection, index as u64 + 1, event);
        }
        let mut summary = json!({"skill": skill});
        projection.label_skills(&mut summary);
        let (_, _, digest) = projection.digest().expect("digest");
        (summary["label"].clone(), digest)
    };
    let in_order = applied(vec![
        event(EventKind::Stored, &early),
        event(EventKind::Stored, &late),
    ]);
    let reversed = applied(vec![
        event(EventKind::Stored, &late),
        event(EventKind::Stored, &early),
    ]);
    assert_eq!(in_order.0, json!({"en": "Lassen"}));
    assert_eq!(
        reversed, in_order,
        "the same name and digest in either order"
    );
    let voided_first = applied(vec![
        event(EventKind::Voided, &late),
        event(EventKind::Stored, &late),
        event(EventKind::Stored, &early),
    ]);
    let voided_last = applied(vec![
        event(EventKind::Stored, &early),
        event(EventKind::Stored, &late),
        event(EventKind::Voided, &late),
    ]);
    assert_eq!(voided_first.0, json!({"en": "Lassen"}));
    assert_eq!(voided_first, voided_last, "a void's place changes nothing");

    // A name kept by a Leerspoor from before (the language map alone) is read, and any
    // statement's name replaces it.
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let tree = free_tree(dir.path());
        let mut key = b"L".to_vec();
        key.extend_from_slice(skill.as_bytes());
        tree.insert(key, br#"{"en":"Soldering"}"#.as_slice())
            .expect("insert");
        tree.flush().expect("flush");
    }
    let projection = reopen(dir.path());
    let label = |projection: &Projection| {
        let mut summary = json!({"skill": skill});
        projection.label_skills(&mut summary);
        summary["label"].clone()
    };
    assert_eq!(label(&projection), json!({"en": "Soldering"}));
    apply_one(&projection, 1, event(EventKind::Stored, &early));
    assert_eq!(label(&projection), json!({"en": "Welding"}));
}

/// An independent recomputation of a few figures, written without the projector's types.
#[test]
fn figures_match_a_plain_count() {
    let specs: Vec<Spec> = (0..40u8)
        .map(|n| Spec {
            workers: vec![n % 3, (n + 1) % 3],
            group: n.is_multiple_of(4),
            verb: usize::from(n) % VERBS.len(),
            activity: n % 4,
            hub: Some(n % 2),
            company: (n % 3 != 0).then_some(n % 2),
            duration_ms: u32::from(n) * 1000,
            scaled: None,
            success: None,
            completion: None,
            skills: vec![n % 4],
            month: n % 3,
            voided: n % 5 == 0,
            erased: false,
        })
        .collect();
    let statements: Vec<Value> = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| statement(index, spec))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let projection = Projection::open(dir.path()).expect("open");
    let mut sequence = 0;
    for (statement, spec) in statements.iter().zip(&specs) {
        sequence += 1;
        apply_one(&projection, sequence, event(EventKind::Stored, statement));
        if spec.voided {
            sequence += 1;
            apply_one(&projection, sequence, event(EventKind::Voided, statement));
        }
    }
    let mut statements_per_worker: BTreeMap<String, i64> = BTreeMap::new();
    let mut hub_workers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut hub_attendance: BTreeMap<String, i64> = BTreeMap::new();
    // Workers with any statement at the hub that month, attendance or not (DESIGN.md).
    let mut hub_month_workers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut hub_group_workers: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    let mut hub_skill_workers: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    let mut worker_skill_first: BTreeMap<(String, String), String> = BTreeMap::new();
    for spec in specs.iter().filter(|spec| !spec.voided) {
        let workers: BTreeSet<u8> = if spec.group {
            spec.workers.iter().copied().collect()
        } else {
            [spec.workers[0]].into()
        };
        for worker in workers {
            let key = format!("mbox:mailto:w{worker}@example.org");
            *statements_per_worker.entry(key.clone()).or_default() += 1;
            if let Some(hub) = spec.hub {
                hub_month_workers
                    .entry((format!("hub{hub}"), format!("2026-{:02}", spec.month + 1)))
                    .or_default()
                    .insert(key.clone());
                if [1, 2, 4].contains(&spec.verb) {
                    for skill in &spec.skills {
                        let skill = format!("http://data.europa.eu/esco/skill/s{skill}");
                        hub_skill_workers
                            .entry(format!("hub{hub}"))
                            .or_default()
                            .entry(skill.clone())
                            .or_default()
                            .insert(key.clone());
                        let month = format!("2026-{:02}-15T10:00:00.000Z", spec.month + 1);
                        let first = worker_skill_first
                            .entry((key.clone(), skill))
                            .or_insert(month.clone());
                        if month < *first {
                            *first = month;
                        }
                    }
                }
                hub_group_workers
                    .entry(format!("hub{hub}"))
                    .or_default()
                    .entry(learner_group(spec).unwrap_or("unknown").to_owned())
                    .or_default()
                    .insert(key.clone());
                hub_workers
                    .entry(format!("hub{hub}"))
                    .or_default()
                    .insert(key);
                if spec.verb == 0 {
                    *hub_attendance.entry(format!("hub{hub}")).or_default() += 1;
                }
            }
        }
    }
    for (worker, count) in statements_per_worker {
        let view = projection
            .worker(&worker, &Default::default())
            .expect("read")
            .expect("worker");
        assert_eq!(view["statements"], json!(count), "{worker}");
        let expected: Vec<Value> = worker_skill_first
            .iter()
            .filter(|((of, _), _)| *of == worker)
            .map(|((_, skill), first)| json!({"skill": skill, "first": first}))
            .collect();
        assert_eq!(
            view["skills_first"],
            json!(expected),
            "{worker}: skills first evidenced"
        );
    }
    for (hub, workers) in hub_workers {
        let view = projection
            .hub(&hub, &Default::default())
            .expect("read")
            .expect("hub");
        assert_eq!(view["workers"], json!(workers.len()), "{hub}");
        assert_eq!(
            view["attendance"],
            json!(hub_attendance.get(&hub).copied().unwrap_or(0)),
            "{hub}"
        );
        let months: BTreeMap<String, usize> = view["months"]
            .as_array()
            .expect("months")
            .iter()
            .map(|month| {
                (
                    month["month"].as_str().expect("month").to_owned(),
                    month["workers"].as_u64().expect("workers") as usize,
                )
            })
            .collect();
        let expected: BTreeMap<String, usize> = hub_month_workers
            .iter()
            .filter(|((of, _), _)| *of == hub)
            .map(|((_, month), workers)| (month.clone(), workers.len()))
            .collect();
        assert_eq!(months, expected, "{hub}: distinct workers per month");
        let groups: BTreeMap<String, usize> = hub_group_workers
            .get(&hub)
            .map(|groups| {
                groups
                    .iter()
                    .map(|(group, workers)| (group.clone(), workers.len()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            view["learner_groups"],
            json!(groups),
            "{hub}: learner groups"
        );
        let mut skills: Vec<(String, usize)> = hub_skill_workers
            .get(&hub)
            .map(|skills| {
                skills
                    .iter()
                    .map(|(skill, workers)| (skill.clone(), workers.len()))
                    .collect()
            })
            .unwrap_or_default();
        skills.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let skills: Vec<Value> = skills
            .into_iter()
            .map(|(skill, workers)| json!({"skill": skill, "workers": workers}))
            .collect();
        assert_eq!(view["skill_workers"], json!(skills), "{hub}: skills ranked");
    }
}

/// A database written before the order keys existed gets them (and the counts) when opened.
#[test]
fn a_database_from_before_the_order_keys_gets_them_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let specs: Vec<Spec> = (0..30u8)
        .map(|n| Spec {
            workers: vec![n % 7],
            group: false,
            verb: usize::from(n) % VERBS.len(),
            activity: n % 5,
            hub: Some(n % 3),
            company: Some(n % 4),
            duration_ms: u32::from(n) * 700,
            scaled: Some(i8::try_from(n % 100).unwrap_or(0)),
            success: None,
            completion: None,
            skills: vec![n % 3],
            month: n % 4,
            voided: false,
            erased: false,
        })
        .collect();
    let expected = {
        let projection = Projection::open(dir.path()).expect("open");
        for (index, spec) in specs.iter().enumerate() {
            let stored = event(EventKind::Stored, &statement(index, spec));
            apply_one(&projection, index as u64 + 1, stored);
        }
        projection.flush().expect("flush");
        snapshot(&projection)
    };
    // As an older Leerspoor left it: no order keys, no counts, no marker.
    {
        let tree = free_tree(dir.path());
        let old: Vec<sled::IVec> = tree
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter(|key| {
                key.starts_with(b"o") || key.starts_with(b"mcount") || key.as_ref() == b"morder1"
            })
            .collect();
        assert!(!old.is_empty());
        for key in old {
            tree.remove(key).expect("remove");
        }
        tree.flush().expect("flush");
    }
    let projection = reopen(dir.path());
    assert_eq!(snapshot(&projection), expected);
}

/// A hub and a company kept the old way (their distinct sets inside the state) are moved to
/// member keys when the database is opened, and count on from there.
#[test]
fn states_with_their_members_inside_are_moved_out_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let tree = free_tree(dir.path());
        let hub = json!({
            "workers": {"mbox:mailto:w1@example.org": 2, "mbox:mailto:w2@example.org": 1},
            "companies": {"KVK-1": 3}, "statements": 3, "attendance": 3, "attended_ms": 5400000,
            "sessions": {"https://hub.example/activities/1": 3}, "completions": 0, "passed": 0,
            "months": {"2026-01": {"attendance": 3, "workers": {"mbox:mailto:w1@example.org": 2, "mbox:mailto:w2@example.org": 1}}}
        });
        let company = json!({
            "workers": {"mbox:mailto:w1@example.org": 2, "mbox:mailto:w2@example.org": 1},
            "statements": 3, "learning_ms": 5400000, "completed": {}, "skills": {"http://data.europa.eu/esco/skill/s1": 3}
        });
        tree.insert(b"hhub0", serde_json::to_vec(&hub).expect("json"))
            .expect("insert");
        tree.insert(b"cKVK-1", serde_json::to_vec(&company).expect("json"))
            .expect("insert");
        tree.flush().expect("flush");
    }
    let projection = reopen(dir.path());
    let hub = projection
        .hub("hub0", &Default::default())
        .expect("read")
        .expect("hub");
    assert_eq!(hub["workers"], json!(2));
    assert_eq!(hub["companies"], json!(1));
    assert_eq!(hub["sessions"], json!(1));
    assert_eq!(
        hub["months"],
        json!([{"month": "2026-01", "attendance": 3, "workers": 2, "skill_workers": []}])
    );
    let company = projection.company("KVK-1").expect("read").expect("company");
    assert_eq!(company["workers"], json!(2));
    assert_eq!(company["skills"], json!(1));
    // Counting on: w1 again (no new member), w3 (a new one) at the hub and company.
    let spec = |worker: u8| Spec {
        workers: vec![worker],
        group: false,
        verb: 0,
        activity: 1,
        hub: Some(0),
        company: Some(1),
        duration_ms: 1000,
        scaled: None,
        success: None,
        completion: None,
        skills: vec![1],
        month: 0,
        voided: false,
        erased: false,
    };
    for (index, worker) in [(100, 1u8), (101, 3u8)] {
        let stored = event(EventKind::Stored, &statement(index as usize, &spec(worker)));
        apply_one(&projection, index, stored);
    }
    let hub = projection
        .hub("hub0", &Default::default())
        .expect("read")
        .expect("hub");
    assert_eq!(hub["workers"], json!(3));
    assert_eq!(
        hub["months"],
        json!([{"month": "2026-01", "attendance": 5, "workers": 3, "skill_workers": []}])
    );
    let company = projection.company("KVK-1").expect("read").expect("company");
    assert_eq!(company["workers"], json!(3));
    assert_eq!(company["skills"], json!(1));
    let (total, hubs) = projection
        .list(
            SummaryKind::Hub,
            Some("workers"),
            true,
            0,
            10,
            &Default::default(),
            None,
        )
        .expect("read")
        .map(pair)
        .expect("sortable");
    assert_eq!((total, hubs.len()), (1, 1));
}

/// Statements applied around an upgrade at open: 30 before it, then 10 more, a voiding and
/// two erasures of statements counted before it.
struct AcrossAnUpgrade {
    statements: Vec<Value>,
}

impl AcrossAnUpgrade {
    fn new() -> AcrossAnUpgrade {
        let spec = |n: u8| Spec {
            workers: vec![n % 5, 5 + n % 3],
            group: n.is_multiple_of(4),
            verb: usize::from(n) % VERBS.len(),
            activity: n % 6,
            hub: Some(n % 3),
            company: Some(n % 4),
            duration_ms: u32::from(n) * 900,
            scaled: Some(i8::try_from(n % 90).unwrap_or(0)),
            success: Some(n.is_multiple_of(2)),
            completion: Some(n.is_multiple_of(3)),
            skills: vec![n % 3, n % 5],
            month: n % 4,
            voided: false,
            erased: false,
        };
        AcrossAnUpgrade {
            statements: (0..40u8)
                .map(|n| statement(usize::from(n), &spec(n)))
                .collect(),
        }
    }

    fn apply(projection: &Projection, sequence: u64, kind: EventKind, statement: &Value) {
        apply_one(projection, sequence, event(kind, statement));
    }

    /// Adds the member keys of the sets of workers nothing lists to the database of the
    /// first part, as every Leerspoor before [`projector::members::Set::LISTED`] wrote them
    /// (empty values: their counts are in the workers' states), and takes away the mark
    /// that they went.
    fn unlisted_members_as_before(&self, tree: &sled::Db) {
        use projector::members::{key, step, Members, Set};
        struct Recorder(BTreeMap<Vec<u8>, u64>);
        impl Members for Recorder {
            type Error = std::convert::Infallible;
            fn change(
                &mut self,
                set: Set,
                id: &str,
                month: &str,
                member: &str,
                sign: i64,
            ) -> Result<i64, Self::Error> {
                Ok(step(
                    self.0.entry(key(set, id, month, member)).or_default(),
                    sign,
                ))
            }
        }
        let mut recorder = Recorder(BTreeMap::new());
        let mut programme = projector::summary::ProgrammeState::default();
        let mut hubs: BTreeMap<String, projector::summary::HubState> = BTreeMap::new();
        let mut companies: BTreeMap<String, projector::summary::CompanyState> = BTreeMap::new();
        for statement in self.statements.iter().take(30) {
            for contribution in projector::contribution::contributions(statement) {
                let Ok(()) = programme.apply(&contribution, 1, &mut recorder);
                if let Some(hub) = &contribution.hub {
                    let state = hubs.entry(hub.clone()).or_default();
                    let Ok(()) = state.apply(hub, &contribution, 1, &mut recorder);
                }
                if let Some(company) = &contribution.company {
                    let state = companies.entry(company.clone()).or_default();
                    let Ok(()) = state.apply(company, &contribution, 1, &mut recorder);
                }
            }
        }
        let unlisted: Vec<Vec<u8>> = Set::OF_WORKERS
            .into_iter()
            .filter(|set| !set.listed())
            .map(projector::members::set_prefix)
            .collect();
        let mut added = 0;
        for (member, count) in recorder.0 {
            if count > 0 && unlisted.iter().any(|prefix| member.starts_with(prefix)) {
                assert!(tree.insert(member, &[] as &[u8]).expect("insert").is_none());
                added += 1;
            }
        }
        assert!(added > 50, "{added} member keys as before");
        assert!(tree.remove(b"mmembers4").expect("remove").is_some());
        assert!(tree.remove(b"mmembers5").expect("remove").is_some());
    }

    /// Adds the member keys of hubs' workers of the first part, as every Leerspoor before
    /// their hubs' learner groups listed them wrote them, and takes away the mark that they
    /// went; and (`stray`) a key of a worker the hub's groups do not hold, as a database
    /// whose hubs lost their groups in an earlier move could hold. How many keys it added.
    fn hub_workers_as_before(&self, tree: &sled::Db, stray: bool) -> usize {
        use projector::members::{key, Set};
        let mut added = 0;
        for statement in self.statements.iter().take(30) {
            for contribution in projector::contribution::contributions(statement) {
                if let Some(hub) = &contribution.hub {
                    let member = key(Set::HubWorkers, hub, "", &contribution.worker);
                    if tree.insert(member, &[] as &[u8]).expect("insert").is_none() {
                        added += 1;
                    }
                }
            }
        }
        if stray {
            let hub = tree
                .scan_prefix(b"h")
                .next()
                .map(|item| String::from_utf8_lossy(&item.expect("read").0[1..]).into_owned())
                .expect("a hub");
            let member = key(Set::HubWorkers, &hub, "", "mbox:mailto:nobody@example.org");
            tree.insert(member, &[] as &[u8]).expect("insert");
        }
        assert!(tree.remove(b"mmembers5").expect("remove").is_some());
        added
    }

    /// Turns the timestamp keys of the first part into the text keys every Leerspoor before
    /// the short ones wrote (`t` + worker + 0 + time + 0 + id, `k` + worker + 0 + skill + 0 +
    /// time + 0 + id), and takes away the mark that they were shortened. `half`: only every
    /// other statement's, as an open that stopped half-way left them.
    fn timestamps_as_before(&self, tree: &sled::Db, half: bool) {
        let short: Vec<sled::IVec> = tree
            .scan_prefix([b'T'])
            .keys()
            .map(|key| key.expect("read"))
            .collect();
        let mut turned = 0;
        let step = if half { 2 } else { 1 };
        for statement in self.statements.iter().take(30).step_by(step) {
            let id = statement["id"].as_str().expect("id");
            for contribution in projector::contribution::contributions(statement) {
                let at =
                    chrono::DateTime::from_timestamp_millis(contribution.at_ms).expect("a time");
                let time = xapi::time::format_timestamp(at);
                let digest =
                    |name: &str| xxhash_rust::xxh3::xxh3_128(name.as_bytes()).to_be_bytes();
                let uuid = uuid::Uuid::parse_str(id).expect("uuid");
                let mut new = vec![b'T'];
                new.extend_from_slice(contribution.worker.as_bytes());
                new.push(0);
                let mut keys = vec![(
                    new,
                    format!("t{}\0{time}\0{id}", contribution.worker).into_bytes(),
                )];
                for skill in &contribution.skills {
                    let mut new = vec![b'E'];
                    new.extend_from_slice(contribution.worker.as_bytes());
                    new.push(0);
                    new.extend_from_slice(&digest(skill));
                    keys.push((
                        new,
                        format!("k{}\0{skill}\0{time}\0{id}", contribution.worker).into_bytes(),
                    ));
                }
                for (mut new, old) in keys {
                    new.extend_from_slice(&((contribution.at_ms as u64) ^ (1 << 63)).to_be_bytes());
                    new.extend_from_slice(uuid.as_bytes());
                    // Skills have no key of their own now: the timestamp key names them.
                    assert!(
                        new[0] == b'E' || short.iter().any(|key| key == &new[..]),
                        "{old:?} written short"
                    );
                    tree.remove(new).expect("remove");
                    tree.insert(old, &[] as &[u8]).expect("insert");
                    turned += 1;
                }
            }
        }
        assert!(turned > 20, "{turned} timestamp keys as before");
        assert!(tree.remove(b"mtimes2").expect("remove").is_some());
        // Before the short keys, skills had keys of their own too.
        assert!(tree.remove(b"mtimes3").expect("remove").is_some());
    }

    /// Gives the skills of the first part's statements keys of their own (`E` + worker + 0 +
    /// skill's digest + time + id), as every Leerspoor before the timestamp keys named them
    /// wrote them, with the timestamp keys empty, and takes away the mark that they moved.
    /// `half`: only every other timestamp key's, as an open that stopped half-way left them.
    fn skills_as_before(&self, tree: &sled::Db, half: bool) {
        let named: Vec<(sled::IVec, sled::IVec)> = tree
            .scan_prefix([b'T'])
            .map(|item| item.expect("read"))
            .filter(|(_, skills)| !skills.is_empty())
            .step_by(if half { 2 } else { 1 })
            .collect();
        let mut moved = 0;
        for (key, skills) in named {
            let end = key
                .iter()
                .position(|byte| *byte == 0)
                .expect("worker's end");
            assert_eq!(skills.len() % 16, 0, "digests of 16 bytes");
            for digest in skills.chunks_exact(16) {
                let mut old = vec![b'E'];
                old.extend_from_slice(&key[1..=end]);
                old.extend_from_slice(digest);
                old.extend_from_slice(&key[end + 1..]);
                assert!(tree.insert(old, &[] as &[u8]).expect("insert").is_none());
                moved += 1;
            }
            tree.insert(key, &[] as &[u8]).expect("insert");
        }
        assert!(moved > 10, "{moved} skill keys as before");
        assert!(tree.remove(b"mtimes3").expect("remove").is_some());
    }

    fn before(&self, projection: &Projection) {
        for (index, statement) in self.statements.iter().take(30).enumerate() {
            Self::apply(projection, index as u64 + 1, EventKind::Stored, statement);
        }
    }

    /// The first part applied to a new database in `dir`, flushed and closed; its digest.
    fn written_before(&self, dir: &std::path::Path) -> (u64, u64, String) {
        let projection = Projection::open(dir).expect("open");
        self.before(&projection);
        projection.flush().expect("flush");
        projection.digest().expect("digest")
    }

    fn after(&self, projection: &Projection) {
        for (index, statement) in self.statements.iter().enumerate().skip(30) {
            Self::apply(projection, index as u64 + 1, EventKind::Stored, statement);
        }
        Self::apply(projection, 41, EventKind::Voided, &self.statements[3]);
        Self::apply(projection, 42, EventKind::Erased, &self.statements[7]);
        Self::apply(projection, 43, EventKind::Erased, &self.statements[3]);
        // Company 1 leaves hub 1 (its only month there), company 2 the programme: the
        // distinct counts of companies and skills fall.
        let leaving = (0..40).filter(|n| (n % 4 == 1 && n % 3 == 1) || n % 4 == 2);
        for (sequence, n) in (44..).zip(leaving) {
            Self::apply(projection, sequence, EventKind::Erased, &self.statements[n]);
        }
    }

    /// Opened (and so upgraded), the database in `dir` holds what it held (`before`); the
    /// second part applied, it holds exactly `expected`.
    fn opened_and_counted_on(
        &self,
        dir: &std::path::Path,
        before: &(u64, u64, String),
        expected: &((u64, u64, String), Vec<Vec<Value>>),
    ) {
        let projection = reopen(dir);
        assert_eq!(&projection.digest().expect("digest"), before);
        self.after(&projection);
        assert_eq!(
            &(projection.digest().expect("digest"), snapshot(&projection)),
            expected
        );
    }

    /// For an open that runs to its end and one interrupted half-way: the first part written
    /// to a new database, turned by `as_before` into what an older Leerspoor (or an open
    /// that stopped, when told so) left, then opened and counted on as
    /// [`AcrossAnUpgrade::opened_and_counted_on`] says.
    fn upgraded_from(&self, as_before: impl Fn(&sled::Db, bool)) {
        let expected = self.expected();
        for interrupted in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let before = self.written_before(dir.path());
            {
                let tree = free_tree(dir.path());
                as_before(&tree, interrupted);
                states_as_json(&tree, interrupted);
                tree.flush().expect("flush");
            }
            self.opened_and_counted_on(dir.path(), &before, &expected);
        }
    }

    /// The digest and summaries of both parts applied with no upgrade between.
    fn expected(&self) -> ((u64, u64, String), Vec<Vec<Value>>) {
        let everything = tempfile::tempdir().expect("temp dir");
        let projection = Projection::open(everything.path()).expect("open");
        self.before(&projection);
        self.after(&projection);
        (projection.digest().expect("digest"), snapshot(&projection))
    }
}

/// Every summary state as JSON, as every Leerspoor before the binary states wrote them (or,
/// `interrupted`, every other one, as an open that stopped half-way through rewriting them
/// left them), without the mark that they are binary.
fn states_as_json(tree: &sled::Db, interrupted: bool) {
    use projector::summary::{CompanyState, HubState, ProgrammeState, WorkerState};
    fn json<T: serde::de::DeserializeOwned + serde::Serialize>(value: &[u8]) -> Vec<u8> {
        let state: T = projector::packed::decode(value).expect("a state");
        serde_json::to_vec(&state).expect("json")
    }
    for prefix in [b"w", b"h", b"c", b"P"] {
        let states: Vec<_> = tree
            .scan_prefix(prefix)
            .map(|item| item.expect("read"))
            .filter(|(_, value)| projector::packed::is_packed(value))
            .step_by(if interrupted { 2 } else { 1 })
            .collect();
        for (key, value) in states {
            let bytes = match prefix {
                b"w" => json::<WorkerState>(&value),
                b"h" => json::<HubState>(&value),
                b"c" => json::<CompanyState>(&value),
                _ => json::<ProgrammeState>(&value),
            };
            tree.insert(key, bytes).expect("insert");
        }
    }
    tree.remove(b"mstates1").expect("remove");
    tree.remove(b"mstates2").expect("remove");
}

/// A worker's state as the binary form's first version wrote it: the same fields, every
/// count by its name's text (a digest's 22 characters), behind the same tag.
fn first_form(state: &projector::summary::WorkerState) -> Vec<u8> {
    type Named = BTreeMap<String, u64>;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct First {
        statements: i128,
        learning_ms: i128,
        attendance: i128,
        attended_sessions: Named,
        attended_ms: i128,
        completed: Named,
        passed: Named,
        failed: Named,
        scaled_sum_micros: i128,
        scaled_count: i128,
        hubs: Named,
        skills: Named,
        months: BTreeMap<String, projector::summary::WorkerMonth>,
        memberships: Named,
    }
    let first: First =
        serde_json::from_value(serde_json::to_value(state).expect("json")).expect("first form");
    let tag = projector::packed::encode(state).expect("encoded")[0];
    postcard::to_extend(&first, vec![tag]).expect("encoded")
}

/// Workers' states write the digests they count by as their 16 bytes (6 fewer each than
/// their text), and read a state the first binary form wrote as the same state.
#[test]
fn digests_are_written_as_their_bytes_and_read_in_either_form() {
    use projector::packed::{decode, encode};
    use projector::summary::WorkerState;
    let dir = tempfile::tempdir().expect("temp dir");
    AcrossAnUpgrade::new().written_before(dir.path());
    let tree = free_tree(dir.path());
    let mut digests_seen = 0;
    for item in tree.scan_prefix(b"w") {
        let (_, value) = item.expect("read");
        let worker: WorkerState = decode(&value).expect("a state");
        let digests = [
            &worker.attended_sessions,
            &worker.completed,
            &worker.passed,
            &worker.failed,
            &worker.memberships,
        ]
        .iter()
        .map(|counts| counts.distinct())
        .sum::<usize>();
        let first = first_form(&worker);
        assert_eq!(value.len() + 6 * digests, first.len());
        let digest = worker.memberships.keys().next().expect("a membership");
        let (raw, text) = (digest.0, digest.text());
        assert!(value.windows(16).any(|bytes| bytes == raw));
        assert!(!value.windows(22).any(|bytes| bytes == text.as_bytes()));
        assert!(first.windows(22).any(|bytes| bytes == text.as_bytes()));
        assert_eq!(decode::<WorkerState>(&first), Ok(worker.clone()));
        // Written again, a state read in the first form is in the form written now.
        assert_eq!(encode(&worker).expect("encoded"), &value[..]);
        digests_seen += digests;
    }
    assert!(digests_seen > 50, "{digests_seen} digests");
}

/// Every worker's state (or, `interrupted`, every other one) as the binary form's first
/// version wrote it ([`first_form`]); without the mark that the digests are bytes. How many
/// states it rewrote.
fn digests_as_text(tree: &sled::Db, interrupted: bool) -> usize {
    let states: Vec<_> = tree
        .scan_prefix(b"w")
        .map(|item| item.expect("read"))
        .step_by(if interrupted { 2 } else { 1 })
        .collect();
    for (key, value) in &states {
        let state: projector::summary::WorkerState =
            projector::packed::decode(value).expect("a state");
        let bytes = first_form(&state);
        assert!(
            bytes.len() > value.len(),
            "{} -> {}",
            value.len(),
            bytes.len()
        );
        tree.insert(key, bytes).expect("insert");
    }
    tree.remove(b"mstates2").expect("remove");
    states.len()
}

/// A database from before hubs listed their workers from their learner groups' member keys
/// (each hub's workers had keys of their own) loses those keys at open, to exactly what
/// applying the same statements now writes, and lists and counts on to the same projection;
/// an open interrupted half-way finishes the same.
#[test]
fn hub_worker_keys_go_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, interrupted| {
        let added = upgrade.hub_workers_as_before(tree, false);
        assert!(added > 10, "{added} keys");
        if interrupted {
            // Half of them went before the open stopped.
            let keys: Vec<_> = tree
                .scan_prefix(b"ghw")
                .keys()
                .step_by(2)
                .map(|key| key.expect("read"))
                .collect();
            for key in keys {
                tree.remove(key).expect("remove");
            }
        }
    });
    // A key of a worker in none of the hub's groups: kept, and the projection rebuilt.
    let dir = tempfile::tempdir().expect("temp dir");
    upgrade.written_before(dir.path());
    {
        let tree = free_tree(dir.path());
        upgrade.hub_workers_as_before(&tree, true);
        tree.flush().expect("flush");
    }
    let projection = reopen(dir.path());
    assert!(projection.needs_rebuild().expect("read"));
}

/// Workers' states with their digests as text (the binary form's first version) are
/// rewritten at open to exactly what applying the same statements now writes (the digest of
/// the database reads every state's bytes), and count on to the same projection, voiding and
/// erasure included; an open interrupted half-way finishes the same.
#[test]
fn digests_written_as_text_are_rewritten_as_bytes_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    let expected = upgrade.expected();
    for interrupted in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let before = upgrade.written_before(dir.path());
        {
            let tree = free_tree(dir.path());
            let rewritten = digests_as_text(&tree, interrupted);
            assert!(rewritten > 3, "{rewritten} states");
            tree.flush().expect("flush");
        }
        upgrade.opened_and_counted_on(dir.path(), &before, &expected);
        let tree = free_tree(dir.path());
        assert!(tree.contains_key(b"mstates2").expect("read"));
    }
}

/// Summary states are written binary; those written as JSON before read as they were, are
/// rewritten at open to exactly what applying the same statements now writes (the digest,
/// which reads every state's bytes, says so: [`AcrossAnUpgrade::upgraded_from`] turns every
/// state into JSON first), and count on to the same projection, voiding and erasure of
/// statements counted before included; an open interrupted half-way finishes the same.
#[test]
fn states_written_as_json_are_rewritten_binary_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, _| {
        let states: Vec<_> = [&b"w"[..], b"h", b"c", b"P"]
            .into_iter()
            .flat_map(|prefix| tree.scan_prefix(prefix))
            .map(|item| item.expect("read").1)
            .collect();
        assert!(states.len() > 10, "{} states", states.len());
        assert!(states
            .iter()
            .all(|value| projector::packed::is_packed(value)));
        assert!(tree.contains_key(b"mstates1").expect("read"));
    });
}

/// A database from before the workers' memberships moved into their states (every member
/// key holding its count) is moved at open to exactly what applying the same statements
/// now writes, and counts on, voiding and erasure included, to the same projection.
#[test]
fn member_counts_of_workers_move_into_their_states_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    let expected = upgrade.expected();

    let dir = tempfile::tempdir().expect("temp dir");
    let before_move = upgrade.written_before(dir.path());
    // As an older Leerspoor left it: counts in the member keys, none in the states.
    {
        let tree = free_tree(dir.path());
        upgrade.unlisted_members_as_before(&tree);
        upgrade.timestamps_as_before(&tree, false);
        assert!(names_as_before_digests(&tree, &upgrade.statements) > 0);
        let mut moved = 0;
        for item in tree.scan_prefix(b"w") {
            let (key, value) = item.expect("read");
            let mut state: Value = serde_json::from_slice(&value).expect("worker state");
            let Some(Value::Object(memberships)) = state
                .as_object_mut()
                .and_then(|state| state.remove("memberships"))
            else {
                continue;
            };
            let worker = &key[1..];
            for (slot, count) in memberships {
                // kind, tag, id length, ':', id, qualifier
                let (tags, rest) = slot.split_at(2);
                let (length, rest) = rest.split_once(':').expect("slot");
                let (id, qualifier) = rest.split_at(length.parse().expect("length"));
                let mut member = vec![b'g'];
                member.extend_from_slice(tags.as_bytes());
                member.extend_from_slice(&(id.len() as u32).to_be_bytes());
                member.extend_from_slice(id.as_bytes());
                member.extend_from_slice(&(qualifier.len() as u32).to_be_bytes());
                member.extend_from_slice(qualifier.as_bytes());
                member.extend_from_slice(worker);
                assert_eq!(
                    tree.get(&member).expect("read").as_deref(),
                    Some(&[][..]),
                    "{slot}"
                );
                tree.insert(member, &count.as_u64().expect("count").to_be_bytes())
                    .expect("insert");
                moved += 1;
            }
            tree.insert(key, serde_json::to_vec(&state).expect("json"))
                .expect("insert");
        }
        assert!(moved > 50, "{moved} counts moved back");
        tree.remove(b"mmembers2").expect("remove");
        tree.remove(b"mdigests1").expect("remove");
        tree.flush().expect("flush");
    }
    upgrade.opened_and_counted_on(dir.path(), &before_move, &expected);
}

/// Rewrites every worker state of `tree` as a Leerspoor before the digests wrote it: sessions,
/// activities and membership slots by name. The names come from `statements` (every string
/// in them) and from the member keys of the sets of workers (a slot's name is its set's tag,
/// the id's length, `:`, the id and the qualifier). Returns how many states changed.
fn names_as_before_digests(tree: &sled::Db, statements: &[Value]) -> usize {
    fn strings(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::String(text) => into.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|item| strings(item, into)),
            Value::Object(fields) => fields.values().for_each(|item| strings(item, into)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    statements
        .iter()
        .for_each(|statement| strings(statement, &mut names));
    for item in tree.scan_prefix(b"g") {
        let (key, _) = item.expect("read");
        let (id, qualifier, _) = projector::members::parse(&key).expect("member key");
        names.push(format!(
            "{}{}{}:{id}{qualifier}",
            key[1] as char,
            key[2] as char,
            id.len()
        ));
    }
    let by_digest: BTreeMap<String, String> = names
        .into_iter()
        .map(|name| (projector::members::Digest::of(&name).text(), name))
        .collect();
    let mut changed = 0;
    for item in tree.scan_prefix(b"w") {
        let (key, value) = item.expect("read");
        let state: projector::summary::WorkerState =
            projector::packed::decode(&value).expect("worker state");
        let mut state = serde_json::to_value(state).expect("json");
        for field in [
            "attended_sessions",
            "completed",
            "passed",
            "failed",
            "memberships",
        ] {
            let Some(Value::Object(counts)) = state.get_mut(field) else {
                continue;
            };
            *counts = std::mem::take(counts)
                .into_iter()
                .map(|(digest, count)| {
                    let name = by_digest.get(&digest).expect("a name for every digest");
                    (name.clone(), count)
                })
                .collect();
        }
        let bytes = serde_json::to_vec(&state).expect("json");
        if bytes != value.as_ref() {
            changed += 1;
            tree.insert(key, bytes).expect("insert");
        }
    }
    tree.remove(b"mdigests1").expect("remove");
    changed
}

/// Workers' states written before the digests (sessions, activities and membership slots by
/// name) are digested at open to exactly what applying the same statements now writes, and
/// count on to the same projection, voiding and erasure of statements counted before
/// included; an open interrupted half-way (some states digested, the mark not written)
/// finishes the same.
#[test]
fn counted_names_are_digested_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, interrupted| {
        upgrade.unlisted_members_as_before(tree);
        upgrade.timestamps_as_before(tree, false);
        let states = tree.scan_prefix(b"w").count();
        assert_eq!(names_as_before_digests(tree, &upgrade.statements), states);
        if interrupted {
            // Half of the states as the open left them when it stopped.
            let half: Vec<_> = tree.scan_prefix(b"w").step_by(2).collect();
            for item in half {
                let (key, value) = item.expect("read");
                let mut state: projector::summary::WorkerState =
                    serde_json::from_slice(&value).expect("worker state");
                assert!(state.digest_counted());
                tree.insert(key, serde_json::to_vec(&state).expect("json"))
                    .expect("insert");
            }
        }
    });
}

/// A database from before the coarser sets were counted by their finer members (a hub's and
/// the programme's companies and a company's skills counted by statements, the programme's
/// companies per month kept as keys of their own) is counted at open to exactly what applying
/// the same statements now writes, and counts on to the same projection, companies leaving a
/// hub and the programme included; an open interrupted half-way finishes the same.
#[test]
fn coarser_sets_are_counted_by_their_finer_members_at_open() {
    use projector::members::{key, Set};
    let upgrade = AcrossAnUpgrade::new();
    // What an older Leerspoor counted: statements (one per worker they count for).
    let mut by_statements: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut per_month: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for statement in upgrade.statements.iter().take(30) {
        for contribution in projector::contribution::contributions(statement) {
            let Some(company) = &contribution.company else {
                continue;
            };
            let mut count = |key: Vec<u8>| *by_statements.entry(key).or_default() += 1;
            if let Some(hub) = &contribution.hub {
                count(key(Set::HubCompanies, hub, "", company));
            }
            count(key(Set::ProgrammeCompanies, "", "", company));
            for skill in &contribution.skills {
                count(key(Set::CompanySkills, company, "", skill));
            }
            let month = key(
                Set::ProgrammeMonthCompanies,
                "",
                &contribution.month,
                company,
            );
            *per_month.entry(month).or_default() += 1;
        }
    }
    upgrade.upgraded_from(|tree, interrupted| {
        upgrade.unlisted_members_as_before(tree);
        upgrade.timestamps_as_before(tree, false);
        let mut members = BTreeSet::new();
        for (coarser, _) in Set::COUNTED_BY_FINER {
            for item in tree.scan_prefix(projector::members::set_prefix(coarser)) {
                members.insert(item.expect("read").0.to_vec());
            }
        }
        assert_eq!(members, by_statements.keys().cloned().collect());
        let mut differ = 0;
        // Interrupted: every other key as the open left it when it stopped.
        let step = if interrupted { 2 } else { 1 };
        for (member, count) in by_statements.iter().step_by(step) {
            let kept = tree.insert(member, &count.to_be_bytes()).expect("insert");
            differ += usize::from(kept.as_deref() != Some(&count.to_be_bytes()[..]));
        }
        assert!(
            differ > 5,
            "{differ} counts differ from their finer members'"
        );
        for (member, count) in per_month.iter().step_by(step) {
            tree.insert(member, &count.to_be_bytes()).expect("insert");
        }
        assert!(tree.remove(b"mmembers3").expect("remove").is_some());
    });
}

/// Only the sets of workers that lists read keep a key per member; a database from before,
/// which kept one in every set of workers, loses the others at open (an open interrupted
/// half-way finishes the same) and counts on to the same projection.
#[test]
fn member_keys_nothing_lists_go_at_open() {
    use projector::members::{set_prefix, Set};
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, interrupted| {
        for set in Set::OF_WORKERS {
            let keys = tree.scan_prefix(set_prefix(set)).count();
            assert_eq!(keys > 0, set.listed(), "{set:?}: {keys} member keys");
        }
        upgrade.unlisted_members_as_before(tree);
        upgrade.timestamps_as_before(tree, false);
        if interrupted {
            // Every other one already removed when the open stopped.
            let unlisted: Vec<_> = Set::OF_WORKERS
                .into_iter()
                .filter(|set| !set.listed())
                .flat_map(|set| tree.scan_prefix(set_prefix(set)).keys().step_by(2))
                .collect();
            for key in unlisted {
                tree.remove(key.expect("read")).expect("remove");
            }
        }
    });
}

/// A database from before counted statements went without markers (`c` under every counted
/// statement's id) opens to exactly what applying the same statements now writes, and counts
/// on to the same projection, voiding and erasure of statements counted before included; an
/// open interrupted half-way finishes the same.
#[test]
fn counted_markers_go_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, interrupted| {
        assert_eq!(
            tree.scan_prefix(b"s").count(),
            0,
            "no markers for counted ones"
        );
        // As an older Leerspoor left it; interrupted: every other one already removed.
        let step = if interrupted { 2 } else { 1 };
        for statement in upgrade.statements.iter().take(30).step_by(step) {
            let mut marker = b"s".to_vec();
            marker.extend_from_slice(statement["id"].as_str().expect("id").as_bytes());
            tree.insert(marker, b"c").expect("insert");
        }
        assert!(tree.remove(b"mmarkers1").expect("remove").is_some());
        upgrade.timestamps_as_before(tree, false);
    });
}

/// A database from before the short timestamp keys (worker, skill, time and id as text, 96
/// and 166 bytes a key in the bench's workload) has them shortened at open, and counts on
/// to the same projection (first and last timestamps, skills first evidenced, voiding and
/// erasure of statements counted before); an open interrupted half-way finishes the same.
#[test]
fn timestamp_keys_are_shortened_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, interrupted| upgrade.timestamps_as_before(tree, interrupted));
}

/// A database from before the timestamp keys named their statements' skills (a key of its
/// own per skill and statement) has those keys moved into the timestamp keys at open, and
/// counts on to the same projection (skills first evidenced, voiding and erasure of
/// statements counted before); an open interrupted half-way finishes the same.
#[test]
fn skill_keys_move_into_the_timestamp_keys_at_open() {
    let upgrade = AcrossAnUpgrade::new();
    upgrade.upgraded_from(|tree, interrupted| upgrade.skills_as_before(tree, interrupted));
}

fn pair(page: projector::projection::ListPage) -> (u64, Vec<Value>) {
    (page.total, page.items)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A compaction copies the database while messages go on being applied to it; the copy
    /// it swaps in holds what the database it replaces holds (the digest covers every
    /// summary, marker, timestamp and member key and the applied sequence), and goes on. A
    /// copy that takes more than the database, with nothing erased before or during it, is
    /// removed instead, and the database in use goes on.
    #[test]
    fn a_compaction_while_applying_leaves_the_same_database_in_use(
        specs in prop::collection::vec(spec(), 2..40),
        split in 1usize..100,
    ) {
        let (statements, events) = statements_and_events(&specs);
        let messages: Vec<(u64, StoredEvents)> = events
            .into_iter()
            .enumerate()
            .map(|(index, stored_event)| (index as u64 + 1, StoredEvents { sequence: index as u64 + 1, events: vec![stored_event] }))
            .collect();
        let split = (messages.len() * split / 100).clamp(1, messages.len() - 1);
        let (before, meanwhile) = messages.split_at(split);
        let (last, after) = meanwhile.split_last().expect("one message after the split");
        let apply = |projection: &Projection, messages: &[(u64, StoredEvents)]| {
            for (sequence, message) in messages {
                projection.apply(*sequence, message).expect("apply");
            }
        };

        let plain_dir = tempfile::tempdir().expect("temp dir");
        let plain = Projection::open(plain_dir.path()).expect("open");
        apply(&plain, &messages);

        let data = tempfile::tempdir().expect("temp dir");
        let first = projector::rebuild::active_path(data.path());
        let current = projector::rebuild::Current::new(Projection::open(&first).expect("open"));
        apply(&current.get(), before);
        let copying = projector::compact::Copying::start(&current.get(), data.path()).expect("start");
        // Applied while the thread copies (or after it is done): noted, copied in the pause.
        apply(&current.get(), after);
        let report = copying.finish(data.path(), &current).expect("finish");
        prop_assert!(report.rounds >= 1);
        // A copy of a database this small takes more than it: swapped in only when something
        // was erased before or during it, else the database in use stays.
        let erased = messages[..messages.len() - 1].iter().any(|(_, message)| message.events.iter().any(|event| event.kind == EventKind::Erased));
        prop_assert_eq!(report.kept_back, !erased, "{} -> {} bytes", report.bytes_before, report.bytes_after);
        prop_assert_eq!(first.exists(), report.kept_back, "the database replaced is removed");
        let active = projector::rebuild::active_path(data.path());
        prop_assert_eq!(active.file_name().map(|name| name.to_string_lossy().into_owned()), Some(report.database.clone()));
        let copied = if report.kept_back { report.bytes_before } else { report.bytes_after };
        prop_assert_eq!(current.get().copied().expect("copied"), copied);
        prop_assert!(current.get().nothing_erased().expect("read") || !report.kept_back);

        // The copy goes on from where the database it replaced was.
        apply(&current.get(), std::slice::from_ref(last));
        prop_assert_eq!(current.get().digest().expect("digest"), plain.digest().expect("digest"));
        prop_assert_eq!(snapshot(&current.get()), recomputed(&statements, &specs));
        current.get().flush().expect("flush");
        drop(current);
        let reopened = reopen(&active);
        prop_assert_eq!(reopened.digest().expect("digest"), plain.digest().expect("digest"));
    }
}

/// Applies `count` statements, one a message, spread over six workers, three hubs and
/// companies, four activities, skills and months.
fn apply_spread(projection: &Projection, count: usize) {
    apply_spread_from(projection, 0, count);
}

/// [`apply_spread`]'s statements `from..from + count`, as messages `from + 1` on.
fn apply_spread_from(projection: &Projection, from: usize, count: usize) {
    for index in from..from + count {
        apply_one(
            projection,
            index as u64 + 1,
            event(EventKind::Stored, &statement(index, &spread(index))),
        );
    }
}

/// Erases [`apply_spread`]'s statement `index`, as message `sequence`.
fn erase_spread(projection: &Projection, index: usize, sequence: u64) {
    apply_one(
        projection,
        sequence,
        event(EventKind::Erased, &statement(index, &spread(index))),
    );
}

/// The spec of [`apply_spread`]'s statement `index`.
fn spread(index: usize) -> Spec {
    Spec {
        workers: vec![(index % 6) as u8],
        group: false,
        verb: index % VERBS.len(),
        activity: (index % 4) as u8,
        hub: Some((index % 3) as u8),
        company: Some((index % 3) as u8),
        duration_ms: 60_000,
        scaled: None,
        success: None,
        completion: None,
        skills: vec![(index % 4) as u8],
        month: (index % 4) as u8,
        voided: false,
        erased: false,
    }
}

/// How many sled databases (`*.sled` folders) `data_dir` holds.
fn sled_databases(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".sled"))
        .count()
}

/// A compaction given up (a rebuild came first, or a shutdown) leaves no copy behind and
/// releases the database it read; one a crash left behind goes when the projector opens.
#[test]
fn a_compaction_given_up_leaves_nothing_behind() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = projector::rebuild::active_path(data.path());
    let projection = Projection::open(&first).expect("open");
    apply_spread(&projection, 50);
    let digest = projection.digest().expect("digest");
    let copying = projector::compact::Copying::start(&projection, data.path()).expect("start");
    let copies = || {
        std::fs::read_dir(data.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("projector-")
            })
            .count()
    };
    assert_eq!(copies(), 1, "the copy is made beside the database");
    drop(copying);
    assert_eq!(copies(), 0, "a copy given up is removed");
    assert_eq!(projection.digest().expect("digest"), digest);
    projection.flush().expect("flush");
    drop(projection);
    let reopened = reopen(&first);
    assert_eq!(reopened.digest().expect("digest"), digest);

    // A crash between the copy and its swap: the half-made copy goes, the database stays.
    std::fs::create_dir(data.path().join("projector-1-2.sled")).expect("mkdir");
    std::fs::write(data.path().join("projector-1-2.sled").join("db"), b"half").expect("write");
    projector::rebuild::remove_unfinished(data.path(), &first);
    assert_eq!(copies(), 0);
    assert!(first.exists());
}

/// A projector made in sled's default segments (before `sledconf`) opens with them (sled
/// refuses another size) and reads what it held.
#[test]
fn a_projector_made_in_sleds_default_segments_opens_with_them() {
    let data = tempfile::tempdir().expect("temp dir");
    let path = projector::rebuild::active_path(data.path());
    let old = sled::Config::new()
        .path(&path)
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let projection = Projection::from_tree(old, &path, projector::projection::DEFAULT_CACHE_BYTES)
        .expect("projection");
    apply_spread(&projection, 10);
    let digest = projection.digest().expect("digest");
    projection.flush().expect("flush");
    drop(projection);
    let made_with = sledconf::segment_size(&path);
    assert!(made_with.is_some_and(|size| size != sledconf::SEGMENT_BYTES));
    let reopened = reopen(&path);
    assert_eq!(reopened.digest().expect("digest"), digest);
    drop(reopened);
    assert_eq!(sledconf::segment_size(&path), made_with);
}

/// A copy the projector started by itself is swapped in only when it gives back enough of
/// the database: one that would not (here: any copy at all, a share of 0) goes and the
/// database in use stays, due again at twice its size; after many states rewritten (sled
/// keeps what each rewrite replaced) a copy gives back a tenth and is swapped in.
#[test]
fn a_copy_started_by_itself_is_swapped_in_only_when_it_gives_back_a_tenth() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = projector::rebuild::active_path(data.path());
    let current = projector::rebuild::Current::new(Projection::open(&first).expect("open"));
    apply_spread(&current.get(), 40);
    // Swapped in whatever it takes: it takes the erased statement's bytes out.
    erase_spread(&current.get(), 0, 41);
    let asked = projector::compact::Copying::start(&current.get(), data.path())
        .expect("start")
        .finish(data.path(), &current)
        .expect("finish");
    assert!(!asked.kept_back, "a copy asked for is swapped in");
    let copied = projector::rebuild::active_path(data.path());
    assert_ne!(copied, first);
    let digest = current.get().digest().expect("digest");

    let again = projector::compact::Copying::start(&current.get(), data.path())
        .expect("start")
        .swapped_in_only_below((0, 1))
        .finish(data.path(), &current)
        .expect("finish");
    assert!(
        again.kept_back,
        "{} -> {} bytes",
        again.bytes_before, again.bytes_after
    );
    assert_eq!(projector::rebuild::active_path(data.path()), copied);
    assert_eq!(current.get().path(), copied.as_path());
    assert_eq!(again.database, asked.database);
    assert_eq!(current.get().copied().expect("copied"), again.bytes_before);
    assert_eq!(current.get().digest().expect("digest"), digest);
    let databases = || sled_databases(data.path());
    assert_eq!(databases(), 1, "the copy kept back is removed");

    apply_spread_from(&current.get(), 41, 400);
    let worth = projector::compact::Copying::start(&current.get(), data.path())
        .expect("start")
        .swapped_in_only_below(projector::compact::WORTH)
        .finish(data.path(), &current)
        .expect("finish");
    assert!(
        !worth.kept_back,
        "{} -> {} bytes",
        worth.bytes_before, worth.bytes_after
    );
    assert_ne!(projector::rebuild::active_path(data.path()), copied);
    assert_eq!(databases(), 1, "the database replaced is removed");
    assert_eq!(current.get().copied().expect("copied"), worth.bytes_after);
}

/// A compaction asked for keeps a database that holds no erased statement's bytes when its
/// copy would take more (sled's segment cleaner keeps a database in use small; a small
/// database here); after an erasure the copy is swapped in whatever it takes, and is itself
/// free of erased bytes, unless something was erased while it was made.
#[test]
fn a_copy_asked_for_is_swapped_in_when_it_takes_less_or_takes_out_erased_bytes() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = projector::rebuild::active_path(data.path());
    let current = projector::rebuild::Current::new(Projection::open(&first).expect("open"));
    assert!(current.get().nothing_erased().expect("read"), "made empty");
    apply_spread(&current.get(), 40);
    assert!(current.get().nothing_erased().expect("read"));
    let digest = current.get().digest().expect("digest");
    let compact = || {
        projector::compact::Copying::start(&current.get(), data.path())
            .expect("start")
            .finish(data.path(), &current)
            .expect("finish")
    };
    let databases = || sled_databases(data.path());

    let kept = compact();
    assert!(kept.bytes_after > kept.bytes_before, "{kept:?}");
    assert!(kept.kept_back, "{kept:?}");
    assert!(
        kept.why().contains("no erased statement's bytes"),
        "{}",
        kept.why()
    );
    assert!(
        kept.sizes().contains("kept; its copy took"),
        "{}",
        kept.sizes()
    );
    assert_eq!(projector::rebuild::active_path(data.path()), first);
    assert_eq!(databases(), 1, "the copy is removed");
    assert_eq!(current.get().digest().expect("digest"), digest);

    erase_spread(&current.get(), 3, 41);
    assert!(!current.get().nothing_erased().expect("read"));
    assert_eq!(current.get().erasures().expect("read"), 1);
    // The same erasure again changes nothing, and is not counted.
    erase_spread(&current.get(), 3, 42);
    assert_eq!(current.get().erasures().expect("read"), 1);
    let digest = current.get().digest().expect("digest");
    let scrubbed = compact();
    assert!(!scrubbed.kept_back, "{scrubbed:?}");
    // Said only when it took more (as a copy of a database this small does).
    assert_eq!(
        scrubbed.why().contains("an erasure since the last copy"),
        scrubbed.bytes_after > scrubbed.bytes_before,
        "{scrubbed:?}: {}",
        scrubbed.why()
    );
    assert!(
        !first.exists(),
        "the database with the erased bytes is removed"
    );
    assert_eq!(databases(), 1);
    assert!(
        current.get().nothing_erased().expect("read"),
        "the copy read nothing erased"
    );
    assert_eq!(current.get().digest().expect("digest"), digest);

    // Erased while the copy is made: the copy read what went, and says so.
    let copying = projector::compact::Copying::start(&current.get(), data.path()).expect("start");
    erase_spread(&current.get(), 4, 43);
    copying.finish(data.path(), &current).expect("finish");
    assert!(!current.get().nothing_erased().expect("read"));
    assert_eq!(current.get().erasures().expect("read"), 2);
}

/// `leerspoor compact` on a stopped node: the projector's database copied and swapped in with
/// nothing applied meanwhile; a folder without one is left as it is.
#[test]
fn a_stopped_projector_is_compacted_into_the_same_database() {
    let data = tempfile::tempdir().expect("temp dir");
    let cache = projector::projection::DEFAULT_CACHE_BYTES;
    const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    assert!(
        projector::compact::compact_stopped(data.path(), cache, LOCK_WAIT)
            .expect("nothing to compact")
            .is_none()
    );
    assert_eq!(std::fs::read_dir(data.path()).expect("read dir").count(), 0);

    let first = projector::rebuild::active_path(data.path());
    let projection = Projection::open(&first).expect("open");
    apply_spread(&projection, 40);
    // Swapped in whatever the copy takes.
    erase_spread(&projection, 0, 41);
    let (digest, applied) = (
        projection.digest().expect("digest"),
        projection.applied().expect("applied"),
    );
    projection.flush().expect("flush");
    drop(projection);

    let report = projector::compact::compact_stopped(data.path(), cache, LOCK_WAIT)
        .expect("compact")
        .expect("a database to compact");
    let active = projector::rebuild::active_path(data.path());
    assert_eq!(active, data.path().join(&report.database));
    assert!(!first.exists(), "the database before goes");
    assert_eq!(report.rounds, 1, "nothing written meanwhile");
    let reopened = reopen(&active);
    assert_eq!(reopened.digest().expect("digest"), digest);
    assert_eq!(reopened.applied().expect("applied"), applied);
}

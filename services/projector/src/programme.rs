//! The programme summary: companies reached against the target, as a whole, by hub type and
//! by region, per month and cumulative; workers by learner group per hub and region.
//!
//! The programme as a whole is one small record kept on every statement
//! ([`crate::summary::ProgrammeState`]). What depends on the hub registry (which hubs are
//! fieldlabs, which region each serves) is put together when asked, because the registry
//! may change after the fact: from each hub's companies' months and each hub's workers per
//! learner group (member keys). That reads every (hub, company, month) and (hub, group,
//! worker) key, seconds at hundreds of thousands of workers, so the answer is cached and
//! served from the cache: when something was applied since and the answer is older than
//! [`FRESH_FOR`], it is computed again in the background (the next answers show it; each
//! says its `applied_sequence`). Only the first question, or one with another registry or
//! target, waits for the computation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::hubs::HubEntry;
use serde_json::{json, Value};

use crate::members::{self, Set};
use crate::projection::{Projection, ProjectionError};
use crate::summary::{HubState, ProgrammeState};

/// How long an answer stands while statements keep coming in.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// A hub's type and region when it is not in the registry.
pub const UNREGISTERED: &str = "unregistered";

#[derive(Default)]
pub struct Cache {
    cached: Mutex<Option<Cached>>,
    /// A background computation is running.
    refreshing: AtomicBool,
}

#[derive(Clone)]
struct Cached {
    applied: u64,
    hubs: Vec<HubEntry>,
    target: u64,
    at: Instant,
    value: Value,
}

impl Cache {
    fn store(&self, cached: Cached) {
        *self
            .cached
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(cached);
    }
}

/// The programme summary: from the cache when it answers the same question (fresh, or being
/// refreshed in the background), else computed now.
pub fn get(
    projection: &Arc<Projection>,
    hubs: &[HubEntry],
    target: u64,
) -> Result<Value, ProjectionError> {
    let cache = &projection.programme;
    let applied = projection.applied()?;
    let found = cache
        .cached
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    if let Some(found) = found.filter(|found| found.hubs == hubs && found.target == target) {
        let stale = found.applied != applied && found.at.elapsed() >= FRESH_FOR;
        if stale && !cache.refreshing.swap(true, Ordering::SeqCst) {
            let projection = projection.clone();
            let hubs = hubs.to_vec();
            std::thread::spawn(move || {
                let started = Instant::now();
                match projection.applied().and_then(|applied| {
                    compute(&projection, &hubs, target, applied).map(|value| (applied, value))
                }) {
                    Ok((applied, value)) => projection.programme.store(Cached {
                        applied,
                        hubs,
                        target,
                        at: Instant::now(),
                        value,
                    }),
                    Err(err) => tracing::warn!(error = %err, "programme summary not refreshed"),
                }
                tracing::debug!(took = ?started.elapsed(), "programme summary refreshed");
                projection
                    .programme
                    .refreshing
                    .store(false, Ordering::SeqCst);
            });
        }
        return Ok(found.value);
    }
    let value = compute(projection, hubs, target, applied)?;
    cache.store(Cached {
        applied,
        hubs: hubs.to_vec(),
        target,
        at: Instant::now(),
        value: value.clone(),
    });
    Ok(value)
}

/// Distinct companies per month of first reach, and their running total.
fn cumulative(first_months: &HashMap<&str, String>, months: &[String]) -> Vec<Value> {
    let mut new_per_month: BTreeMap<&str, u64> = BTreeMap::new();
    for month in first_months.values() {
        *new_per_month.entry(month.as_str()).or_default() += 1;
    }
    let mut total = 0;
    months
        .iter()
        .map(|month| {
            let new = new_per_month.get(month.as_str()).copied().unwrap_or(0);
            total += new;
            json!({"month": month, "companies_new": new, "companies_reached": total})
        })
        .collect()
}

fn compute(
    projection: &Projection,
    registry: &[HubEntry],
    target: u64,
    applied: u64,
) -> Result<Value, ProjectionError> {
    let whole: ProgrammeState = projection.load_programme()?;
    let months: Vec<String> = whole.months.keys().cloned().collect();
    let registered: HashMap<&str, &HubEntry> =
        registry.iter().map(|hub| (hub.id.as_str(), hub)).collect();
    let type_of = |hub: &str| {
        registered
            .get(hub)
            .map_or(UNREGISTERED, |entry| entry.kind.as_str())
    };
    let region_of = |hub: &str| {
        registered
            .get(hub)
            .map_or(UNREGISTERED, |entry| entry.region.as_str())
    };

    // Each company's first month in the programme, at hubs of each type and in each region.
    let mut first_overall: HashMap<String, String> = HashMap::new();
    for item in projection.scan_prefix(members::set_prefix(Set::ProgrammeCompanyMonths), false) {
        let (key, _) = item?;
        if let Some((_, company, month)) = members::parse(&key) {
            // Keys are sorted by company then month: the first one seen is the first month.
            first_overall
                .entry(company.to_owned())
                .or_insert_with(|| month.to_owned());
        }
    }
    let mut by_type: BTreeMap<String, HashMap<String, String>> = BTreeMap::new();
    let mut by_region: BTreeMap<String, HashMap<String, String>> = BTreeMap::new();
    for item in projection.scan_prefix(members::set_prefix(Set::HubCompanyMonths), false) {
        let (key, _) = item?;
        let Some((hub, company, month)) = members::parse(&key) else {
            continue;
        };
        for (dimension, value) in [
            (&mut by_type, type_of(hub)),
            (&mut by_region, region_of(hub)),
        ] {
            let first = dimension
                .entry(value.to_owned())
                .or_default()
                .entry(company.to_owned())
                .or_insert_with(|| month.to_owned());
            if month < first.as_str() {
                *first = month.to_owned();
            }
        }
    }

    // Workers per learner group in each region (distinct across the region's hubs).
    // Workers by a 64-bit hash of their key: a collision among 300,000 is a one in 10^8 event,
    // and the sets stay a few MB.
    let hash = |worker: &str| xxhash_rust::xxh3::xxh3_64(worker.as_bytes());
    let mut region_groups: BTreeMap<String, BTreeMap<String, HashSet<u64>>> = BTreeMap::new();
    let mut region_workers: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    for item in projection.scan_prefix(members::set_prefix(Set::HubGroupWorkers), false) {
        let (key, _) = item?;
        let Some((hub, group, worker)) = members::parse(&key) else {
            continue;
        };
        let region = region_of(hub).to_owned();
        region_groups
            .entry(region.clone())
            .or_default()
            .entry(group.to_owned())
            .or_default()
            .insert(hash(worker));
        region_workers
            .entry(region)
            .or_default()
            .insert(hash(worker));
    }

    // Every hub with statements, and every registered one.
    let mut hubs: BTreeMap<String, Value> = BTreeMap::new();
    let mut hub_counts: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for (hub, state) in projection.hub_states()? {
        let entry = registered.get(hub.as_str());
        hubs.insert(hub.clone(), hub_row(&hub, entry.copied(), Some(&state)));
        *hub_counts
            .entry(("type", type_of(&hub).to_owned()))
            .or_default() += 1;
        *hub_counts
            .entry(("region", region_of(&hub).to_owned()))
            .or_default() += 1;
    }
    for entry in registry {
        if !hubs.contains_key(&entry.id) {
            hubs.insert(entry.id.clone(), hub_row(&entry.id, Some(entry), None));
            *hub_counts
                .entry(("type", entry.kind.as_str().to_owned()))
                .or_default() += 1;
            *hub_counts
                .entry(("region", entry.region.clone()))
                .or_default() += 1;
        }
    }

    let first_overall_ref: HashMap<&str, String> = first_overall
        .iter()
        .map(|(company, month)| (company.as_str(), month.clone()))
        .collect();
    let reach = cumulative(&first_overall_ref, &months);
    let month_rows: Vec<Value> = whole
        .months
        .iter()
        .zip(reach)
        .map(|((month, totals), reach)| {
            json!({
                "month": month,
                "statements": i64::try_from(totals.statements).unwrap_or(i64::MAX),
                "attendance": i64::try_from(totals.attendance).unwrap_or(i64::MAX),
                "workers": totals.workers,
                "companies": totals.companies,
                "companies_new": reach["companies_new"],
                "companies_reached": reach["companies_reached"],
            })
        })
        .collect();
    let dimension_rows = |name: &str,
                          dimension: &BTreeMap<String, HashMap<String, String>>,
                          extra: &dyn Fn(&str) -> Value|
     -> Vec<Value> {
        let mut values: Vec<&String> = dimension.keys().collect();
        for ((kind, value), _) in hub_counts.iter() {
            if *kind == name && !dimension.contains_key(value) {
                values.push(value);
            }
        }
        values.sort();
        values.dedup();
        values
            .into_iter()
            .map(|value| {
                let empty = HashMap::new();
                let firsts = dimension.get(value).unwrap_or(&empty);
                let firsts: HashMap<&str, String> = firsts
                    .iter()
                    .map(|(company, month)| (company.as_str(), month.clone()))
                    .collect();
                let mut row = json!({
                    name: value,
                    "hubs": hub_counts.get(&(name, value.clone())).copied().unwrap_or(0),
                    "companies_reached": firsts.len(),
                    "months": cumulative(&firsts, &months),
                });
                if let (Some(row), Value::Object(more)) = (row.as_object_mut(), extra(value)) {
                    row.extend(more);
                }
                row
            })
            .collect()
    };
    let no_extra = |_: &str| Value::Null;
    let region_extra = |region: &str| {
        let groups: BTreeMap<&String, usize> = region_groups
            .get(region)
            .map(|groups| {
                groups
                    .iter()
                    .map(|(group, workers)| (group, workers.len()))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "workers": region_workers.get(region).map_or(0, HashSet::len),
            "learner_groups": groups,
        })
    };
    let reached = whole.companies;
    Ok(json!({
        "target": target,
        "companies_reached": reached,
        "target_share": if target == 0 { 0.0 } else { reached as f64 / target as f64 },
        "workers": whole.workers,
        "statements": i64::try_from(whole.statements).unwrap_or(i64::MAX),
        "learner_groups": whole.groups,
        "months": month_rows,
        "by_type": dimension_rows("type", &by_type, &no_extra),
        "by_region": dimension_rows("region", &by_region, &region_extra),
        "hubs": hubs.into_values().collect::<Vec<_>>(),
        "applied_sequence": applied,
    }))
}

fn hub_row(hub: &str, entry: Option<&HubEntry>, state: Option<&HubState>) -> Value {
    json!({
        "hub": hub,
        "name": entry.map(|entry| entry.name.as_str()),
        "type": entry.map_or(UNREGISTERED, |entry| entry.kind.as_str()),
        "region": entry.map_or(UNREGISTERED, |entry| entry.region.as_str()),
        "workers": state.map_or(0, |state| state.workers),
        "companies": state.map_or(0, |state| state.companies),
        "learner_groups": state.map(|state| state.groups.clone()).unwrap_or_default(),
    })
}

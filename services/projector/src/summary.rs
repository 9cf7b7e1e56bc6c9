//! The summaries' state: counters that can be added to and subtracted from exactly, so a
//! voided statement takes back exactly what it gave, distinct counts and means included.
//!
//! Sums are `i128` over `i64` amounts (one statement's milliseconds saturate at `i64::MAX`,
//! some 292 million years): 2^64 statements of the largest amount still fit, so adding and
//! taking back stay exact at any extreme a statement can reach.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use crate::contribution::Contribution;
use crate::members::{Digest, Members, Set};

/// How many contributions name each value; a value with no contributions left is removed,
/// so `len()` is the distinct count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    pub fn change(&mut self, key: &str, sign: i64) {
        self.step(key, sign);
    }

    /// Adds `sign` to `key`'s count; the change in distinct values (-1, 0 or 1). One search
    /// of the map, and a key's name copied only when it comes in (a worker's memberships are
    /// stepped for every contribution: BENCHMARKS.md, the twenty-seventh round).
    pub fn step(&mut self, key: &str, sign: i64) -> i64 {
        match (sign.signum(), self.0.get_mut(key)) {
            (1, Some(count)) => {
                *count = count.saturating_add(1);
                0
            }
            (1, None) => {
                self.0.insert(key.to_owned(), 1);
                1
            }
            (-1, Some(count)) if *count > 1 => {
                *count -= 1;
                0
            }
            (-1, Some(_)) => {
                self.0.remove(key);
                -1
            }
            _ => 0,
        }
    }

    /// Sets `key`'s count (0 removes it).
    pub fn set(&mut self, key: String, count: u64) {
        if count == 0 {
            self.0.remove(&key);
        } else {
            self.0.insert(key, count);
        }
    }

    pub fn distinct(&self) -> usize {
        self.0.len()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> {
        self.0.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How many contributions name each [`Digest`]: what a worker's state only counts (its
/// slots in the sets of workers, its sessions and its completed, passed and failed
/// activities), held and written as the digests' bytes.
///
/// Written in JSON as any [`Counts`], each digest its 22 characters; in the binary form
/// ([`crate::packed`]) each digest as its 16 bytes, which takes a worker's state of the
/// bench's workload from ~1,030 bytes to ~800 (BENCHMARKS.md, the thirty-second round).
/// Reads both forms and what came before them: 16 bytes are a digest, text is a digest's
/// 22 characters (the binary form's first version) or a name not digested yet (a state
/// from before the digests), which is counted under its digest, counts that meet adding up.
#[derive(Debug, Clone, Default)]
pub struct DigestCounts {
    counts: BTreeMap<Digest, u64>,
    /// Read with names not digested yet: the state is written back once
    /// ([`WorkerState::digest_counted`]).
    read_named: bool,
}

impl PartialEq for DigestCounts {
    fn eq(&self, other: &DigestCounts) -> bool {
        self.counts == other.counts
    }
}

impl DigestCounts {
    /// Adds `sign` to `digest`'s count; the change in distinct values (-1, 0 or 1).
    pub fn step(&mut self, digest: Digest, sign: i64) -> i64 {
        match (sign.signum(), self.counts.entry(digest)) {
            (1, Entry::Occupied(mut count)) => {
                *count.get_mut() = count.get().saturating_add(1);
                0
            }
            (1, Entry::Vacant(entry)) => {
                entry.insert(1);
                1
            }
            (-1, Entry::Occupied(mut count)) if *count.get() > 1 => {
                *count.get_mut() -= 1;
                0
            }
            (-1, Entry::Occupied(count)) => {
                count.remove();
                -1
            }
            _ => 0,
        }
    }

    /// Sets `digest`'s count (0 removes it).
    pub fn set(&mut self, digest: Digest, count: u64) {
        if count == 0 {
            self.counts.remove(&digest);
        } else {
            self.counts.insert(digest, count);
        }
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Digest> {
        self.counts.keys()
    }

    fn add(&mut self, digest: Digest, count: u64) {
        let total = self.counts.entry(digest).or_default();
        *total = total.saturating_add(count);
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.text())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl Serialize for DigestCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(&self.counts)
    }
}

/// A key of [`DigestCounts`] as read: a digest, or the digest of a name not digested yet.
enum Key {
    Digest(Digest),
    Named(Digest),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a digest's 16 bytes or a name")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Key, E> {
                match <[u8; 16]>::try_from(bytes) {
                    Ok(raw) => Ok(Key::Digest(Digest(raw))),
                    Err(_) => std::str::from_utf8(bytes)
                        .map_err(|_| E::custom("a counted name that is not UTF-8"))
                        .and_then(|text| self.visit_str(text)),
                }
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Key, E> {
                Ok(match Digest::parse(text) {
                    Some(digest) => Key::Digest(digest),
                    None => Key::Named(Digest::of(text)),
                })
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(KeyVisitor)
        } else {
            deserializer.deserialize_bytes(KeyVisitor)
        }
    }
}

impl<'de> Deserialize<'de> for DigestCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DigestCounts, D::Error> {
        struct CountsVisitor;
        impl<'de> Visitor<'de> for CountsVisitor {
            type Value = DigestCounts;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("counts by digest")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut entries: A,
            ) -> Result<DigestCounts, A::Error> {
                let mut counts = DigestCounts::default();
                while let Some((key, count)) = entries.next_entry::<Key, u64>()? {
                    match key {
                        // Only names meet a digest already read.
                        Key::Digest(digest) if !counts.read_named => {
                            if counts.counts.insert(digest, count).is_some() {
                                return Err(A::Error::custom("a digest counted twice"));
                            }
                        }
                        Key::Digest(digest) => counts.add(digest, count),
                        Key::Named(digest) => {
                            counts.read_named = true;
                            counts.add(digest, count);
                        }
                    }
                }
                Ok(counts)
            }
        }
        deserializer.deserialize_map(CountsVisitor)
    }
}

fn add(total: &mut i128, amount: i64, sign: i64) {
    *total += i128::from(sign) * i128::from(amount);
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerMonth {
    pub statements: i128,
    pub learning_ms: i128,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    pub statements: i128,
    pub learning_ms: i128,
    pub attendance: i128,
    /// By [`crate::members::Digest`] of the session (the attended activity), as the three
    /// sets of activities below by digest of the activity: only counted, never listed.
    pub attended_sessions: DigestCounts,
    pub attended_ms: i128,
    pub completed: DigestCounts,
    pub passed: DigestCounts,
    pub failed: DigestCounts,
    pub scaled_sum_micros: i128,
    pub scaled_count: i128,
    pub hubs: Counts,
    pub skills: Counts,
    pub months: BTreeMap<String, WorkerMonth>,
    /// This worker's counts in the sets of workers ([`Set::OF_WORKERS`], named by
    /// [`crate::members::slot`], a digest): how many of their statements put them in each.
    #[serde(default)]
    pub memberships: DigestCounts,
}

impl WorkerState {
    pub fn apply(&mut self, contribution: &Contribution, sign: i64) {
        add(&mut self.statements, 1, sign);
        add(&mut self.learning_ms, contribution.learning_ms, sign);
        if let Some(session) = &contribution.attended {
            add(&mut self.attendance, 1, sign);
            self.attended_sessions.step(Digest::of(session), sign);
            add(&mut self.attended_ms, contribution.learning_ms, sign);
        }
        for (counts, activity) in [
            (&mut self.completed, &contribution.completed),
            (&mut self.passed, &contribution.passed),
            (&mut self.failed, &contribution.failed),
        ] {
            if let Some(activity) = activity {
                counts.step(Digest::of(activity), sign);
            }
        }
        if let Some(scaled) = contribution.scaled_micros {
            add(&mut self.scaled_sum_micros, scaled, sign);
            add(&mut self.scaled_count, 1, sign);
        }
        if let Some(hub) = &contribution.hub {
            self.hubs.change(hub, sign);
        }
        for skill in &contribution.skills {
            self.skills.change(skill, sign);
        }
        let month = self.months.entry(contribution.month.clone()).or_default();
        add(&mut month.statements, 1, sign);
        add(&mut month.learning_ms, contribution.learning_ms, sign);
        if month.statements == 0 {
            self.months.remove(&contribution.month);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.statements == 0
    }

    /// Whether this state was read with names it only counts not digested yet (a state written
    /// before the digests): they are counted by digest since they were read, and the state is
    /// to be written back (once; the flag is cleared).
    pub fn digest_counted(&mut self) -> bool {
        let mut changed = false;
        for counts in [
            &mut self.attended_sessions,
            &mut self.completed,
            &mut self.passed,
            &mut self.failed,
            &mut self.memberships,
        ] {
            changed |= std::mem::take(&mut counts.read_named);
        }
        changed
    }

    /// The numeric fields a list of workers can be sorted by, as in the view.
    pub const SORTABLE: [&'static str; 9] = [
        "statements",
        "learning_seconds",
        "attendance",
        "attended_sessions",
        "attended_seconds",
        "completed_activities",
        "passed_activities",
        "failed_activities",
        "mean_scaled_score",
    ];

    /// The values of [`Self::SORTABLE`], in its order (a missing mean sorts lowest).
    pub fn sort_values(&self) -> Vec<f64> {
        let mean = if self.scaled_count > 0 {
            self.scaled_sum_micros as f64 / self.scaled_count as f64 / 1e6
        } else {
            f64::MIN
        };
        vec![
            whole(self.statements) as f64,
            seconds(self.learning_ms),
            whole(self.attendance) as f64,
            self.attended_sessions.distinct() as f64,
            seconds(self.attended_ms),
            self.completed.distinct() as f64,
            self.passed.distinct() as f64,
            self.failed.distinct() as f64,
            mean,
        ]
    }

    /// The view; `first` and `last` come from the projection's timestamp keys, which grow
    /// with the statements and so are not kept in this state.
    pub fn view(
        &self,
        worker: &str,
        months: &MonthRange,
        first: Option<String>,
        last: Option<String>,
    ) -> Value {
        let mean = (self.scaled_count > 0)
            .then(|| self.scaled_sum_micros as f64 / self.scaled_count as f64 / 1e6);
        json!({
            "worker": worker,
            "statements": whole(self.statements),
            "first": first,
            "last": last,
            "learning_seconds": seconds(self.learning_ms),
            "attendance": whole(self.attendance),
            "attended_sessions": self.attended_sessions.distinct(),
            "attended_seconds": seconds(self.attended_ms),
            "completed_activities": self.completed.distinct(),
            "passed_activities": self.passed.distinct(),
            "failed_activities": self.failed.distinct(),
            "mean_scaled_score": mean,
            "hubs": self.hubs.keys().collect::<Vec<_>>(),
            "skills": self.skills.keys().collect::<Vec<_>>(),
            "months": self.months.iter().filter(|(month, _)| months.contains(month)).map(|(month, totals)| json!({
                "month": month,
                "statements": whole(totals.statements),
                "learning_seconds": seconds(totals.learning_ms),
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HubMonth {
    pub attendance: i128,
    /// Distinct workers with any statement at the hub that month (members: [`Set::HubMonthWorkers`]).
    pub workers: u64,
    /// Distinct workers per skill evidenced at the hub that month.
    #[serde(default)]
    pub skills: BTreeMap<String, u64>,
}

/// A hub's counters. Its distinct counts keep their members outside (see [`crate::members`]),
/// so the state stays small however many workers the hub reaches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HubState {
    pub workers: u64,
    pub companies: u64,
    pub statements: i128,
    pub attendance: i128,
    pub attended_ms: i128,
    pub sessions: u64,
    pub completions: i128,
    pub passed: i128,
    pub months: BTreeMap<String, HubMonth>,
    /// Distinct workers per learner group (`youth`, `worker`, `jobseeker`, `unknown`).
    #[serde(default)]
    pub groups: BTreeMap<String, u64>,
    /// Distinct workers per skill evidenced at the hub.
    #[serde(default)]
    pub skills: BTreeMap<String, u64>,
}

/// Moves a per-key distinct count, dropping the key at zero.
fn shift_entry(map: &mut BTreeMap<String, u64>, key: &str, change: i64) {
    let count = map.entry(key.to_owned()).or_default();
    *count = shift(*count, change);
    if *count == 0 {
        map.remove(key);
    }
}

/// Skills ranked by how many distinct workers hold them, most first (ties by URI).
fn ranked(skills: &BTreeMap<String, u64>) -> Vec<Value> {
    let mut ranked: Vec<(&String, &u64)> = skills.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .map(|(skill, workers)| json!({"skill": skill, "workers": workers}))
        .collect()
}

/// A distinct count moved by a member change.
fn shift(count: u64, change: i64) -> u64 {
    count.saturating_add_signed(change)
}

impl HubState {
    pub fn apply<M: Members>(
        &mut self,
        hub: &str,
        contribution: &Contribution,
        sign: i64,
        members: &mut M,
    ) -> Result<(), M::Error> {
        let worker = &contribution.worker;
        self.workers = shift(
            self.workers,
            members.change(Set::HubWorkers, hub, "", worker, sign)?,
        );
        if let Some(company) = &contribution.company {
            let months = members.change(
                Set::HubCompanyMonths,
                hub,
                company,
                &contribution.month,
                sign,
            )?;
            // Counted by its months at the hub: written when it gains or loses one.
            self.companies = shift(
                self.companies,
                members.change(Set::HubCompanies, hub, "", company, months)?,
            );
        }
        add(&mut self.statements, 1, sign);
        if contribution.completed.is_some() {
            add(&mut self.completions, 1, sign);
        }
        if contribution.passed.is_some() {
            add(&mut self.passed, 1, sign);
        }
        let group = self
            .groups
            .entry(contribution.learner_group.clone())
            .or_default();
        *group = shift(
            *group,
            members.change(
                Set::HubGroupWorkers,
                hub,
                &contribution.learner_group,
                worker,
                sign,
            )?,
        );
        if *group == 0 {
            self.groups.remove(&contribution.learner_group);
        }
        let month = self.months.entry(contribution.month.clone()).or_default();
        // Every statement at the hub that month: the same population as the hub's `workers`.
        month.workers = shift(
            month.workers,
            members.change(Set::HubMonthWorkers, hub, &contribution.month, worker, sign)?,
        );
        for skill in &contribution.skills {
            let change = members.change(Set::HubSkillWorkers, hub, skill, worker, sign)?;
            shift_entry(&mut self.skills, skill, change);
            let qualifier = format!("{} {skill}", contribution.month);
            let change =
                members.change(Set::HubMonthSkillWorkers, hub, &qualifier, worker, sign)?;
            shift_entry(&mut month.skills, skill, change);
        }
        if let Some(session) = &contribution.attended {
            add(&mut self.attendance, 1, sign);
            add(&mut self.attended_ms, contribution.learning_ms, sign);
            self.sessions = shift(
                self.sessions,
                members.change(Set::HubSessions, hub, "", session, sign)?,
            );
            add(&mut month.attendance, 1, sign);
        }
        if month.attendance == 0 && month.workers == 0 && month.skills.is_empty() {
            self.months.remove(&contribution.month);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.statements == 0
    }

    /// The numeric fields a list of hubs can be sorted by, as in the view.
    pub const SORTABLE: [&'static str; 8] = [
        "workers",
        "companies",
        "statements",
        "attendance",
        "attended_seconds",
        "sessions",
        "completions",
        "passed",
    ];

    pub fn sort_values(&self) -> Vec<f64> {
        vec![
            self.workers as f64,
            self.companies as f64,
            whole(self.statements) as f64,
            whole(self.attendance) as f64,
            seconds(self.attended_ms),
            self.sessions as f64,
            whole(self.completions) as f64,
            whole(self.passed) as f64,
        ]
    }

    pub fn view(&self, hub: &str, months: &MonthRange) -> Value {
        json!({
            "hub": hub,
            "workers": self.workers,
            "companies": self.companies,
            "statements": whole(self.statements),
            "attendance": whole(self.attendance),
            "attended_seconds": seconds(self.attended_ms),
            "sessions": self.sessions,
            "completions": whole(self.completions),
            "passed": whole(self.passed),
            "learner_groups": self.groups,
            "skill_workers": ranked(&self.skills),
            "months": self.months.iter().filter(|(month, _)| months.contains(month)).map(|(month, totals)| json!({
                "month": month,
                "attendance": whole(totals.attendance),
                "workers": totals.workers,
                "skill_workers": ranked(&totals.skills),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A company's counters; its distinct counts keep their members outside, like a hub's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompanyState {
    pub workers: u64,
    pub statements: i128,
    pub learning_ms: i128,
    pub completed: u64,
    pub skills: u64,
    /// Distinct workers per skill evidenced.
    #[serde(default)]
    pub skill_workers: BTreeMap<String, u64>,
    /// Statements and skills (distinct workers) per month.
    #[serde(default)]
    pub months: BTreeMap<String, CompanyMonth>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompanyMonth {
    pub statements: i128,
    #[serde(default)]
    pub skills: BTreeMap<String, u64>,
}

impl CompanyState {
    pub fn apply<M: Members>(
        &mut self,
        company: &str,
        contribution: &Contribution,
        sign: i64,
        members: &mut M,
    ) -> Result<(), M::Error> {
        self.workers = shift(
            self.workers,
            members.change(Set::CompanyWorkers, company, "", &contribution.worker, sign)?,
        );
        add(&mut self.statements, 1, sign);
        add(&mut self.learning_ms, contribution.learning_ms, sign);
        let month = self.months.entry(contribution.month.clone()).or_default();
        add(&mut month.statements, 1, sign);
        for skill in &contribution.skills {
            let qualifier = format!("{} {skill}", contribution.month);
            let change = members.change(
                Set::CompanyMonthSkillWorkers,
                company,
                &qualifier,
                &contribution.worker,
                sign,
            )?;
            shift_entry(&mut month.skills, skill, change);
        }
        if month.statements == 0 && month.skills.is_empty() {
            self.months.remove(&contribution.month);
        }
        if let Some(activity) = &contribution.completed {
            self.completed = shift(
                self.completed,
                members.change(Set::CompanyCompleted, company, "", activity, sign)?,
            );
        }
        for skill in &contribution.skills {
            let workers = members.change(
                Set::CompanySkillWorkers,
                company,
                skill,
                &contribution.worker,
                sign,
            )?;
            shift_entry(&mut self.skill_workers, skill, workers);
            // Counted by its workers: written when one starts or stops evidencing it.
            self.skills = shift(
                self.skills,
                members.change(Set::CompanySkills, company, "", skill, workers)?,
            );
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.statements == 0
    }

    /// The numeric fields a list of companies can be sorted by, as in the view.
    pub const SORTABLE: [&'static str; 5] = [
        "workers",
        "statements",
        "learning_seconds",
        "completed_activities",
        "skills",
    ];

    pub fn sort_values(&self) -> Vec<f64> {
        vec![
            self.workers as f64,
            whole(self.statements) as f64,
            seconds(self.learning_ms),
            self.completed as f64,
            self.skills as f64,
        ]
    }

    pub fn view(&self, company: &str) -> Value {
        json!({
            "company": company,
            "workers": self.workers,
            "statements": whole(self.statements),
            "learning_seconds": seconds(self.learning_ms),
            "completed_activities": self.completed,
            "skills": self.skills,
            "skill_workers": ranked(&self.skill_workers),
            "months": self.months.iter().map(|(month, totals)| json!({
                "month": month,
                "statements": whole(totals.statements),
                "skill_workers": ranked(&totals.skills),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The programme as a whole: its distinct workers and companies, workers per learner group,
/// and per month the attendance, statements and distinct workers and companies. One small
/// record, whatever the programme's size (members in [`crate::members`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgrammeState {
    pub workers: u64,
    pub companies: u64,
    pub statements: i128,
    pub groups: BTreeMap<String, u64>,
    pub months: BTreeMap<String, ProgrammeMonth>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgrammeMonth {
    pub statements: i128,
    pub attendance: i128,
    pub workers: u64,
    pub companies: u64,
}

impl ProgrammeState {
    pub fn apply<M: Members>(
        &mut self,
        contribution: &Contribution,
        sign: i64,
        members: &mut M,
    ) -> Result<(), M::Error> {
        let worker = &contribution.worker;
        let month_key = &contribution.month;
        add(&mut self.statements, 1, sign);
        self.workers = shift(
            self.workers,
            members.change(Set::ProgrammeWorkers, "", "", worker, sign)?,
        );
        let group = members.change(
            Set::ProgrammeGroupWorkers,
            "",
            &contribution.learner_group,
            worker,
            sign,
        )?;
        shift_entry(&mut self.groups, &contribution.learner_group, group);
        let month = self.months.entry(month_key.clone()).or_default();
        add(&mut month.statements, 1, sign);
        if contribution.attended.is_some() {
            add(&mut month.attendance, 1, sign);
        }
        month.workers = shift(
            month.workers,
            members.change(Set::ProgrammeMonthWorkers, "", month_key, worker, sign)?,
        );
        if let Some(company) = &contribution.company {
            let months =
                members.change(Set::ProgrammeCompanyMonths, "", company, month_key, sign)?;
            // A month's companies are the companies' months turned around.
            month.companies = shift(month.companies, months);
            // Counted by their months: written when a company gains or loses one.
            self.companies = shift(
                self.companies,
                members.change(Set::ProgrammeCompanies, "", "", company, months)?,
            );
        }
        if month.statements == 0 {
            self.months.remove(month_key);
        }
        Ok(())
    }
}

/// How a hub and a company were kept before their members moved out (read once, by the
/// migration at open).
pub mod legacy {
    use super::*;

    #[derive(Debug, Clone, Default, Deserialize)]
    pub struct HubMonth {
        pub attendance: i128,
        pub workers: Counts,
    }

    #[derive(Debug, Clone, Default, Deserialize)]
    pub struct HubState {
        pub workers: Counts,
        pub companies: Counts,
        pub statements: i128,
        pub attendance: i128,
        pub attended_ms: i128,
        pub sessions: Counts,
        pub completions: i128,
        pub passed: i128,
        pub months: BTreeMap<String, HubMonth>,
    }

    #[derive(Debug, Clone, Default, Deserialize)]
    pub struct CompanyState {
        pub workers: Counts,
        pub statements: i128,
        pub learning_ms: i128,
        pub completed: Counts,
        pub skills: Counts,
    }

    /// The state as it is kept now, and its member counts.
    pub fn hub(id: &str, old: HubState) -> (super::HubState, Vec<(Vec<u8>, u64)>) {
        let mut members = Vec::new();
        let mut keep = |set: Set, month: &str, counts: &Counts| {
            for (member, count) in &counts.0 {
                members.push((crate::members::key(set, id, month, member), *count));
            }
            counts.distinct() as u64
        };
        let state = super::HubState {
            workers: keep(Set::HubWorkers, "", &old.workers),
            companies: keep(Set::HubCompanies, "", &old.companies),
            statements: old.statements,
            attendance: old.attendance,
            attended_ms: old.attended_ms,
            sessions: keep(Set::HubSessions, "", &old.sessions),
            completions: old.completions,
            passed: old.passed,
            months: old
                .months
                .iter()
                .map(|(month, totals)| {
                    (
                        month.clone(),
                        super::HubMonth {
                            attendance: totals.attendance,
                            workers: keep(Set::HubMonthWorkers, month, &totals.workers),
                            skills: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            groups: BTreeMap::new(),
            skills: BTreeMap::new(),
        };
        (state, members)
    }

    pub fn company(id: &str, old: CompanyState) -> (super::CompanyState, Vec<(Vec<u8>, u64)>) {
        let mut members = Vec::new();
        let mut keep = |set: Set, counts: &Counts| {
            for (member, count) in &counts.0 {
                members.push((crate::members::key(set, id, "", member), *count));
            }
            counts.distinct() as u64
        };
        let state = super::CompanyState {
            workers: keep(Set::CompanyWorkers, &old.workers),
            statements: old.statements,
            learning_ms: old.learning_ms,
            completed: keep(Set::CompanyCompleted, &old.completed),
            skills: keep(Set::CompanySkills, &old.skills),
            skill_workers: BTreeMap::new(),
            months: BTreeMap::new(),
        };
        (state, members)
    }
}

/// A count as JSON: counts never pass `i64` (each is at most the number of statements), and
/// `json!` refuses larger integers.
fn whole(count: i128) -> i64 {
    i64::try_from(count).unwrap_or(if count < 0 { i64::MIN } else { i64::MAX })
}

fn seconds(milliseconds: i128) -> f64 {
    milliseconds as f64 / 1000.0
}

/// `from`/`to` months (inclusive, `YYYY-MM`) of a month series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl MonthRange {
    pub fn contains(&self, month: &str) -> bool {
        self.from.as_deref().is_none_or(|from| month >= from)
            && self.to.as_deref().is_none_or(|to| month <= to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Counts stepped up and down hold what a plain tally holds, without its zeros, and
        /// each step says how the number of distinct names changed.
        #[test]
        fn a_step_keeps_the_tally_and_says_the_distinct_change(
            steps in prop::collection::vec((0u8..4, -1i64..=1), 0..40),
        ) {
            let mut counts = Counts::default();
            let mut tally: BTreeMap<String, u64> = BTreeMap::new();
            for (name, sign) in steps {
                let name = format!("n{name}");
                let before = tally.len();
                let count = tally.entry(name.clone()).or_default();
                *count = count.saturating_add_signed(sign);
                tally.retain(|_, count| *count > 0);
                let change = i64::try_from(tally.len()).unwrap_or(0)
                    - i64::try_from(before).unwrap_or(0);
                prop_assert_eq!(counts.step(&name, sign), change);
                prop_assert_eq!(&counts.0, &tally);
            }
        }
    }

    #[test]
    fn counted_names_are_digested_once_and_their_counts_kept() {
        let activity = "https://hub.example/activities/1";
        let other = Digest::of("https://hub.example/activities/2");
        let named = json!({
            activity: 2, Digest::of(activity).text(): 1, other.text(): 4,
            // 22 characters of base64 that no 16 bytes are: a name.
            "CCCCCCCCCCCCCCCCCCCCCC": 5
        });
        let mut expected = DigestCounts::default();
        expected.set(Digest::of(activity), 3);
        expected.set(other, 4);
        expected.set(Digest::of("CCCCCCCCCCCCCCCCCCCCCC"), 5);
        let mut read: DigestCounts = serde_json::from_value(named).expect("counts");
        assert_eq!(read, expected);
        assert!(std::mem::take(&mut read.read_named));
        let again: DigestCounts =
            serde_json::from_value(serde_json::to_value(&read).expect("json")).expect("read");
        assert_eq!(again, expected);
        assert!(!again.read_named, "a digest is never digested again");
    }

    #[test]
    fn a_digest_counted_twice_in_the_binary_form_does_not_read() {
        let digest = Digest::of("https://hub.example/activities/1");
        let mut bytes = postcard::to_extend(&DigestCounts::default(), Vec::new()).expect("empty");
        bytes[0] = 2;
        for _ in 0..2 {
            bytes.extend(postcard::to_extend(&(digest, 1u64), Vec::new()).expect("entry"));
        }
        assert!(postcard::from_bytes::<DigestCounts>(&bytes).is_err());
        bytes[0] = 1;
        bytes.truncate(bytes.len() - 18);
        assert_eq!(
            postcard::from_bytes::<DigestCounts>(&bytes).map(|read| read.distinct()),
            Ok(1)
        );
    }
}

//! The summaries' state: counters that can be added to and subtracted from exactly, so a
//! voided statement takes back exactly what it gave, distinct counts and means included.
//!
//! Sums are `i128` over `i64` amounts (one statement's milliseconds saturate at `i64::MAX`,
//! some 292 million years): 2^64 statements of the largest amount still fit, so adding and
//! taking back stay exact at any extreme a statement can reach.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::contribution::Contribution;
use crate::members::{Members, Set};

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

    /// The same counts under [`crate::members::digest`]s of the names not digested yet
    /// (counts of names that meet under one digest add up); whether any name changed.
    pub fn digested(&mut self) -> bool {
        if self.0.keys().all(|name| crate::members::is_digest(name)) {
            return false;
        }
        let mut digested: BTreeMap<String, u64> = BTreeMap::new();
        for (name, count) in std::mem::take(&mut self.0) {
            let name = if crate::members::is_digest(&name) {
                name
            } else {
                crate::members::digest(&name)
            };
            let total = digested.entry(name).or_default();
            *total = total.saturating_add(count);
        }
        self.0 = digested;
        true
    }
}

/// How a state's counts by [`crate::members::digest`] are written (`#[serde(with)]`): in JSON
/// as any [`Counts`], each digest its 22 characters; in the binary form ([`crate::packed`])
/// each digest as its 16 bytes, which takes a worker's state of the bench's workload from
/// ~1,030 bytes to ~800 (BENCHMARKS.md, the thirty-second round). A name not digested yet (a
/// state from before the digests) is written as its digest, counts that meet adding up, as
/// [`Counts::digested`] does. Reads both forms: 16 bytes are a digest, anything else is text
/// as the binary form's first version wrote it. Each form's bytes are the same for the same
/// counts, so replicas' digests of their databases still compare.
pub(crate) mod by_digest {
    use std::collections::BTreeMap;

    use serde::de::{Error as _, MapAccess, Visitor};
    use serde::ser::{Error as _, SerializeMap};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Counts;
    use crate::members::{bytes_of_digest, digest_bytes, digest_text};

    /// A digest's bytes, written as bytes (postcard: their length, then them).
    struct Raw([u8; 16]);

    impl Serialize for Raw {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }

    pub fn serialize<S: Serializer>(counts: &Counts, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return counts.serialize(serializer);
        }
        let raw: Option<Vec<([u8; 16], u64)>> = counts
            .0
            .iter()
            .map(|(name, count)| Some((bytes_of_digest(name)?, *count)))
            .collect();
        let raw = match raw {
            Some(raw) => raw,
            None => {
                let mut merged: BTreeMap<[u8; 16], u64> = BTreeMap::new();
                for (name, count) in &counts.0 {
                    let key = bytes_of_digest(name).unwrap_or_else(|| digest_bytes(name));
                    let total = merged.entry(key).or_default();
                    *total = total
                        .checked_add(*count)
                        .ok_or_else(|| S::Error::custom("a count past u64"))?;
                }
                merged.into_iter().collect()
            }
        };
        let mut map = serializer.serialize_map(Some(raw.len()))?;
        for (key, count) in raw {
            map.serialize_entry(&Raw(key), &count)?;
        }
        map.end()
    }

    /// A key as the binary form holds it: a digest's 16 bytes, or text.
    struct Key(String);

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
                        Ok(raw) => Ok(Key(digest_text(&raw))),
                        Err(_) => std::str::from_utf8(bytes)
                            .map(|text| Key(text.to_owned()))
                            .map_err(|_| E::custom("a counted name that is not UTF-8")),
                    }
                }

                fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Key, E> {
                    Ok(Key(text.to_owned()))
                }
            }
            deserializer.deserialize_bytes(KeyVisitor)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Counts, D::Error> {
        if deserializer.is_human_readable() {
            return Counts::deserialize(deserializer);
        }
        struct CountsVisitor;
        impl<'de> Visitor<'de> for CountsVisitor {
            type Value = Counts;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("counts by digest")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Counts, A::Error> {
                let mut counts = BTreeMap::new();
                while let Some((Key(name), count)) = entries.next_entry::<Key, u64>()? {
                    if counts.insert(name, count).is_some() {
                        return Err(A::Error::custom("a digest counted twice"));
                    }
                }
                Ok(Counts(counts))
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
    /// By [`crate::members::digest`] of the session (the attended activity), as the three
    /// sets of activities below by digest of the activity: only counted, never listed.
    #[serde(with = "by_digest")]
    pub attended_sessions: Counts,
    pub attended_ms: i128,
    #[serde(with = "by_digest")]
    pub completed: Counts,
    #[serde(with = "by_digest")]
    pub passed: Counts,
    #[serde(with = "by_digest")]
    pub failed: Counts,
    pub scaled_sum_micros: i128,
    pub scaled_count: i128,
    pub hubs: Counts,
    pub skills: Counts,
    pub months: BTreeMap<String, WorkerMonth>,
    /// This worker's counts in the sets of workers ([`Set::OF_WORKERS`], named by
    /// [`crate::members::slot`], a digest): how many of their statements put them in each.
    #[serde(default, with = "by_digest")]
    pub memberships: Counts,
}

impl WorkerState {
    pub fn apply(&mut self, contribution: &Contribution, sign: i64) {
        add(&mut self.statements, 1, sign);
        add(&mut self.learning_ms, contribution.learning_ms, sign);
        if let Some(session) = &contribution.attended {
            add(&mut self.attendance, 1, sign);
            self.attended_sessions
                .change(&crate::members::digest(session), sign);
            add(&mut self.attended_ms, contribution.learning_ms, sign);
        }
        for (counts, activity) in [
            (&mut self.completed, &contribution.completed),
            (&mut self.passed, &contribution.passed),
            (&mut self.failed, &contribution.failed),
        ] {
            if let Some(activity) = activity {
                counts.change(&crate::members::digest(activity), sign);
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

    /// Names what this state only counts by digests ([`crate::members::digest`]), as a
    /// state written before them did not; whether anything changed.
    pub fn digest_counted(&mut self) -> bool {
        let mut changed = false;
        for counts in [
            &mut self.attended_sessions,
            &mut self.completed,
            &mut self.passed,
            &mut self.failed,
            &mut self.memberships,
        ] {
            changed |= counts.digested();
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
        let other = crate::members::digest("https://hub.example/activities/2");
        let mut counts = Counts::default();
        counts.set(activity.to_owned(), 2);
        counts.set(crate::members::digest(activity), 1);
        counts.set(other.clone(), 4);
        assert!(counts.digested());
        let mut expected = Counts::default();
        expected.set(crate::members::digest(activity), 3);
        expected.set(other, 4);
        assert_eq!(counts, expected);
        assert!(!counts.digested(), "a digest is never digested again");
        assert_eq!(counts, expected);
        assert!(!crate::members::is_digest(activity));
        assert!(!crate::members::is_digest(
            "3f1e0f0c-5b8f-4c41-9d0e-6f3b1a2c4d5e"
        ));
    }
}

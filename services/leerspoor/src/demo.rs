//! `leerspoor demo`: realistic LLO statements for a new installation, so summaries have
//! something to show. Publishes over HTTP (as e-learning tools do) and, given a NATS URL,
//! straight to hub subjects (as check-in kiosks do), and voids a few.

use anyhow::Context as _;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The xAPI endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/xapi")]
    pub endpoint: String,
    #[arg(long, default_value = crate::config::DEMO_KEY)]
    pub key: String,
    #[arg(long, default_value = crate::config::DEMO_SECRET)]
    pub secret: String,
    /// How many statements.
    #[arg(long, default_value_t = 3000)]
    pub statements: usize,
    /// Also publish a third of them on `lrs.in.hub.<hub>` through this NATS.
    #[arg(long)]
    pub hub_nats_url: Option<String>,
}

pub const HUBS: [&str; 12] = [
    "eindhoven",
    "delft",
    "twente",
    "groningen",
    "zwolle",
    "tilburg",
    "venlo",
    "breda",
    "arnhem",
    "leiden",
    "almere",
    "utrecht",
];
const VERBS: [&str; 6] = [
    "http://adlnet.gov/expapi/verbs/attended",
    "http://adlnet.gov/expapi/verbs/attended",
    "http://adlnet.gov/expapi/verbs/completed",
    "http://adlnet.gov/expapi/verbs/passed",
    "http://adlnet.gov/expapi/verbs/failed",
    "http://id.tincanapi.com/verb/earned",
];
const SKILLS: [&str; 4] = [
    "http://data.europa.eu/esco/skill/ccd0a1d9-afda-43d9-b901-96344886e14d",
    "http://data.europa.eu/esco/skill/2d2a5a1c-6c8f-4a36-8f5c-0b0a4c6a5c5e",
    "http://data.europa.eu/esco/skill/6a3f2c1e-8f5d-4e1b-9a7e-3c4b5d6e7f80",
    "http://data.europa.eu/esco/skill/9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e",
];

/// A realistic LLO statement: one of 1,000 workers of 300 companies at one of 12 hubs, one of
/// 200 activities, spread over 2026.
pub fn llo_statement(n: usize) -> Value {
    let worker = n % 1_000;
    let hub = HUBS[n % HUBS.len()];
    let verb = VERBS[(n / 7) % VERBS.len()];
    let minutes = 30 + (n * 37) % 240;
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "actor": {"objectType": "Agent", "name": format!("Worker {worker}"), "mbox": format!("mailto:worker{worker}@example.org")},
        "verb": {"id": verb, "display": {"en-US": verb.rsplit('/').next().unwrap_or(verb)}},
        "object": {"objectType": "Activity", "id": format!("https://{hub}.technohub.example/activities/{}", n % 200),
            "definition": {"name": {"nl-NL": "CNC-training", "en-US": "CNC training"}, "type": "http://adlnet.gov/expapi/activities/course"}},
        "result": {"duration": format!("PT{minutes}M"), "score": {"scaled": ((n * 13) % 100) as f64 / 100.0}, "success": !n.is_multiple_of(9), "completion": n.is_multiple_of(3)},
        "context": {
            "registration": uuid::Uuid::new_v4().to_string(),
            "contextActivities": {"parent": [{"id": format!("https://{hub}.technohub.example/programmes/metal")}]},
            "extensions": {
                "https://w3id.org/xapi/llo/extensions/hub": hub,
                "https://w3id.org/xapi/llo/extensions/company": format!("KVK-{:08}", worker % 300),
                "https://w3id.org/xapi/llo/extensions/skills": [SKILLS[n % SKILLS.len()]],
                "https://w3id.org/xapi/llo/extensions/learner-group": learner_group(worker)
            }
        },
        "timestamp": format!("2026-{:02}-{:02}T{:02}:00:00.000Z", 1 + n % 11, 1 + n % 28, 8 + n % 9),
    })
}

/// A worker's learner group: mostly workers, some young people in education, a few jobseekers.
fn learner_group(worker: usize) -> &'static str {
    match worker % 10 {
        0..=2 => "youth",
        3 => "jobseeker",
        _ => "worker",
    }
}

/// `nats_auth`: the user and password for `--hub-nats-url` (`serve`'s own server needs them).
pub async fn run(args: DemoArgs, nats_auth: Option<(String, String)>) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/statements", args.endpoint.trim_end_matches('/'));
    let nats = match &args.hub_nats_url {
        Some(nats_url) => {
            let mut options = async_nats::ConnectOptions::new();
            if let Some((user, password)) = nats_auth {
                options = options.user_and_password(user, password);
            }
            Some(async_nats::jetstream::new(
                options
                    .connect(nats_url)
                    .await
                    .with_context(|| format!("NATS unreachable at {nats_url}"))?,
            ))
        }
        None => None,
    };
    let mut voided = 0;
    let mut via_nats = 0;
    for start in (0..args.statements).step_by(100) {
        let batch: Vec<Value> = (start..(start + 100).min(args.statements))
            .map(llo_statement)
            .collect();
        match &nats {
            Some(js) if (start / 100) % 3 == 2 => {
                // A hub publishes its own statements on its own subject.
                for hub in HUBS {
                    let own: Vec<&Value> = batch.iter().filter(|statement| statement.pointer("/context/extensions/https:~1~1w3id.org~1xapi~1llo~1extensions~1hub") == Some(&json!(hub))).collect();
                    if own.is_empty() {
                        continue;
                    }
                    via_nats += own.len();
                    js.publish(
                        format!("{}{hub}", bus::subjects::IN_HUB_PREFIX),
                        serde_json::to_vec(&own)?.into(),
                    )
                    .await?
                    .await?;
                }
            }
            _ => {
                let response = http
                    .post(&url)
                    .basic_auth(&args.key, Some(&args.secret))
                    .header("X-Experience-API-Version", "2.0.0")
                    .json(&batch)
                    .send()
                    .await
                    .with_context(|| format!("posting to {url}"))?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "POST {url}: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
        }
        // Every 40th statement turns out to be a mistake and is voided.
        let voids: Vec<Value> = batch
            .iter()
            .step_by(40)
            .map(|statement| {
                json!({
                    "actor": {"mbox": "mailto:records@technohub.example", "name": "Records office"},
                    "verb": {"id": xapi::VERB_VOIDED},
                    "object": {"objectType": "StatementRef", "id": statement["id"]},
                })
            })
            .collect();
        voided += voids.len();
        let response = http
            .post(&url)
            .basic_auth(&args.key, Some(&args.secret))
            .header("X-Experience-API-Version", "2.0.0")
            .json(&voids)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "voiding: {}",
            response.status()
        );
    }
    println!(
        "demo: {} statements ({via_nats} through hub subjects), {voided} voided; see {}/../summaries/hubs",
        args.statements,
        args.endpoint.trim_end_matches('/')
    );
    Ok(())
}

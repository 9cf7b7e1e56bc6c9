//! `leerspoor demo`: realistic LLO statements for a new installation, so summaries have
//! something to show. Publishes over HTTP (as e-learning tools do) and, given a NATS URL,
//! straight to hub subjects (as check-in kiosks do), and voids a few.

use anyhow::Context as _;
use bus::hubs::HubType;
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

/// The demo hubs as the registry has them: name, type, region.
pub const REGISTRY: [(&str, &str, HubType, &str); 12] = [
    (
        "eindhoven",
        "Technohub Eindhoven",
        HubType::Technohub,
        "Brabant",
    ),
    (
        "delft",
        "Fieldlab Smart Manufacturing Delft",
        HubType::Fieldlab,
        "Zuid-Holland",
    ),
    (
        "twente",
        "Technohub Twente",
        HubType::Technohub,
        "Overijssel",
    ),
    (
        "groningen",
        "Technohub Groningen",
        HubType::Technohub,
        "Groningen",
    ),
    (
        "zwolle",
        "Fieldlab Composites Zwolle",
        HubType::Fieldlab,
        "Overijssel",
    ),
    (
        "tilburg",
        "Fieldlab Logistiek Tilburg",
        HubType::Fieldlab,
        "Brabant",
    ),
    ("venlo", "Technohub Venlo", HubType::Technohub, "Limburg"),
    (
        "breda",
        "Fieldlab Robotica Breda",
        HubType::Fieldlab,
        "Brabant",
    ),
    (
        "arnhem",
        "Technohub Arnhem",
        HubType::Technohub,
        "Gelderland",
    ),
    (
        "leiden",
        "Technohub Leiden",
        HubType::Technohub,
        "Zuid-Holland",
    ),
    (
        "almere",
        "Fieldlab Digital Twin Almere",
        HubType::Fieldlab,
        "Flevoland",
    ),
    (
        "utrecht",
        "Technohub Utrecht",
        HubType::Technohub,
        "Utrecht",
    ),
];

const VERBS: [&str; 6] = [
    "http://adlnet.gov/expapi/verbs/attended",
    "http://adlnet.gov/expapi/verbs/attended",
    "http://adlnet.gov/expapi/verbs/completed",
    "http://adlnet.gov/expapi/verbs/passed",
    "http://adlnet.gov/expapi/verbs/failed",
    "http://id.tincanapi.com/verb/earned",
];

/// ESCO-style skills with the names the statements give them (English, Dutch).
const SKILLS: [(&str, &str, &str); 6] = [
    (
        "http://data.europa.eu/esco/skill/ccd0a1d9-afda-43d9-b901-96344886e14d",
        "operate CNC machines",
        "CNC-machines bedienen",
    ),
    (
        "http://data.europa.eu/esco/skill/2d2a5a1c-6c8f-4a36-8f5c-0b0a4c6a5c5e",
        "program industrial robots",
        "industriële robots programmeren",
    ),
    (
        "http://data.europa.eu/esco/skill/6a3f2c1e-8f5d-4e1b-9a7e-3c4b5d6e7f80",
        "use digital tools to control machinery",
        "digitale hulpmiddelen gebruiken om machines aan te sturen",
    ),
    (
        "http://data.europa.eu/esco/skill/9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e",
        "weld metal parts",
        "metalen onderdelen lassen",
    ),
    (
        "http://data.europa.eu/esco/skill/4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8",
        "apply lean manufacturing",
        "lean manufacturing toepassen",
    ),
    (
        "http://data.europa.eu/esco/skill/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "interpret technical drawings",
        "technische tekeningen lezen",
    ),
];

/// A spread of `n` that does not follow its residues (so month, worker and verb vary
/// independently).
fn mix(n: usize, salt: u64) -> usize {
    let mut x = (n as u64)
        .wrapping_add(salt)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % (1 << 31)) as usize
}

/// A realistic LLO statement, spread over January to November 2026 with the programme
/// growing: month by month more of 1,000 workers (four per company, so up to 250 companies)
/// take part, each mostly at their own hub of 12; one of 200 activities.
pub fn llo_statement(n: usize) -> Value {
    let month = 1 + mix(n, 1) % 11;
    // The pool of workers grows with the months: 200 in January, 1,000 by November.
    let pool = 200 + (month - 1) * 80;
    let worker = mix(n, 2) % pool;
    let hub = if mix(n, 3).is_multiple_of(6) {
        HUBS[mix(n, 4) % HUBS.len()]
    } else {
        HUBS[worker % HUBS.len()]
    };
    let verb = VERBS[mix(n, 5) % VERBS.len()];
    let minutes = 30 + mix(n, 6) % 240;
    let (skill, skill_en, skill_nl) = SKILLS[mix(n, 7) % SKILLS.len()];
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "actor": {"objectType": "Agent", "name": format!("Worker {worker}"), "mbox": format!("mailto:worker{worker}@example.org")},
        "verb": {"id": verb, "display": {"en-US": verb.rsplit('/').next().unwrap_or(verb)}},
        "object": {"objectType": "Activity", "id": format!("https://{hub}.technohub.example/activities/{}", n % 200),
            "definition": {"name": {"nl-NL": "CNC-training", "en-US": "CNC training"}, "type": "http://adlnet.gov/expapi/activities/course"}},
        "result": {"duration": format!("PT{minutes}M"), "score": {"scaled": (mix(n, 8) % 100) as f64 / 100.0}, "success": !mix(n, 9).is_multiple_of(9), "completion": mix(n, 10).is_multiple_of(3)},
        "context": {
            "registration": uuid::Uuid::new_v4().to_string(),
            "contextActivities": {
                "parent": [{"id": format!("https://{hub}.technohub.example/programmes/metal")}],
                "category": [{"id": skill, "definition": {"name": {"en": skill_en, "nl": skill_nl}}}]
            },
            "extensions": {
                "https://w3id.org/xapi/llo/extensions/hub": hub,
                "https://w3id.org/xapi/llo/extensions/company": format!("KVK-{:08}", worker / 4),
                "https://w3id.org/xapi/llo/extensions/skills": [skill],
                "https://w3id.org/xapi/llo/extensions/learner-group": learner_group(worker)
            }
        },
        "timestamp": format!("2026-{month:02}-{:02}T{:02}:00:00.000Z", 1 + mix(n, 11) % 28, 8 + mix(n, 12) % 9),
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
    // The hubs first, so the programme figures show types and regions from the start.
    let base = args
        .endpoint
        .trim_end_matches('/')
        .trim_end_matches("/xapi");
    for (id, name, kind, region) in REGISTRY {
        let response = http
            .put(format!("{base}/admin/hubs/{id}"))
            .basic_auth(&args.key, Some(&args.secret))
            .json(&json!({"name": name, "type": kind, "region": region}))
            .send()
            .await
            .with_context(|| format!("registering hub {id}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "registering hub {id}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
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
        "demo: {} statements ({via_nats} through hub subjects), {voided} voided; {} hubs registered; see {base}/dashboard",
        args.statements,
        REGISTRY.len()
    );
    Ok(())
}

//! The failover test: the local cluster of `deploy/local-cluster.sh` (three nats-servers, two
//! store and two projector replicas, two gateways, each its own process) under continuous
//! batched writes through both gateways, while one NATS node, one store replica, one
//! projector replica and one gateway in turn are killed with `kill -9` and started again a
//! few seconds later. Every write answered 200 is listed exactly once by either gateway, the
//! replicas' digests end equal, the summaries equal a recount, and reads keep answering
//! (their errors are counted and printed per phase).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::subjects::Topology;
use serde_json::{json, Value};
use testkit::wait_until;

const HUB: &str = "failover";
/// How long each loss lasts before the process is started again, and how long the cluster
/// runs whole between two losses.
const DOWN: Duration = Duration::from_secs(5);
const BETWEEN: Duration = Duration::from_secs(3);

struct Cluster {
    dir: tempfile::TempDir,
    info: Value,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local-cluster.sh")
}

fn run_script(args: &[&str]) -> String {
    let nats = bus::server::locate_binary().expect("nats-server (deploy/install-nats.sh)");
    let output = std::process::Command::new("bash")
        .arg(script())
        .args(args)
        .env("NATS_SERVER_BIN", nats)
        .env("LEERSPOOR_BIN", env!("CARGO_BIN_EXE_leerspoor"))
        .output()
        .expect("run deploy/local-cluster.sh");
    assert!(
        output.status.success(),
        "local-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().to_string_lossy().into_owned();
        let out = run_script(&["up", &path]);
        let line = out.lines().last().expect("a JSON line");
        let info: Value = serde_json::from_str(line).expect("the JSON line");
        Cluster { dir, info }
    }

    fn pid(&self, name: &str) -> u64 {
        self.info["pids"][name].as_u64().expect("pid")
    }

    fn kill(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-9", &self.pid(name).to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -9 {name}");
    }

    fn start(&mut self, name: &str) {
        let path = self.dir.path().to_string_lossy().into_owned();
        let out = run_script(&["start", &path, name]);
        let started: Value = serde_json::from_str(out.lines().last().expect("line")).expect("json");
        self.info["pids"][name] = started["pid"].clone();
    }

    fn gateways(&self) -> Vec<String> {
        self.info["gateways"]
            .as_array()
            .expect("gateways")
            .iter()
            .map(|url| url.as_str().expect("url").to_owned())
            .collect()
    }

    fn credential(&self) -> (String, String) {
        (
            self.info["user"].as_str().expect("user").to_owned(),
            self.info["password"].as_str().expect("password").to_owned(),
        )
    }

    fn nats_password(&self) -> String {
        let state = std::fs::read_to_string(self.dir.path().join("cluster.env")).expect("state");
        state
            .lines()
            .find_map(|line| line.strip_prefix("NATS_PASSWORD="))
            .expect("password")
            .trim_matches('"')
            .to_owned()
    }

    async fn nats(&self) -> async_nats::Client {
        let password = self.nats_password();
        let urls: Vec<async_nats::ServerAddr> = self.info["nats"]
            .as_array()
            .expect("nats")
            .iter()
            .map(|url| url.as_str().expect("url").parse().expect("addr"))
            .collect();
        async_nats::ConnectOptions::new()
            .user_and_password("leerspoor".into(), password)
            .custom_inbox_prefix("_LRS_INBOX")
            .connect(urls)
            .await
            .expect("nats cluster")
    }
}

impl Cluster {
    /// Stops every process (their databases can then be opened).
    fn down(&self) {
        let path = self.dir.path().to_string_lossy().into_owned();
        let _ = std::process::Command::new("bash")
            .arg(script())
            .args(["down", &path])
            .status();
    }
}

/// The first keys two stopped store replicas' databases differ in, for a failure message.
fn store_differences(dir: &std::path::Path) -> String {
    let open = |replica: &str| {
        let path = dir.join(format!("store-{replica}")).join("store.sled");
        if !path.exists() {
            return Err(format!("no {}", path.display()));
        }
        store::db::Db::open_tree(&path, store::db::DEFAULT_CACHE_BYTES)
            .map_err(|err| format!("{}: {err}", path.display()))
    };
    let (a, b) = match (open("a"), open("b")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(err), _) | (_, Err(err)) => return err,
    };
    let show = |bytes: &[u8]| {
        let shown: String = bytes
            .iter()
            .take(160)
            .map(|byte| match byte {
                b' '..=b'~' => char::from(*byte).to_string(),
                _ => format!("\\x{byte:02x}"),
            })
            .collect();
        format!("{shown} ({} bytes)", bytes.len())
    };
    let mut found = Vec::new();
    let counted = (a.len(), b.len());
    let mut only_b: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = b
        .iter()
        .filter_map(Result::ok)
        .map(|(key, value)| (key.to_vec(), value.to_vec()))
        .collect();
    for (key, value) in a.iter().filter_map(Result::ok) {
        match only_b.remove(key.as_ref()) {
            Some(other) if other == value.as_ref() => {}
            Some(other) => found.push(format!(
                "{}: a {} / b {}",
                show(&key),
                show(&value),
                show(&other)
            )),
            None => found.push(format!("{}: only in a", show(&key))),
        }
    }
    found.extend(only_b.keys().map(|key| format!("{}: only in b", show(key))));
    format!(
        "of {} and {} keys, {} differ; the first: {:#?}",
        counted.0,
        counted.1,
        found.len(),
        &found[..found.len().min(12)]
    )
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
        if std::thread::panicking() {
            // The processes' logs, for whoever looks into the failure.
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("dir"));
            eprintln!("cluster logs kept in {}/logs", kept.keep().display());
        }
    }
}

fn batch(writer: usize, round: usize) -> Vec<Value> {
    (0..10)
        .map(|n| {
            let mut statement = crate::helpers::hub_statement(
                &format!("w{}@example.org", (writer * 7 + round + n) % 300),
                HUB,
            );
            statement["id"] = json!(uuid::Uuid::new_v4().to_string());
            statement
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    acknowledged: Mutex<Vec<Value>>,
    write_retries: AtomicUsize,
    /// Per phase: reads answered, reads failed.
    reads: Mutex<HashMap<usize, (usize, usize)>>,
}

/// Posts batches through `gateways[first]` until `stop`; a batch that is not answered 200 is
/// sent again, unchanged (same ids), through the other gateway, until it is.
async fn writer(
    gateways: Vec<String>,
    first: usize,
    credential: (String, String),
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http");
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        let statements = batch(first, round);
        round += 1;
        let mut attempt = 0;
        loop {
            let gateway = &gateways[(first + attempt) % gateways.len()];
            let answer = http
                .post(format!("{gateway}/statements"))
                .basic_auth(&credential.0, Some(&credential.1))
                .header("X-Experience-API-Version", "2.0.0")
                .json(&statements)
                .send()
                .await;
            if matches!(&answer, Ok(response) if response.status() == reqwest::StatusCode::OK) {
                tally
                    .acknowledged
                    .lock()
                    .expect("lock")
                    .extend(statements.iter().cloned());
                break;
            }
            tally.write_retries.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends a read of a page through each gateway in turn every 50 ms until `stop`, each counted
/// in the phase it was sent in; returns once every read sent was answered or failed.
async fn reader(
    gateways: Vec<String>,
    credential: (String, String),
    phase: Arc<AtomicUsize>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http");
    let mut turn = 0;
    let mut sent = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let gateway = gateways[turn % gateways.len()].clone();
        turn += 1;
        // Counted in the phase it was sent in, and sent whether or not the one before was
        // answered: a read sent while a process is down must be answered, though on a loaded
        // machine one read can take seconds (a replica waited for until it has this
        // gateway's writes), and one at a time a slow read left a phase with none sent.
        let sent_in = phase.load(Ordering::Relaxed);
        let (http, credential, tally) = (http.clone(), credential.clone(), tally.clone());
        sent.push(tokio::spawn(async move {
            let answered = http
                .get(format!("{gateway}/statements?limit=5"))
                .basic_auth(&credential.0, Some(&credential.1))
                .header("X-Experience-API-Version", "2.0.0")
                .send()
                .await
                .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
            let mut reads = tally.reads.lock().expect("lock");
            let entry = reads.entry(sent_in).or_default();
            if answered {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for read in sent {
        read.await.expect("read");
    }
}

/// Every statement, following `more`, through one gateway.
async fn list_all(gateway: &str, credential: &(String, String)) -> Vec<Value> {
    let http = reqwest::Client::new();
    let origin = gateway.trim_end_matches("/xapi");
    let mut next = format!("{gateway}/statements?limit=100&ascending=true");
    let mut all = Vec::new();
    loop {
        let response = http
            .get(&next)
            .basic_auth(&credential.0, Some(&credential.1))
            .header("X-Experience-API-Version", "2.0.0")
            .send()
            .await
            .expect("list");
        let status = response.status();
        let page: Value = response.json().await.expect("page");
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "listing via {gateway}: {page}"
        );
        all.extend(page["statements"].as_array().cloned().unwrap_or_default());
        match page["more"].as_str() {
            Some(more) if !more.is_empty() => next = format!("{origin}{more}"),
            _ => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_rides_through_the_loss_of_any_one_process() {
    let mut cluster = Cluster::up();
    let gateways = cluster.gateways();
    let credential = cluster.credential();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for first in 0..gateways.len() {
        tasks.push(tokio::spawn(writer(
            gateways.clone(),
            first,
            credential.clone(),
            tally.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(reader(
        gateways.clone(),
        credential.clone(),
        phase.clone(),
        tally.clone(),
        stop.clone(),
    )));

    let losses = ["nats-2", "store-b", "projector-a", "gateway-1"];
    let mut phases = vec!["all running".to_owned()];
    tokio::time::sleep(BETWEEN).await;
    for name in losses {
        phases.push(format!("{name} killed"));
        phase.store(phases.len() - 1, Ordering::Relaxed);
        cluster.kill(name);
        tokio::time::sleep(DOWN).await;
        cluster.start(name);
        phases.push(format!("{name} back"));
        phase.store(phases.len() - 1, Ordering::Relaxed);
        tokio::time::sleep(BETWEEN).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("task");
    }

    let reads = tally.reads.lock().expect("lock").clone();
    for (index, name) in phases.iter().enumerate() {
        let (answered, failed) = reads.get(&index).copied().unwrap_or_default();
        println!("reads while {name}: {answered} answered, {failed} failed");
        assert!(answered > 0, "reads kept answering while {name}");
    }
    let acknowledged = tally.acknowledged.lock().expect("lock").clone();
    println!(
        "writes: {} statements acknowledged, {} batch retries",
        acknowledged.len(),
        tally.write_retries.load(Ordering::Relaxed)
    );
    assert!(acknowledged.len() > 100, "writes went on");

    // At rest: both store replicas and both projector replicas caught up and identical.
    let nats = cluster.nats().await;
    let topology = Topology {
        stores: vec!["a".into(), "b".into()],
        projectors: vec!["a".into(), "b".into()],
        stream_replicas: 3,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let statuses = loop {
        let statuses =
            leerspoor::replicas::statuses(&nats, &topology, true, Duration::from_secs(20))
                .await
                .unwrap_or_default();
        if statuses.len() == 4 && statuses.iter().all(|status| status.lag == Some(0)) {
            break statuses;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas did not come to rest: {statuses:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for kind in ["store", "projector"] {
        if leerspoor::replicas::identical(&statuses, kind) != Some(true) {
            cluster.down();
            let differences = match kind {
                "store" => store_differences(cluster.dir.path()),
                _ => String::new(),
            };
            panic!("{kind} replicas differ: {statuses:#?}\n{differences}");
        }
    }

    // What an operator sees: `leerspoor replicas` says so too.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .arg("--config")
        .arg(cluster.dir.path().join("leerspoor.toml"))
        .arg("replicas")
        .env("LEERSPOOR_NATS_PASSWORD", cluster.nats_password())
        .output()
        .expect("leerspoor replicas");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(table.contains("store replicas: identical"), "{table}");
    assert!(table.contains("projector replicas: identical"), "{table}");

    // Every acknowledged statement, exactly once, through either gateway.
    let expected: HashSet<String> = acknowledged
        .iter()
        .map(|statement| statement["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(expected.len(), acknowledged.len());
    for gateway in &gateways {
        let listed = list_all(gateway, &credential).await;
        let ids: Vec<&str> = listed
            .iter()
            .map(|statement| statement["id"].as_str().expect("id"))
            .collect();
        let distinct: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "none listed twice via {gateway}");
        let missing = expected
            .iter()
            .filter(|id| !distinct.contains(id.as_str()))
            .count();
        assert_eq!(missing, 0, "acknowledged but missing via {gateway}");
        assert_eq!(ids.len(), expected.len(), "nothing unacknowledged stored");
    }

    // The summaries equal a recount of what was written.
    let workers: HashSet<&str> = acknowledged
        .iter()
        .map(|statement| statement["actor"]["mbox"].as_str().expect("mbox"))
        .collect();
    let origin = gateways[1].trim_end_matches("/xapi");
    let summary = wait_until(
        "the hub summary recounted",
        Duration::from_secs(30),
        || async {
            let summary: Value = reqwest::Client::new()
                .get(format!("{origin}/summaries/hubs/{HUB}"))
                .basic_auth(&credential.0, Some(&credential.1))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (summary["statements"] == json!(acknowledged.len())).then_some(summary)
        },
    )
    .await;
    assert_eq!(summary["workers"], json!(workers.len()), "{summary}");
}

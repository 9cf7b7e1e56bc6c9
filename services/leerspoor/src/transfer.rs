//! `leerspoor export` and `leerspoor import`: statements out to NDJSON (streaming, constant
//! memory), and in from NDJSON or from another LRS's statement API, resumable.
//!
//! An import goes through `LRS_IN` on its own subject ([`bus::subjects::IN_IMPORT`]), so every
//! store replica applies it like any write; the store keeps the `stored` and `authority` a
//! statement brings (an LRS's own record of when and from whom), and gives Leerspoor's to a
//! statement without them. Each statement is checked here first with the store's own
//! validator, so one bad line is reported with its line number and the rest goes in. A
//! statement without an id gets one derived from its line and content, so importing the same
//! file again, or resuming after an interruption, stores nothing twice (the store's id check
//! takes what was stored before as already there).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bus::wire::Verdict;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The NDJSON file to write: one statement per line, oldest first, voided ones included.
    #[arg(long)]
    pub to: PathBuf,
    /// Only statements stored after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only statements stored at or before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only statements about this agent (JSON, e.g. '{"mbox":"mailto:ann@example.org"}').
    #[arg(long)]
    pub agent: Option<String>,
    /// Only statements with this verb IRI.
    #[arg(long)]
    pub verb: Option<String>,
}

/// The export filters, checked as the statement API checks them.
pub fn filters(args: &ExportArgs) -> anyhow::Result<bus::export::Filters> {
    let time = |name: &str, value: &Option<String>| -> anyhow::Result<Option<String>> {
        value
            .as_deref()
            .map(|text| {
                xapi::time::parse_timestamp(text)
                    .map(|time| xapi::time::format_timestamp(time.with_timezone(&chrono::Utc)))
                    .map_err(|reason| anyhow::anyhow!("--{name} {text:?}: {reason}"))
            })
            .transpose()
    };
    let agent = match &args.agent {
        None => None,
        Some(text) => {
            let agent: Value = serde_json::from_str(text).context("--agent is not JSON")?;
            Some(xapi::agent::ifi_key(&agent).ok_or_else(|| {
                anyhow::anyhow!("--agent has no identifier (mbox, mbox_sha1sum, openid or account)")
            })?)
        }
    };
    if let Some(verb) = &args.verb {
        anyhow::ensure!(
            iri_like(verb),
            "--verb {verb:?} is not an IRI (e.g. http://adlnet.gov/expapi/verbs/attended)"
        );
    }
    Ok(bus::export::Filters {
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
        agent,
        verb: args.verb.clone(),
    })
}

fn iri_like(text: &str) -> bool {
    text.split_once(':')
        .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
}

fn counter(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} statements {msg} ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Writes the statements matching `filters` to `out`, a page at a time. Returns how many.
pub async fn export_to(
    client: &async_nats::Client,
    filters: bus::export::Filters,
    out: &mut impl Write,
    progress: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut export = bus::export::Export::new(filters);
    let mut written = 0;
    while let Some(page) = export.next_page(client).await? {
        for statement in &page {
            serde_json::to_writer(&mut *out, statement)?;
            out.write_all(b"\n")?;
        }
        written += page.len() as u64;
        progress.inc(page.len() as u64);
    }
    Ok(written)
}

/// `leerspoor export`: into a temporary file beside `--to`, renamed once complete, so a
/// half-written export never looks like a whole one.
pub async fn export(client: &async_nats::Client, args: ExportArgs) -> anyhow::Result<()> {
    let filters = filters(&args)?;
    let partial = args.to.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let progress = counter("exported");
    let written = export_to(client, filters, &mut out, &progress).await?;
    out.flush()?;
    out.get_ref().sync_all()?;
    std::fs::rename(&partial, &args.to)
        .with_context(|| format!("renaming {} to {}", partial.display(), args.to.display()))?;
    progress.finish_and_clear();
    println!("exported {written} statements to {}", args.to.display());
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// An NDJSON file: one statement per line (what `leerspoor export` writes).
    #[arg(required_unless_present = "from_lrs", conflicts_with = "from_lrs")]
    pub file: Option<PathBuf>,
    /// Another LRS's xAPI endpoint (e.g. https://lrs.example/xapi): its statements are read
    /// with GET statements, following its `more` links.
    #[arg(long)]
    pub from_lrs: Option<String>,
    /// Basic auth of the other LRS.
    #[arg(long, requires = "from_lrs")]
    pub user: Option<String>,
    #[arg(
        long,
        requires = "from_lrs",
        env = "LEERSPOOR_IMPORT_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// The xAPI version to speak to the other LRS.
    #[arg(long, default_value = "1.0.3")]
    pub source_version: String,
    /// Where the import notes how far it got (to resume after an interruption); beside the
    /// file, or in the data folder for --from-lrs, by default.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Statements per message to the store.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// The xAPI version the file's statements are checked under.
    #[arg(long, default_value = "2.0.0")]
    pub version: String,
}

/// How far an import got: every statement before this point is stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// NDJSON: lines done, and the byte offset after them.
    pub lines: u64,
    pub offset: u64,
    /// From an LRS: the `more` link of the next page (None: from the start).
    pub more: Option<String>,
    pub imported: u64,
    pub refused: u64,
}

impl Progress {
    fn load(path: &Path) -> anyhow::Result<Progress> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not an import state", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Progress::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written to a temporary file and renamed: a crash leaves the old state or the new.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let partial = path.with_extension("saving");
        std::fs::write(&partial, serde_json::to_vec(self)?)?;
        std::fs::rename(&partial, path)?;
        Ok(())
    }
}

/// What an import did, for its final words.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub imported: u64,
    /// Lines or statements that could not go in (each reported with its reason).
    pub refused: u64,
    pub kept_stored: u64,
    pub kept_authority: u64,
    pub resumed_from: u64,
}

/// One statement that could not go in: where, which rule, why.
#[derive(Debug, Serialize)]
pub struct Refused {
    /// Line in the file, or index on the source's page.
    pub at: String,
    pub rule: String,
    pub message: String,
}

/// Publishes statements to the store through `LRS_IN` and hears its verdicts.
pub struct Importer {
    js: async_nats::jetstream::Context,
    watermarks: bus::watermark::Watermarks,
    validator: xapi::Validator,
    version: xapi::XapiVersion,
    max_bytes: usize,
    stop_following: CancellationToken,
}

impl Drop for Importer {
    fn drop(&mut self) {
        self.stop_following.cancel();
    }
}

/// A statement on its way in, with where it came from.
pub struct Incoming {
    pub at: String,
    pub statement: Value,
}

impl Importer {
    pub fn new(client: &async_nats::Client, version: &str) -> anyhow::Result<Importer> {
        let version = xapi::XapiVersion::from_header(version)
            .ok_or_else(|| anyhow::anyhow!("--version {version:?} is not 1.0.3 or 2.0.0"))?;
        let watermarks = bus::watermark::Watermarks::new(client.clone());
        let stop_following = CancellationToken::new();
        tokio::spawn(watermarks.clone().follow(stop_following.clone()));
        // Half the server's largest message: room for the JSON array around them.
        let max_bytes = (client.server_info().max_payload / 2).max(64 * 1024);
        Ok(Importer {
            js: async_nats::jetstream::new(client.clone()),
            watermarks,
            validator: xapi::Validator::new()?,
            version,
            max_bytes,
            stop_following,
        })
    }

    /// Checks each statement as the store will, gives an id to those without, and stores the
    /// valid ones; returns the refused ones with their reasons.
    pub async fn import(
        &self,
        incoming: Vec<Incoming>,
        report: &mut ImportReport,
    ) -> anyhow::Result<Vec<Refused>> {
        let mut refused = Vec::new();
        let mut ready: Vec<Incoming> = Vec::with_capacity(incoming.len());
        for mut item in incoming {
            if let Err(violation) = self
                .validator
                .check_batch(std::slice::from_ref(&item.statement), self.version)
            {
                refused.push(Refused {
                    at: item.at,
                    rule: violation.violation.rule.clone(),
                    message: format!(
                        "{}: {}",
                        violation.violation.path, violation.violation.message
                    ),
                });
                continue;
            }
            give_id(&mut item.statement, &item.at);
            ready.push(item);
        }
        // In messages of at most max_bytes; a message the store refuses is split to find the
        // statement it refuses.
        let mut pending: std::collections::VecDeque<Vec<Incoming>> = Default::default();
        let mut chunk = Vec::new();
        let mut size = 2;
        for item in ready {
            let length = serde_json::to_vec(&item.statement)?.len() + 1;
            if !chunk.is_empty() && size + length > self.max_bytes {
                pending.push_back(std::mem::take(&mut chunk));
                size = 2;
            }
            size += length;
            chunk.push(item);
        }
        if !chunk.is_empty() {
            pending.push_back(chunk);
        }
        while let Some(chunk) = pending.pop_front() {
            let statements: Vec<&Value> = chunk.iter().map(|item| &item.statement).collect();
            let payload = serde_json::to_vec(&statements)?;
            // The same statements under the same message id: a retried publish is stored once.
            let id = format!("import-{:x}", sha2::Sha256::digest(&payload));
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(bus::MSG_ID_HEADER, id.as_str());
            headers.insert("X-Experience-API-Version", self.version.as_str());
            let verdict = bus::watermark::submit(
                &self.js,
                &self.watermarks,
                bus::subjects::IN_IMPORT,
                headers,
                payload,
                Duration::from_secs(120),
            )
            .await?;
            let culprit = match &verdict {
                Verdict::Applied => {
                    for item in &chunk {
                        report.imported += 1;
                        report.kept_stored += u64::from(item.statement.get("stored").is_some());
                        report.kept_authority +=
                            u64::from(item.statement.get("authority").is_some());
                    }
                    continue;
                }
                Verdict::Conflict { statement, id } => (
                    *statement,
                    "statement.id_conflict".to_owned(),
                    format!("id {id} is stored already with other content"),
                ),
                Verdict::Rejected(rejection) => (
                    rejection.statement.unwrap_or(0),
                    rejection.rule.clone(),
                    format!("{}: {}", rejection.path, rejection.message),
                ),
                other => anyhow::bail!("the store refused an import message: {other:?}"),
            };
            let (index, rule, message) = culprit;
            let mut chunk = chunk;
            if index >= chunk.len() {
                anyhow::bail!("the store refused an import message: {rule}: {message}");
            }
            let bad = chunk.remove(index);
            refused.push(Refused {
                at: bad.at,
                rule,
                message,
            });
            if !chunk.is_empty() {
                pending.push_front(chunk);
            }
        }
        Ok(refused)
    }
}

/// A statement without an id gets one derived from where it came from and what it says: the
/// same line imported twice gets the same id, so it is stored once.
fn give_id(statement: &mut Value, at: &str) {
    if statement.get("id").is_some() {
        return;
    }
    let namespace = Uuid::from_u128(0x6c65_6572_7370_6f6f_7269_6d70_6f72_7421);
    let mut name = at.as_bytes().to_vec();
    name.extend_from_slice(&serde_json::to_vec(statement).unwrap_or_default());
    let id = Uuid::new_v5(&namespace, &name);
    if let Some(object) = statement.as_object_mut() {
        object.insert("id".into(), Value::String(id.to_string()));
    }
}

/// `leerspoor import`.
pub async fn import(
    client: &async_nats::Client,
    data_dir: &Path,
    args: ImportArgs,
) -> anyhow::Result<ImportReport> {
    let importer = Importer::new(client, &args.version)?;
    let batch = args.batch.clamp(1, 10_000);
    let (report, refused) = match (&args.file, &args.from_lrs) {
        (Some(file), _) => {
            let state = args
                .state
                .clone()
                .unwrap_or_else(|| sibling(file, "import-state"));
            import_file(&importer, file, &state, batch).await?
        }
        (None, Some(url)) => {
            let state = args.state.clone().unwrap_or_else(|| {
                let digest = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
                data_dir.join(format!("import-{}.json", &digest[..16]))
            });
            import_lrs(&importer, &args, url, &state, batch).await?
        }
        (None, None) => anyhow::bail!("give a FILE or --from-lrs URL"),
    };
    for refusal in refused.iter().take(50) {
        eprintln!(
            "refused {}: {} ({})",
            refusal.at, refusal.message, refusal.rule
        );
    }
    if refused.len() > 50 {
        eprintln!("… and {} more refused", refused.len() - 50);
    }
    println!(
        "imported {} statements, refused {}{}",
        report.imported,
        report.refused,
        if report.resumed_from > 0 {
            format!(" (resumed after {} already done)", report.resumed_from)
        } else {
            String::new()
        }
    );
    println!(
        "kept the source's stored on {} and its authority on {}; the others got Leerspoor's own (stored: when imported; authority: the import)",
        report.kept_stored, report.kept_authority
    );
    Ok(report)
}

fn sibling(file: &Path, extension: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".{extension}"));
    PathBuf::from(name)
}

async fn import_file(
    importer: &Importer,
    file: &Path,
    state: &Path,
    batch: usize,
) -> anyhow::Result<(ImportReport, Vec<Refused>)> {
    let mut progress = Progress::load(state)?;
    let mut report = ImportReport {
        resumed_from: progress.lines,
        ..ImportReport::default()
    };
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let total = opened.metadata()?.len();
    let mut reader = std::io::BufReader::new(opened);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(progress.offset))?;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(progress.offset);
    let mut all_refused = Vec::new();
    let mut line = String::new();
    loop {
        let mut incoming = Vec::with_capacity(batch);
        let mut refused = Vec::new();
        let (mut lines, mut offset) = (progress.lines, progress.offset);
        while incoming.len() < batch {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                break;
            }
            lines += 1;
            offset += read as u64;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let at = format!("line {lines}");
            match serde_json::from_str::<Value>(text) {
                Ok(statement) if statement.is_object() => incoming.push(Incoming { at, statement }),
                Ok(_) => refused.push(Refused {
                    at,
                    rule: "import.statement_object".into(),
                    message: "a line must hold one statement (a JSON object)".into(),
                }),
                Err(err) => refused.push(Refused {
                    at,
                    rule: "import.json".into(),
                    message: format!("not JSON: {err}"),
                }),
            }
        }
        if incoming.is_empty() && refused.is_empty() && offset == progress.offset {
            break;
        }
        refused.extend(importer.import(incoming, &mut report).await?);
        report.refused += refused.len() as u64;
        progress.lines = lines;
        progress.offset = offset;
        progress.imported = report.imported;
        progress.refused += refused.len() as u64;
        progress.save(state)?;
        bar.set_position(offset);
        bar.set_message(format!("{} imported", report.imported));
        all_refused.extend(refused);
    }
    bar.finish_and_clear();
    Ok((report, all_refused))
}

async fn import_lrs(
    importer: &Importer,
    args: &ImportArgs,
    url: &str,
    state: &Path,
    batch: usize,
) -> anyhow::Result<(ImportReport, Vec<Refused>)> {
    let base = reqwest::Url::parse(url.trim_end_matches('/'))
        .with_context(|| format!("--from-lrs {url:?} is not a URL"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut progress = Progress::load(state)?;
    let mut report = ImportReport {
        resumed_from: progress.imported,
        ..ImportReport::default()
    };
    let first = format!(
        "{}/statements?ascending=true&limit={batch}",
        base.as_str().trim_end_matches('/')
    );
    let bar = counter("imported");
    let mut all_refused = Vec::new();
    let mut page_number = 0u64;
    loop {
        let next = match &progress.more {
            Some(more) => base
                .join(more)
                .with_context(|| format!("the source's more link {more:?}"))?
                .to_string(),
            None if page_number == 0 && progress.imported == 0 => first.clone(),
            None => break,
        };
        page_number += 1;
        let page = fetch_page(&http, &next, args).await?;
        let statements = page["statements"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("{next}: the answer has no statements array"))?;
        let incoming: Vec<Incoming> = statements
            .iter()
            .enumerate()
            .map(|(index, statement)| Incoming {
                at: format!("page {page_number} statement {index}"),
                statement: statement.clone(),
            })
            .collect();
        let count = incoming.len() as u64;
        let refused = importer.import(incoming, &mut report).await?;
        report.refused += refused.len() as u64;
        all_refused.extend(refused);
        bar.inc(count);
        progress.imported = report.imported + report.resumed_from;
        progress.more = page["more"]
            .as_str()
            .filter(|more| !more.is_empty())
            .map(str::to_owned);
        progress.save(state)?;
        if progress.more.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    Ok((report, all_refused))
}

/// One page of the source's statements, retried a few times while the source is busy.
async fn fetch_page(http: &reqwest::Client, url: &str, args: &ImportArgs) -> anyhow::Result<Value> {
    let mut pause = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let mut request = http
            .get(url)
            .header("X-Experience-API-Version", &args.source_version);
        if let Some(user) = &args.user {
            request = request.basic_auth(user, args.password.as_deref());
        }
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => {
                return response
                    .json()
                    .await
                    .with_context(|| format!("{url}: the answer is not JSON"))
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                anyhow::bail!(
                    "{url}: {status}: {}",
                    xapi::limits::truncate_text(&body, 512)
                );
            }
            Ok(response) => format!("{}", response.status()),
            Err(err) => err.to_string(),
        };
        anyhow::ensure!(attempt < 6, "{url}: {outcome} (after {attempt} attempts)");
        tracing::warn!(%url, %outcome, attempt, "the source did not answer; trying again");
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

//! `leerspoor summary`: the summaries for analysts on the command line, straight from the
//! projector over NATS, as a table or CSV.

use anyhow::Context as _;
use bus::wire::{SummaryKind, SummaryQuery, SummaryReply};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct SummaryArgs {
    /// worker, hub, company (one, with ID), workers, hubs, companies (a list), or programme
    /// (companies reached against the target, by hub type and region).
    pub kind: String,
    /// Worker (e.g. mailto:ann@example.org or an IFI key), hub or company id.
    pub id: Option<String>,
    /// First month of the series, YYYY-MM.
    #[arg(long)]
    pub from: Option<String>,
    /// Last month of the series, YYYY-MM.
    #[arg(long)]
    pub to: Option<String>,
    /// Sort a list by this numeric field.
    #[arg(long)]
    pub sort: Option<String>,
    #[arg(long)]
    pub desc: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// Lists: only the workers or companies of this hub.
    #[arg(long)]
    pub hub: Option<String>,
    /// Lists: only the workers of this company.
    #[arg(long)]
    pub company: Option<String>,
}

/// `mailto:` addresses are the common case; anything else is taken as an IFI key.
fn worker_key(id: &str) -> String {
    if id.starts_with("mailto:") {
        format!("mbox:{}", id.to_lowercase())
    } else {
        id.to_owned()
    }
}

fn query(args: &SummaryArgs) -> anyhow::Result<SummaryQuery> {
    let (kind, list) = match args.kind.as_str() {
        "worker" => (SummaryKind::Worker, false),
        "hub" => (SummaryKind::Hub, false),
        "company" => (SummaryKind::Company, false),
        "workers" => (SummaryKind::Worker, true),
        "hubs" => (SummaryKind::Hub, true),
        "companies" => (SummaryKind::Company, true),
        other => anyhow::bail!(
            "unknown summary {other:?}: worker, hub, company, workers, hubs or companies"
        ),
    };
    if list {
        return Ok(SummaryQuery::List {
            kind,
            sort: args.sort.clone(),
            descending: args.desc,
            offset: args.offset,
            limit: args.limit,
            filter: bus::wire::ListFilter {
                hub: args.hub.clone(),
                company: args.company.clone(),
                from: args.from.clone(),
                to: args.to.clone(),
            },
            cursor: None,
        });
    }
    let id = args
        .id
        .clone()
        .with_context(|| format!("leerspoor summary {} needs an id", args.kind))?;
    let id = if kind == SummaryKind::Worker {
        worker_key(&id)
    } else {
        id
    };
    Ok(SummaryQuery::One {
        kind,
        id,
        from: args.from.clone(),
        to: args.to.clone(),
    })
}

pub async fn run(
    client: &async_nats::Client,
    args: SummaryArgs,
    company_target: u64,
) -> anyhow::Result<()> {
    let to = bus::request::Ask::projector(
        bus::subjects::API_SUMMARIES,
        std::time::Duration::from_secs(10),
    );
    if args.kind == "programme" {
        let query = SummaryQuery::Programme {
            hubs: crate::hubs::list(client).await?,
            target: company_target,
        };
        let SummaryReply::One {
            summary: Some(summary),
        } = bus::request::ask_json(client, to, &query).await?
        else {
            anyhow::bail!("the projector gave no programme summary");
        };
        return print_programme(&summary, args.csv);
    }
    let items = match bus::request::ask_json(client, to, &query(&args)?).await? {
        SummaryReply::One {
            summary: Some(summary),
        } => vec![summary],
        SummaryReply::One { summary: None } => anyhow::bail!(
            "no {} summary for {:?}",
            args.kind,
            args.id.unwrap_or_default()
        ),
        SummaryReply::List {
            items,
            total,
            next_offset,
            ..
        } => {
            match next_offset {
                Some(next) => eprintln!("{} of {total} (more from --offset {next})", items.len()),
                None => eprintln!("{} of {total}", items.len()),
            }
            items
        }
        SummaryReply::Error { message } | SummaryReply::Refused { message } => {
            anyhow::bail!("the projector refused: {message}")
        }
    };
    let csv = gateway::summaries::to_csv(&items)?;
    if args.csv {
        print!("{}", String::from_utf8_lossy(&csv));
    } else {
        print!("{}", table(&csv)?);
        if let [one] = items.as_slice() {
            print!("{}", months(one));
        }
    }
    Ok(())
}

/// The programme's headline, then its months, hub types and regions as tables (CSV: the
/// months).
fn print_programme(summary: &Value, csv: bool) -> anyhow::Result<()> {
    let rows = |field: &str| -> Vec<Value> {
        summary[field]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut row| {
                if let Some(object) = row.as_object_mut() {
                    object.remove("months");
                }
                row
            })
            .collect()
    };
    let months = gateway::summaries::to_csv(&rows("months"))?;
    if csv {
        print!("{}", String::from_utf8_lossy(&months));
        return Ok(());
    }
    println!(
        "companies reached: {} of {} ({:.1}%), workers: {}, statements: {}",
        summary["companies_reached"],
        summary["target"],
        summary["target_share"].as_f64().unwrap_or(0.0) * 100.0,
        summary["workers"],
        summary["statements"],
    );
    println!("learner groups: {}", summary["learner_groups"]);
    for (title, field) in [
        ("months", "months"),
        ("hub types", "by_type"),
        ("regions", "by_region"),
    ] {
        println!("\n{title}");
        print!("{}", table(&gateway::summaries::to_csv(&rows(field))?)?);
    }
    Ok(())
}

/// `leerspoor project --rebuild`: the running projector recomputes every summary from the
/// stored statements and swaps the result in; this waits for its report.
pub async fn rebuild(client: &async_nats::Client) -> anyhow::Result<()> {
    let answer = maintenance(client, "rebuild").await?;
    println!("rebuilt: {answer}");
    Ok(())
}

/// `leerspoor project --compact`: the running projector copies its database into a fresh
/// one while it goes on applying, and swaps it in; this waits for its report.
pub async fn compact(client: &async_nats::Client) -> anyhow::Result<()> {
    let answer = maintenance(client, "compact").await?;
    let report: projector::compact::CompactReport = serde_json::from_value(answer.clone())
        .with_context(|| format!("the projector's report {answer}"))?;
    println!(
        "compacted: {} ({} entries in {:.1} s and {} round(s); applying paused {:.2} s for the {} keys written during the last){}",
        report.sizes(),
        report.entries,
        report.seconds,
        report.rounds,
        report.pause_seconds,
        report.written_in_pause,
        report.why(),
    );
    Ok(())
}

/// `leerspoor project --parked` / `--replay-parked`: the `LRS_STORED` messages the projector
/// could not read, and applying those it now can.
pub async fn parked(client: &async_nats::Client, replay: bool) -> anyhow::Result<()> {
    if replay {
        let answer = maintenance(client, "replay_parked").await?;
        println!(
            "replayed {} parked message(s); {} still parked",
            answer["applied"], answer["still_parked"]
        );
        return Ok(());
    }
    let answer = maintenance(client, "list_parked").await?;
    let listed = answer["parked"].as_array().cloned().unwrap_or_default();
    println!("{} parked message(s)", listed.len());
    for one in listed {
        println!(
            "  LRS_STORED sequence {}: {} bytes, {}",
            one["sequence"],
            one["bytes"],
            one["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Asks the running projector for `action` (see `projector::service`) and waits up to an
/// hour for its answer.
pub(crate) async fn maintenance(
    client: &async_nats::Client,
    action: &str,
) -> anyhow::Result<Value> {
    let request = async_nats::Request::new()
        .payload(serde_json::to_vec(&serde_json::json!({ "action": action }))?.into())
        .timeout(Some(std::time::Duration::from_secs(3600)));
    let reply = client
        .send_request(bus::subjects::API_REBUILD, request)
        .await
        .context("no projector answered within an hour")?;
    let answer: Value = serde_json::from_slice(&reply.payload)?;
    if let Some(error) = answer.get("error") {
        anyhow::bail!("{action} failed (the summaries are as they were): {error}");
    }
    Ok(answer["ok"].clone())
}

/// The CSV as aligned columns.
fn table(csv_bytes: &[u8]) -> anyhow::Result<String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_bytes);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|record| record.map(|record| record.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()?;
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| {
                    row.get(column)
                        .map_or(0, |cell| cell.chars().count().min(48))
                })
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| {
                let shown: String = cell.chars().take(48).collect();
                format!("{shown:<width$}")
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// The month series of one summary, if it has one.
fn months(summary: &Value) -> String {
    let Some(months) = summary.get("months").and_then(Value::as_array) else {
        return String::new();
    };
    let mut out = String::from("\nmonth    ");
    let fields: Vec<String> = months
        .first()
        .and_then(Value::as_object)
        .map(|first| {
            first
                .keys()
                .filter(|key| key.as_str() != "month")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&fields.join("  "));
    out.push('\n');
    for month in months {
        out.push_str(month.get("month").and_then(Value::as_str).unwrap_or(""));
        for field in &fields {
            out.push_str(&format!(
                "  {:>width$}",
                month.get(field).map(Value::to_string).unwrap_or_default(),
                width = field.len()
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let text = table(b"hub,workers\neindhoven,12\nden-bosch,3\n").expect("table");
        assert_eq!(text, "hub        workers\neindhoven  12\nden-bosch  3\n");
    }

    #[test]
    fn workers_are_named_by_mailbox_or_key() {
        assert_eq!(
            worker_key("mailto:Ann@Example.org"),
            "mbox:mailto:ann@example.org"
        );
        assert_eq!(
            worker_key("account:https://hub.example|42"),
            "account:https://hub.example|42"
        );
    }
}

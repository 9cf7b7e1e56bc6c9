//! `leerspoor bench --erase-one-person N`: one person with N statements, then their erasure
//! over `POST /admin/erasures`. Shows that an erasure goes through in bounded chunks and
//! bounded messages whatever its size, and what it costs.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use serde_json::{json, Value};

use crate::demo::llo_statement;

const PERSON: &str = "mailto:everything@example.org";

/// Peak and current resident memory of this process, MiB.
pub(crate) fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Lowers the peak [`memory`] reports to what the process holds now (Linux 4.0 and later:
/// `5` written to `/proc/self/clear_refs`), so that a run's peak is its own and not an earlier
/// run's in the same process.
pub(crate) fn reset_peak() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

pub async fn one_person(
    nats_url: &str,
    base: &str,
    (key, secret): (&str, &str),
    statements: usize,
) -> anyhow::Result<()> {
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    let started = Instant::now();
    crate::bench::publish_batches(
        &js,
        0..statements,
        |n| {
            let mut statement = llo_statement(n);
            statement["actor"] = json!({"objectType": "Agent", "mbox": PERSON});
            statement
        },
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    crate::bench_summaries::drain_time(&js).await?;
    let (peak_before, rss_before) = memory();
    println!(
        "one person: {statements} statements stored and counted in {:.0} s; resident {rss_before:.0} MiB (peak so far {peak_before:.0} MiB)",
        started.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let started = Instant::now();
    // The gateway answers after 30 s at most; a larger erasure goes on and is seen in the audit
    // log and the summaries.
    let response = http
        .post(format!("{base}/admin/erasures"))
        .basic_auth(key, Some(secret))
        .json(&json!({"agent": {"mbox": PERSON}, "reason": "bench: one person"}))
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    println!(
        "  POST /admin/erasures answered {} after {:.1} s",
        response.status(),
        started.elapsed().as_secs_f64()
    );
    let erased = loop {
        let audit: Value = http
            .get(format!("{base}/admin/audit?limit=1000"))
            .basic_auth(key, Some(secret))
            .send()
            .await?
            .json()
            .await?;
        let entry = audit["entries"].as_array().and_then(|entries| {
            entries
                .iter()
                .find(|entry| entry["details"]["reason"] == "bench: one person")
                .cloned()
        });
        if let Some(entry) = entry {
            break entry;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the erasure was not applied within an hour"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let applied = started.elapsed();
    let summary = format!(
        "{base}/summaries/workers?agent={}",
        serde_urlencoded::to_string([("v", json!({"mbox": PERSON}).to_string())])?
            .trim_start_matches("v=")
    );
    loop {
        let status = http
            .get(&summary)
            .basic_auth(key, Some(secret))
            .send()
            .await?
            .status();
        if status == reqwest::StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = started.elapsed();
    crate::bench_summaries::drain_time(&js)
        .await
        .context("streams drained after the erasure")?;
    let (peak_after, rss_after) = memory();
    println!(
        "  erased {} statements: applied by the store after {:.1} s, their summary gone after {:.1} s, streams drained after {:.1} s",
        erased["details"]["statements"],
        applied.as_secs_f64(),
        gone.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  resident {rss_after:.0} MiB after the erasure; peak {peak_after:.0} MiB (before it: {peak_before:.0} MiB)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_peak_is_what_the_process_holds_now() {
        // 256 MiB touched, then given back (an allocation this large is its own mapping).
        let mut block = vec![0u8; 256 << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&block);
        drop(block);
        let (peak, resident) = memory();
        assert!(
            peak > resident + 200.0,
            "peak {peak:.0} MiB, resident {resident:.0}"
        );
        reset_peak().expect("clear_refs");
        let (peak, resident) = memory();
        assert!(
            peak < resident + 50.0,
            "peak {peak:.0} MiB after the reset, resident {resident:.0}"
        );
    }
}

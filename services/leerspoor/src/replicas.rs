//! `leerspoor replicas`: every store and projector replica with how far it applied its
//! stream, how far behind it is, and the digest of its content. Equal digests at an equal
//! applied sequence mean identical replicas.

use std::time::Duration;

use bus::subjects::Topology;
use bus::wire::{ReplicaStatus, ReplicasRequest};
use clap::Args;

#[derive(Debug, Args)]
pub struct ReplicasArgs {
    /// Skip the digests (each replica reads its whole database for one).
    #[arg(long)]
    pub no_digest: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the replicas of the topology to answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Asks every replica; waits until each replica `topology` names answered (or the timeout).
pub async fn statuses(
    client: &async_nats::Client,
    topology: &Topology,
    digest: bool,
    timeout: Duration,
) -> anyhow::Result<Vec<ReplicaStatus>> {
    let request = serde_json::to_vec(&ReplicasRequest { digest })?;
    let expected: Vec<(&str, &str)> = topology
        .stores
        .iter()
        .map(|name| ("store", name.as_str()))
        .chain(
            topology
                .projectors
                .iter()
                .map(|name| ("projector", name.as_str())),
        )
        .collect();
    let mut found = bus::request::gather(
        client,
        bus::subjects::API_REPLICAS,
        request.into(),
        timeout,
        |answers: &[ReplicaStatus]| {
            expected.iter().all(|(kind, name)| {
                answers
                    .iter()
                    .any(|answer| answer.kind == *kind && answer.name == *name)
            })
        },
    )
    .await?;
    found.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    Ok(found)
}

/// Whether the replicas of one kind that answered hold the same content: `None` when they
/// are at different sequences (or gave no digest), so cannot be compared.
pub fn identical(statuses: &[ReplicaStatus], kind: &str) -> Option<bool> {
    let of_kind: Vec<&ReplicaStatus> = statuses.iter().filter(|s| s.kind == kind).collect();
    let first = of_kind.first()?;
    if of_kind
        .iter()
        .any(|status| status.applied != first.applied || status.digest.is_none())
    {
        return None;
    }
    Some(of_kind.iter().all(|status| status.digest == first.digest))
}

pub async fn run(
    client: &async_nats::Client,
    topology: &Topology,
    args: ReplicasArgs,
) -> anyhow::Result<()> {
    let found = statuses(
        client,
        topology,
        !args.no_digest,
        Duration::from_secs(args.timeout),
    )
    .await?;
    if args.json {
        for status in &found {
            println!("{}", serde_json::to_string(status)?);
        }
    } else {
        println!(
            "{:<10} {:<12} {:<12} {:>10} {:>8} {:>10}  digest",
            "kind", "name", "stream", "applied", "lag", "items"
        );
        let or_dash = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
        for status in &found {
            println!(
                "{:<10} {:<12} {:<12} {:>10} {:>8} {:>10}  {}",
                status.kind,
                status.name,
                status.stream,
                status.applied,
                or_dash(status.lag),
                or_dash(status.items),
                status
                    .digest
                    .as_deref()
                    .or(status.error.as_deref())
                    .unwrap_or("-")
            );
        }
        for kind in ["store", "projector"] {
            match identical(&found, kind) {
                Some(true) => println!("{kind} replicas: identical"),
                Some(false) => println!("{kind} replicas: DIFFER at the same sequence"),
                None if args.no_digest => {}
                None => println!("{kind} replicas: not at the same sequence; ask again at rest"),
            }
        }
    }
    let missing: Vec<String> = topology
        .stores
        .iter()
        .map(|name| ("store", name))
        .chain(topology.projectors.iter().map(|name| ("projector", name)))
        .filter(|(kind, name)| {
            !found
                .iter()
                .any(|status| status.kind == *kind && &status.name == *name)
        })
        .map(|(kind, name)| format!("{kind} {name}"))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "no answer from {} within {} s",
        missing.join(", "),
        args.timeout
    );
    Ok(())
}

//! Hubs that keep working offline: a hub node runs its own nats-server as a **leaf node** of
//! the central NATS, in a JetStream domain of its own (`hub-<hub>`), with a stream
//! `LRS_HUB_<hub>` of its subject `lrs.in.hub.<hub>`. Its tools get their acknowledgements
//! from that stream whether or not the central site is reachable; `LRS_IN` *sources* from it
//! through the domain, from where it left off, whenever the link is up.
//!
//! What crosses the link, and all the hub's NATS user may do there (from the leaf's side,
//! "publish" is what it may send into the central NATS, "subscribe" what it may receive):
//! - central → hub: the source consumer's JetStream API requests (`$JS.hub-<hub>.API.>`) and
//!   flow-control replies (`$JS.FC.…`);
//! - hub → central: the API replies (`$JSC.R.>`) and the stream's messages on the delivery
//!   subjects `lrs.hubsource.<hub>.>`, plus `lrs.in.hub.<hub>` for a hub publishing directly.
//!
//! The hub node does not export its own `lrs.in.>` publishes over the link, so each statement
//! reaches `LRS_IN` once, through the source, in the hub's order. The store checks that a
//! sourced message sits on the subject of the hub whose stream it came from
//! ([`check_sourced`]): a hub's stream is the hub's to fill, not the central site's to trust.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};

use crate::subjects::{
    self, hub_deliver_prefix, hub_domain, hub_stream, hub_subject, hub_user, HUB_STREAM_PREFIX,
};

/// The header the central nats-server puts on every sourced message: `<stream>:<hash> <seq> …`.
pub const SOURCE_HEADER: &str = "Nats-Stream-Source";

/// The longest hub id that can run a hub node (it is part of a stream name and a domain).
pub const LEAF_ID_MAX: usize = 64;

/// A hub id that can be a hub node: 1 to 64 of `A-Z a-z 0-9 _ -` (it names a stream, a
/// JetStream domain and a NATS user).
pub fn check_hub_id(hub: &str) -> Result<(), String> {
    crate::hubs::check_id(hub)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    if hub.len() > LEAF_ID_MAX || !hub.chars().all(allowed) {
        return Err(format!(
            "hub id {hub:?} cannot run a hub node: use 1 to {LEAF_ID_MAX} of A-Z a-z 0-9 _ -"
        ));
    }
    Ok(())
}

/// How `LRS_IN` sources from a hub's stream: through the hub's domain, only its subject,
/// delivered on the subjects only that hub's leaf connection may publish.
pub fn source(hub: &str) -> stream::Source {
    stream::Source {
        name: hub_stream(hub),
        filter_subject: Some(hub_subject(hub)),
        external: Some(stream::External {
            api_prefix: format!("$JS.{}.API", hub_domain(hub)),
            delivery_prefix: Some(hub_deliver_prefix(hub)),
        }),
        ..Default::default()
    }
}

/// The stream at a hub node: its subject, on disk, kept `max_age` (0: for ever) whether or not
/// the central site sourced it yet.
pub fn hub_stream_config(hub: &str, max_age: Duration) -> stream::Config {
    stream::Config {
        name: hub_stream(hub),
        subjects: vec![hub_subject(hub)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: subjects::DUPLICATE_WINDOW,
        max_age,
        ..Default::default()
    }
}

/// Whether a message may be applied as it is, by where it came from: a message sourced from a
/// hub's stream (`header` is its [`SOURCE_HEADER`]) must be on that hub's subject, and
/// `LRS_IN` sources only from hubs.
pub fn check_sourced(subject: &str, header: Option<&str>) -> Result<(), String> {
    let Some(header) = header else {
        return Ok(());
    };
    let stream = header.split([':', ' ']).next().unwrap_or_default();
    match stream.strip_prefix(HUB_STREAM_PREFIX) {
        Some(hub) if subject == hub_subject(hub) => Ok(()),
        Some(hub) => Err(format!(
            "sourced from hub {hub:?}'s stream on subject {subject}; a hub's stream may only \
             carry {}",
            hub_subject(hub)
        )),
        None => Err(format!(
            "sourced from stream {:?}, which is not a hub's",
            stream.chars().take(64).collect::<String>()
        )),
    }
}

/// A JSON string literal (nats-server's configuration takes JSON strings).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// The central nats-server's user for one hub (an entry of `authorization.users`): what its
/// leaf connection may send and receive (see the module's description).
pub fn central_user_entry(hub: &str, password: &str) -> String {
    let domain = hub_domain(hub);
    let stream = hub_stream(hub);
    format!(
        "{{ user: {user}, password: {password}, permissions: {{\n\
         \x20   publish: {{ allow: [{subject}, {deliver}, \"$JSC.R.>\"] }}\n\
         \x20   subscribe: {{ allow: [{api}, {fc_stream}, {fc_domain}, {inbox}] }}\n\
         \x20 }} }}",
        user = quoted(&hub_user(hub)),
        password = quoted(password),
        subject = quoted(&hub_subject(hub)),
        deliver = quoted(&format!("{}.>", hub_deliver_prefix(hub))),
        api = quoted(&format!("$JS.{domain}.API.>")),
        fc_stream = quoted(&format!("$JS.FC.{stream}.>")),
        fc_domain = quoted(&format!("$JS.FC.{domain}.>")),
        inbox = quoted(&format!("_INBOX_hub_{hub}.>")),
    )
}

/// The `leafnodes` block of a hub node's nats-server: one remote, the central NATS (`url`
/// carries the hub user and its password: `nats-leaf://hub-<hub>:SECRET@central:7422`); the
/// hub's own ingest subjects stay local (they reach `LRS_IN` through the source only).
pub fn hub_leaf_config(url: &str) -> String {
    format!(
        "leafnodes {{\n  reconnect: \"2s\"\n  remotes: [\n    {{ urls: [{}], deny_exports: [\"{}\"] }}\n  ]\n}}\n",
        quoted(url),
        subjects::IN_ALL
    )
}

/// Asks the node that runs the central nats-server (`serve` with its own server) to add or
/// remove a hub's NATS user ([`subjects::API_LEAF_USERS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeafUserRequest {
    Add { hub: String, password: String },
    Remove { hub: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum LeafUserReply {
    Done,
    Refused { message: String },
}

/// How far one hub's stream is sourced into `LRS_IN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub hub: String,
    /// Messages at the hub not yet in `LRS_IN`, as of the last contact.
    pub lag: u64,
    /// Time since the central site last heard from the hub's stream; `None`: not connected
    /// since the central NATS started.
    pub last_active: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct LeafError {
    what: String,
    reason: String,
}

fn leaf_error(what: impl Into<String>) -> impl FnOnce(String) -> LeafError {
    let what = what.into();
    move |reason| LeafError { what, reason }
}

/// `LRS_IN` as the server has it now: its configuration and its sources' positions.
async fn in_info(js: &jetstream::Context) -> Result<stream::Info, LeafError> {
    let mut stream = js
        .get_stream(subjects::STREAM_IN)
        .await
        .map_err(|err| leaf_error("reading LRS_IN")(err.to_string()))?;
    stream
        .info()
        .await
        .cloned()
        .map_err(|err| leaf_error("reading LRS_IN")(err.to_string()))
}

/// The hubs `LRS_IN` sources from, with their lag and last contact.
pub async fn sources(js: &jetstream::Context) -> Result<Vec<SourceStatus>, LeafError> {
    // Every configured source is listed, with `active` negative until it was first heard from.
    let mut found: Vec<SourceStatus> = in_info(js)
        .await?
        .sources
        .iter()
        .filter_map(|source| {
            let hub = source.name.strip_prefix(HUB_STREAM_PREFIX)?;
            Some(SourceStatus {
                hub: hub.to_owned(),
                lag: source.lag,
                last_active: source.active,
            })
        })
        .collect();
    found.sort_by(|a, b| a.hub.cmp(&b.hub));
    Ok(found)
}

/// Makes `LRS_IN` source from `hub`'s stream; false if it already did.
pub async fn add_source(js: &jetstream::Context, hub: &str) -> Result<bool, LeafError> {
    check_hub_id(hub).map_err(leaf_error("hub id"))?;
    let mut config = in_info(js).await?.config;
    let sources = config.sources.get_or_insert_with(Vec::new);
    if sources.iter().any(|source| source.name == hub_stream(hub)) {
        return Ok(false);
    }
    sources.push(source(hub));
    js.update_stream(config)
        .await
        .map_err(|err| leaf_error("adding the source to LRS_IN")(err.to_string()))?;
    Ok(true)
}

/// Stops `LRS_IN` sourcing from `hub`'s stream; false if it did not.
pub async fn remove_source(js: &jetstream::Context, hub: &str) -> Result<bool, LeafError> {
    let mut config = in_info(js).await?.config;
    let name = hub_stream(hub);
    let Some(sources) = config.sources.as_mut() else {
        return Ok(false);
    };
    let before = sources.len();
    sources.retain(|source| source.name != name);
    if sources.len() == before {
        return Ok(false);
    }
    if sources.is_empty() {
        config.sources = None;
    }
    js.update_stream(config)
        .await
        .map_err(|err| leaf_error("removing the source from LRS_IN")(err.to_string()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_node_ids_are_names_nats_takes() {
        assert!(check_hub_id("eindhoven").is_ok());
        assert!(check_hub_id("fieldlab_7-b").is_ok());
        for bad in ["", "a.b", "a b", "bühl", "a>", &"x".repeat(65)] {
            assert!(check_hub_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_sourced_message_must_be_on_its_hubs_subject() {
        let header = "LRS_HUB_a:XdYik8JP 3 lrs.in.hub.a > lrs.in.hub.a SjLC0VPt";
        assert!(check_sourced("lrs.in.hub.a", Some(header)).is_ok());
        assert!(check_sourced("lrs.in.http", None).is_ok(), "not sourced");
        let forged = check_sourced("lrs.in.http", Some(header)).expect_err("forged subject");
        assert!(forged.contains("lrs.in.hub.a"), "{forged}");
        assert!(check_sourced("lrs.in.hub.b", Some(header)).is_err());
        assert!(check_sourced("lrs.in.hub.a", Some("OTHER:abc 1")).is_err());
    }

    #[test]
    fn the_central_user_may_send_only_its_hubs_subjects() {
        let entry = central_user_entry("a", "pw\"x");
        assert!(entry.contains(r#""lrs.in.hub.a""#));
        assert!(entry.contains(r#""lrs.hubsource.a.>""#));
        assert!(entry.contains(r#""$JS.hub-a.API.>""#));
        assert!(entry.contains(r#""pw\"x""#), "the password is quoted");
        assert!(!entry.contains("lrs.in.>"));
    }

    #[test]
    fn the_source_goes_through_the_hubs_domain() {
        let source = source("a");
        assert_eq!(source.name, "LRS_HUB_a");
        let external = source.external.expect("external");
        assert_eq!(external.api_prefix, "$JS.hub-a.API");
        assert_eq!(external.delivery_prefix.as_deref(), Some("lrs.hubsource.a"));
    }
}

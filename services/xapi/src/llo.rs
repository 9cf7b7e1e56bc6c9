//! The Leven Lang Ontwikkelen (LLO) xAPI profile's IRIs: one place for the store (which
//! checks that a hub names itself) and the projector (which counts by them).

/// Context extension: the hub (technohub, fieldlab) where the learning happened.
pub const HUB: &str = "https://w3id.org/xapi/llo/extensions/hub";
/// Context extension: the worker's company.
pub const COMPANY: &str = "https://w3id.org/xapi/llo/extensions/company";
/// Context extension: who learns, one of [`LEARNER_GROUPS`] (the schema refuses others).
pub const LEARNER_GROUP: &str = "https://w3id.org/xapi/llo/extensions/learner-group";
/// The learner groups the programme reports; a statement without one counts as `unknown`.
pub const LEARNER_GROUPS: [&str; 3] = ["youth", "worker", "jobseeker"];
/// Context extension: the ESCO skills the statement evidences.
pub const SKILLS: &str = "https://w3id.org/xapi/llo/extensions/skills";
/// The homePage of the authority accounts Leerspoor gives to direct NATS sources
/// (`hub.eindhoven`).
pub const SOURCES_HOME_PAGE: &str = "https://w3id.org/xapi/llo/sources";
/// The homePage of the authority accounts of HTTP credentials (the default).
pub const CLIENTS_HOME_PAGE: &str = "https://w3id.org/xapi/llo/clients";
/// The verb of attendance.
pub const VERB_ATTENDED: &str = "http://adlnet.gov/expapi/verbs/attended";

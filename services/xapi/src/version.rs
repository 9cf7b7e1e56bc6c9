//! The xAPI versions Leerspoor speaks. The version a request declares in
//! `X-Experience-API-Version` decides which rules apply to its statements.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XapiVersion {
    V1_0_3,
    V2_0_0,
}

impl XapiVersion {
    pub const ALL: [XapiVersion; 2] = [XapiVersion::V1_0_3, XapiVersion::V2_0_0];

    /// Parses an `X-Experience-API-Version` header: any `1.0` or `1.0.x` speaks 1.0.3, any
    /// `2.0` or `2.0.x` speaks 2.0.0.
    pub fn from_header(value: &str) -> Option<Self> {
        let value = value.trim();
        if is_semver_of(value, "1.0") {
            Some(XapiVersion::V1_0_3)
        } else if is_semver_of(value, "2.0") {
            Some(XapiVersion::V2_0_0)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            XapiVersion::V1_0_3 => "1.0.3",
            XapiVersion::V2_0_0 => "2.0.0",
        }
    }

    /// The `version` the LRS writes into a statement that has none.
    pub fn statement_default(self) -> &'static str {
        match self {
            XapiVersion::V1_0_3 => "1.0.0",
            XapiVersion::V2_0_0 => "2.0.0",
        }
    }

    /// Whether a statement's own `version` property is acceptable under this version.
    pub fn accepts_statement_version(self, version: &str) -> bool {
        match self {
            XapiVersion::V1_0_3 => is_semver_of(version, "1.0"),
            XapiVersion::V2_0_0 => is_semver_of(version, "1.0") || is_semver_of(version, "2.0"),
        }
    }
}

impl fmt::Display for XapiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `major.minor` alone or followed by `.patch` with a decimal patch number.
fn is_semver_of(value: &str, major_minor: &str) -> bool {
    match value.strip_prefix(major_minor) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_versions_map_to_the_spoken_version() {
        assert_eq!(XapiVersion::from_header("1.0.3"), Some(XapiVersion::V1_0_3));
        assert_eq!(XapiVersion::from_header("1.0"), Some(XapiVersion::V1_0_3));
        assert_eq!(XapiVersion::from_header("1.0.0"), Some(XapiVersion::V1_0_3));
        assert_eq!(XapiVersion::from_header("2.0.0"), Some(XapiVersion::V2_0_0));
        for bad in [
            "", "1", "1.1.0", "0.9.5", "1.0.", "1.0.x", "2.1.0", "3.0.0", "1.0.3a",
        ] {
            assert_eq!(XapiVersion::from_header(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statement_versions_follow_the_spoken_version() {
        assert!(XapiVersion::V1_0_3.accepts_statement_version("1.0.9"));
        assert!(!XapiVersion::V1_0_3.accepts_statement_version("2.0.0"));
        assert!(XapiVersion::V2_0_0.accepts_statement_version("2.0.0"));
        assert!(XapiVersion::V2_0_0.accepts_statement_version("1.0"));
        assert!(!XapiVersion::V2_0_0.accepts_statement_version("1.1.0"));
    }
}

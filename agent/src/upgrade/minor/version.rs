//! The pure part of a minor upgrade: what a `target_version` means for an engine, and the version
//! a server reports, reduced to numbers that compare.
//!
//! An engine's "major" is what a minor upgrade keeps: PostgreSQL's first number (since 10), MariaDB's
//! and Redis's first two ("10.11", "7.0"). A target that names the major alone means "whatever the
//! packages bring"; a full version ("10.11.19") is the version the server must report afterwards.

use std::cmp::Ordering;
use std::fmt;

use super::MinorError;
use crate::instances::Engine;

/// A dotted version, numbers only ("15.20", "10.11.19").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub Vec<u32>);

impl Version {
    /// `15`, `15.20`, `10.11.19`: one to four numbers, nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Option<Vec<u32>> = text
            .split('.')
            .map(|p| {
                if !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().ok()
                } else {
                    None
                }
            })
            .collect();
        parts.filter(|p| (1..=4).contains(&p.len())).map(Version)
    }

    /// The leading dotted numbers of what a server says: "15.14 (Debian 15.14-0+deb12u1)" ->
    /// 15.14, "10.11.18-MariaDB-0+deb12u1" -> 10.11.18, "7.0.15" -> 7.0.15.
    pub fn from_server(said: &str) -> Option<Self> {
        let end = said.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(said.len());
        Self::parse(said[..end].trim_end_matches('.'))
    }

    /// The first `n` numbers (the engine's major).
    pub fn prefix(&self, n: usize) -> Version {
        Version(self.0.iter().take(n).copied().collect())
    }

    pub fn compare(&self, other: &Version) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// How many leading numbers make an engine's major.
pub fn major_len(engine: Engine) -> usize {
    match engine {
        Engine::Postgresql => 1,
        Engine::Mariadb | Engine::Redis => 2,
    }
}

/// A request's target, read against the instance's major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The instance's major: a minor upgrade. `exact`: the version the server must report after.
    Minor { major: Version, exact: Option<Version> },
    /// A newer PostgreSQL major: the major upgrade's (`upgrade::job`).
    PostgresqlMajor,
}

/// The instance's major from its recorded `engine_version` ("15", "15.8", "10.11", "7.0.15").
pub fn current_major(instance: &str, engine: Engine, engine_version: &str) -> Result<Version, MinorError> {
    let n = major_len(engine);
    match Version::parse(engine_version) {
        Some(v) if v.0.len() >= n => Ok(v.prefix(n)),
        _ => Err(MinorError::Unsupported {
            instance: instance.to_owned(),
            message: format!(
                "its engine_version {engine_version:?} does not name a {} major (such as {})",
                engine.as_str(),
                example(engine)
            ),
        }),
    }
}

fn example(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgresql => "\"15\"",
        Engine::Mariadb => "\"10.11\"",
        Engine::Redis => "\"7.0\"",
    }
}

/// Reads `target_version` for an instance whose major is `current`. A newer PostgreSQL major is
/// the major upgrade's; a newer MariaDB or Redis major is refused (the agent offers none); an
/// older major is a downgrade, never offered.
pub fn classify(instance: &str, engine: Engine, current: &Version, target: &str) -> Result<Target, MinorError> {
    let n = major_len(engine);
    let invalid = |message: String| MinorError::InvalidRequest { field: "target_version", message };
    if target.is_empty() {
        return Err(invalid(format!(
            "is required: the instance's major ({current}) for a minor upgrade, or a full version such as {current}.N"
        )));
    }
    let Some(v) = Version::parse(target) else {
        return Err(invalid(format!("{target:?} is not a {} version such as {}", engine.as_str(), example(engine))));
    };
    if v.0.len() < n || v.0.len() > n + 1 {
        return Err(invalid(format!(
            "{target:?}: give the {} major ({current}) or a full version ({current}.N)",
            engine.as_str()
        )));
    }
    let major = v.prefix(n);
    match major.compare(current) {
        Ordering::Equal => Ok(Target::Minor { exact: (v.0.len() > n).then_some(v), major }),
        Ordering::Greater if engine == Engine::Postgresql => Ok(Target::PostgresqlMajor),
        Ordering::Greater => Err(MinorError::MajorNotOffered {
            instance: instance.to_owned(),
            engine: engine.as_str(),
            current: current.to_string(),
            target: target.to_owned(),
        }),
        Ordering::Less => Err(MinorError::Downgrade {
            instance: instance.to_owned(),
            running: current.to_string(),
            target: target.to_owned(),
        }),
    }
}

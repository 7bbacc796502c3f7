//! Scopes a token grants; `write` implies `read`.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One permission a token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Reconstructions, chunk (dedup) queries, HEADs, file-chunk-hashes, telemetry.
    Read,
    /// Xorb and shard uploads, upload grants and commits; implies [`Scope::Read`].
    Write,
    /// Node-to-node calls of the index group (Raft, forwarded writes, read index);
    /// held by nodes only, and granting nothing else.
    Cluster,
    /// Operator commands (membership, status, leader transfer); grants nothing else.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Cluster, Scope::Admin];

    /// The scope's name as it appears in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Cluster => "cluster",
            Scope::Admin => "admin",
        }
    }

    /// Whether holding `self` grants `needed`: the one place the implication rule lives.
    pub fn implies(self, needed: Scope) -> bool {
        match self {
            Scope::Write => matches!(needed, Scope::Read | Scope::Write),
            Scope::Read => needed == Scope::Read,
            Scope::Cluster => needed == Scope::Cluster,
            Scope::Admin => needed == Scope::Admin,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a scope (expected read, write, admin or cluster)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// The set of scopes in a token; serialized as the space-separated `scope` claim
/// (`"read write"`). An unknown scope name makes the claim (and the token) malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// Whether these scopes grant `needed` (directly or by implication).
    pub fn allows(&self, needed: Scope) -> bool {
        self.0.iter().any(|held| held.implies(needed))
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes held, weakest first.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().collect())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

impl FromStr for Scopes {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split_whitespace().map(str::parse).collect()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

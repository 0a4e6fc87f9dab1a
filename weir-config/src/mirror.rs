//! Port mirrors as configured: a `[[mirror]]` table of a configuration
//! file, or the body of a `mirror add` request.
//!
//! Control plane only. A mirror copies the frames its `src` ports receive
//! and its `dst` ports send (Open vSwitch's `select_src_port` and
//! `select_dst_port`) to its `to` port:
//!
//! ```toml
//! [[mirror]]
//! name = "span0"
//! src = ["vm1", "vm2"]      # frames these ports receive
//! dst = ["vm1"]             # frames these ports send
//! to = "span"               # where the copies go
//! ```

use serde::{Deserialize, Serialize};

use crate::{is_valid_name, NAME_RULE};

/// One mirror: its name, its sources and its output port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    /// Its name.
    pub name: String,
    /// Ports whose received frames are copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<String>,
    /// Ports whose sent frames are copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<String>,
    /// The port the copies are sent on.
    pub to: String,
}

/// Why a mirror is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The name does not match [`NAME_RULE`].
    #[error("invalid mirror name: must be {NAME_RULE}")]
    InvalidName,
    /// Neither `src` nor `dst` names a port.
    #[error("no source port: give `src`, `dst` or both")]
    NoSource,
    /// A key names a port that does not exist.
    #[error("`{key}` names no port `{port}`")]
    UnknownPort {
        /// `src`, `dst` or `to`.
        key: &'static str,
        /// The name.
        port: String,
    },
    /// The output port is one of the mirror's sources.
    #[error("`to` port `{port}` is also in `{key}`: a port cannot mirror to itself")]
    ToIsSource {
        /// `src` or `dst`.
        key: &'static str,
        /// The port.
        port: String,
    },
    /// The output port is a source of another mirror, or a source is the
    /// output of another: copies are never copied again.
    #[error("port `{port}` is the output of mirror `{output_of}` and a source of mirror `{source_of}`; mirrors do not chain")]
    Chained {
        /// The port.
        port: String,
        /// The mirror it is the output of.
        output_of: String,
        /// The mirror it is a source of.
        source_of: String,
    },
}

impl MirrorError {
    /// The key the error is about, to locate it in a file.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            MirrorError::InvalidName => Some("name"),
            MirrorError::NoSource => None,
            MirrorError::UnknownPort { key, .. } => Some(key),
            MirrorError::ToIsSource { .. } | MirrorError::Chained { .. } => Some("to"),
        }
    }
}

impl MirrorSpec {
    /// Checks the mirror on its own and against the ports (`port_exists`)
    /// and the other mirrors (`others`, this one's old version excluded).
    ///
    /// # Errors
    /// The first problem found.
    pub fn check<'a>(
        &self,
        port_exists: impl Fn(&str) -> bool,
        others: impl IntoIterator<Item = &'a MirrorSpec>,
    ) -> Result<(), MirrorError> {
        if !is_valid_name(&self.name) {
            return Err(MirrorError::InvalidName);
        }
        if self.src.is_empty() && self.dst.is_empty() {
            return Err(MirrorError::NoSource);
        }
        for (key, ports) in [("src", &self.src), ("dst", &self.dst)] {
            if let Some(p) = ports.iter().find(|p| !port_exists(p)) {
                return Err(MirrorError::UnknownPort {
                    key,
                    port: p.clone(),
                });
            }
            if ports.contains(&self.to) {
                return Err(MirrorError::ToIsSource {
                    key,
                    port: self.to.clone(),
                });
            }
        }
        if !port_exists(&self.to) {
            return Err(MirrorError::UnknownPort {
                key: "to",
                port: self.to.clone(),
            });
        }
        for other in others {
            if other.name == self.name {
                continue;
            }
            if other.sources().any(|p| *p == self.to) {
                return Err(MirrorError::Chained {
                    port: self.to.clone(),
                    output_of: self.name.clone(),
                    source_of: other.name.clone(),
                });
            }
            if let Some(p) = self.sources().find(|p| **p == other.to) {
                return Err(MirrorError::Chained {
                    port: p.clone(),
                    output_of: other.name.clone(),
                    source_of: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every port named in `src` or `dst`.
    pub fn sources(&self) -> impl Iterator<Item = &String> {
        self.src.iter().chain(&self.dst)
    }

    /// Whether the mirror names port `port` in any key.
    pub fn uses(&self, port: &str) -> bool {
        self.to == port || self.sources().any(|p| p == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, src: &[&str], dst: &[&str], to: &str) -> MirrorSpec {
        MirrorSpec {
            name: name.into(),
            src: src.iter().map(|s| s.to_string()).collect(),
            dst: dst.iter().map(|s| s.to_string()).collect(),
            to: to.into(),
        }
    }

    #[test]
    fn mirrors_must_name_existing_ports_and_not_loop() {
        let ports = |p: &str| ["a", "b", "span", "span2"].contains(&p);
        let none: [&MirrorSpec; 0] = [];
        assert_eq!(spec("m", &["a"], &["b"], "span").check(ports, none), Ok(()));
        assert_eq!(
            spec("m!", &["a"], &[], "span").check(ports, none),
            Err(MirrorError::InvalidName)
        );
        assert_eq!(
            spec("m", &[], &[], "span").check(ports, none),
            Err(MirrorError::NoSource)
        );
        assert_eq!(
            spec("m", &["a", "x"], &[], "span").check(ports, none),
            Err(MirrorError::UnknownPort {
                key: "src",
                port: "x".into()
            })
        );
        assert_eq!(
            spec("m", &["a"], &[], "x").check(ports, none),
            Err(MirrorError::UnknownPort {
                key: "to",
                port: "x".into()
            })
        );
        assert_eq!(
            spec("m", &["a"], &["span"], "span").check(ports, none),
            Err(MirrorError::ToIsSource {
                key: "dst",
                port: "span".into()
            })
        );
        let first = spec("m1", &["a"], &[], "span");
        assert!(matches!(
            spec("m2", &["span"], &[], "span2").check(ports, [&first]),
            Err(MirrorError::Chained { .. })
        ));
        assert!(matches!(
            spec("m2", &["b"], &[], "a").check(ports, [&first]),
            Err(MirrorError::Chained { .. })
        ));
        // Replacing a mirror is checked against the others only.
        assert_eq!(
            spec("m1", &["b"], &[], "span").check(ports, [&first]),
            Ok(())
        );
    }
}

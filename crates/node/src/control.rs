//! The local control socket (`HOME/agent.sock`, mode 0600): `swarmbak seed` hands a
//! backup to the agent that holds the store, asks it to publish, and watches the copies.
//! One JSON object per line each way (protocol-spec/swarm.md §8); requests and replies
//! are the typed enums below.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use swarmbak_core::InfoHash;
use swarmbak_format::SnapshotInfo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::error::ControlError;

/// What a local client asks the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Back up these (absolute) paths as a new snapshot and seed it.
    Seed { paths: Vec<PathBuf> },
    /// Publish a snapshot to the tracker, retrying for up to `timeout` seconds (600 when
    /// absent).
    Publish {
        infohash: String,
        #[serde(default = "default_publish_timeout")]
        timeout: u64,
    },
    /// Distinct machines other than the owner holding each piece of a snapshot.
    Holders { infohash: String },
    /// Sent on the connection of a running `seed` op: stop that backup, commit nothing
    /// (closing the connection does the same).
    Cancel,
    /// What the agent is doing (`swarmbak status`).
    Status,
    /// Forget snapshots by a retention policy (`swarmbak forget`: swarm.md §16.3).
    Forget {
        policy: swarmbak_core::retention::Policy,
        #[serde(default)]
        dry_run: bool,
    },
}

fn default_publish_timeout() -> u64 {
    600
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Response {
    Seeded {
        infohash: String,
        info: Option<Box<SnapshotInfo>>,
    },
    Published {
        published: bool,
    },
    Holders {
        holders: Vec<usize>,
    },
    Status {
        status: Box<crate::status::AgentStatus>,
    },
    Forgot {
        forgot: Box<crate::retention::Forgot>,
    },
    Error {
        error: String,
    },
}

impl Response {
    /// An error reply.
    pub fn error(e: impl std::fmt::Display) -> Response {
        Response::Error {
            error: e.to_string(),
        }
    }
}

/// Parses a request line; a line that is not one gets an error reply.
pub fn parse_request(line: &str) -> Result<Request, Response> {
    serde_json::from_str(line).map_err(|e| Response::error(format!("bad request: {e}")))
}

/// A connection to the agent's control socket.
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    pub fn new(path: &Path) -> ControlClient {
        ControlClient {
            path: path.to_path_buf(),
        }
    }

    /// Sends one request and reads its reply; an `Error` reply is [`ControlError::Refused`].
    pub async fn call(&self, req: &Request) -> Result<Response, ControlError> {
        let s = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|source| ControlError::Unreachable {
                path: self.path.clone(),
                source,
            })?;
        let (r, mut w) = s.into_split();
        let line = serde_json::to_string(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
        w.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| ControlError::Protocol(e.to_string()))?;
        let mut lines = BufReader::new(r).lines();
        let reply = match lines.next_line().await {
            Ok(Some(l)) => l,
            _ => return Err(ControlError::Closed),
        };
        match serde_json::from_str::<Response>(&reply) {
            Ok(Response::Error { error }) => Err(ControlError::Refused(error)),
            Ok(r) => Ok(r),
            Err(e) => Err(ControlError::Protocol(format!("{e}: {reply}"))),
        }
    }

    /// Asks the agent to back up `paths`; returns the new snapshot.
    pub async fn seed(
        &self,
        paths: Vec<PathBuf>,
    ) -> Result<(InfoHash, Option<SnapshotInfo>), ControlError> {
        match self.call(&Request::Seed { paths }).await? {
            Response::Seeded { infohash, info } => Ok((
                InfoHash::from_hex(&infohash).map_err(|e| ControlError::Protocol(e.to_string()))?,
                info.map(|i| *i),
            )),
            r => Err(ControlError::Protocol(format!("unexpected reply {r:?}"))),
        }
    }

    /// Asks the agent to publish `ih`.
    pub async fn publish(&self, ih: &InfoHash, timeout: u64) -> Result<(), ControlError> {
        match self
            .call(&Request::Publish {
                infohash: ih.to_hex(),
                timeout,
            })
            .await?
        {
            Response::Published { .. } => Ok(()),
            r => Err(ControlError::Protocol(format!("unexpected reply {r:?}"))),
        }
    }

    /// Forgets by `policy` (the agent holds the store).
    pub async fn forget(
        &self,
        policy: &swarmbak_core::retention::Policy,
        dry_run: bool,
    ) -> Result<crate::retention::Forgot, ControlError> {
        match self
            .call(&Request::Forget {
                policy: policy.clone(),
                dry_run,
            })
            .await?
        {
            Response::Forgot { forgot } => Ok(*forgot),
            other => Err(ControlError::Protocol(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// What the agent is doing.
    pub async fn status(&self) -> Result<crate::status::AgentStatus, ControlError> {
        match self.call(&Request::Status).await? {
            Response::Status { status } => Ok(*status),
            r => Err(ControlError::Protocol(format!("unexpected reply {r:?}"))),
        }
    }

    /// Holders per piece of `ih`, as the agent sees them.
    pub async fn holders(&self, ih: &InfoHash) -> Result<Vec<usize>, ControlError> {
        match self
            .call(&Request::Holders {
                infohash: ih.to_hex(),
            })
            .await?
        {
            Response::Holders { holders } => Ok(holders),
            r => Err(ControlError::Protocol(format!("unexpected reply {r:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_form() {
        // The form swarm.md §8 documents (and earlier agents spoke).
        let r = Request::Publish {
            infohash: "ab".repeat(20),
            timeout: 60,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            format!(
                r#"{{"op":"publish","infohash":"{}","timeout":60}}"#,
                "ab".repeat(20)
            )
        );
        assert_eq!(parse_request(&s).unwrap(), r);
        assert_eq!(
            parse_request(r#"{"op":"seed","paths":["/a","/b"]}"#).unwrap(),
            Request::Seed {
                paths: vec!["/a".into(), "/b".into()]
            }
        );
        assert_eq!(
            parse_request(r#"{"op":"publish","infohash":"x"}"#).unwrap(),
            Request::Publish {
                infohash: "x".into(),
                timeout: 600
            }
        );
        assert_eq!(
            parse_request(r#"{"op":"cancel"}"#).unwrap(),
            Request::Cancel
        );
        assert_eq!(
            parse_request(r#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(parse_request(r#"{"op":"format_disk"}"#).is_err());
        assert!(parse_request("not json").is_err());
        let e = serde_json::to_string(&Response::error("nope")).unwrap();
        assert_eq!(e, r#"{"error":"nope"}"#);
        let h: Response = serde_json::from_str(r#"{"holders":[1,2]}"#).unwrap();
        assert!(matches!(h, Response::Holders { holders } if holders == vec![1, 2]));
    }
}

//! The plugin's side of the agent's `Cni` gRPC service on a unix socket,
//! and the one place where the agent's failures become CNI error codes.
//!
//! gRPC over a unix socket still speaks HTTP/2 with an `http://` URI; the
//! authority is a placeholder, since the connector dials the socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use caracal_proto::agent as pb;
use caracal_proto::agent::cni_client::CniClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Response, Status};

use crate::env::Command;
use crate::error::{CniError, ErrorCode};

/// How long ADD, DEL, CHECK and GC wait for the agent. Below the kubelet's
/// and CRI runtimes' own deadlines (minutes), above an agent that is busy
/// creating an interface.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// STATUS is a readiness probe and should answer quickly.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent at {}", path.display())]
    Unreachable {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the agent answered {:?}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

impl AgentError {
    /// The agent has no such attachment.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Status(s) if s.code() == Code::NotFound)
    }

    /// The request may have been carried out although no answer came.
    pub fn is_timeout(&self) -> bool {
        matches!(self, AgentError::Status(s) if s.code() == Code::DeadlineExceeded)
    }

    /// The CNI error `command` reports for this failure:
    ///
    /// | failure | code |
    /// |---|---|
    /// | any, on STATUS | 50 not available |
    /// | cannot connect, `Unavailable`, `DeadlineExceeded` | 11 try again later |
    /// | `InvalidArgument` | 7 invalid network config |
    /// | `NotFound` | 3 container unknown |
    /// | anything else | 999, with the agent's message |
    ///
    /// (DEL treats `NotFound` as success before it gets here.)
    pub fn into_cni(self, command: Command) -> CniError {
        if command == Command::Status {
            return CniError::new(
                ErrorCode::NotAvailable,
                "the caracal agent is not available",
            )
            .with_details(chain(&self));
        }
        match self {
            AgentError::Unreachable { .. } => {
                CniError::new(ErrorCode::TryAgainLater, self.to_string())
                    .with_details(chain_of_sources(&self))
            }
            AgentError::Status(status) => {
                let code = match status.code() {
                    Code::Unavailable | Code::DeadlineExceeded => ErrorCode::TryAgainLater,
                    Code::InvalidArgument => ErrorCode::InvalidConfig,
                    Code::NotFound => ErrorCode::UnknownContainer,
                    _ => ErrorCode::Plugin,
                };
                let msg = if status.message().is_empty() {
                    format!("the agent failed {}", command.as_str())
                } else {
                    status.message().to_owned()
                };
                CniError::new(code, msg).with_details(format!("gRPC status {:?}", status.code()))
            }
        }
    }
}

/// `e` and its sources, joined with `: `. A source whose text its parent
/// already shows (tonic's transport error does) is not repeated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// The sources of `e` without `e` itself.
fn chain_of_sources(e: &dyn std::error::Error) -> String {
    e.source().map(chain).unwrap_or_default()
}

/// A connection to the agent's `Cni` service.
#[derive(Debug)]
pub struct Agent {
    client: CniClient<Channel>,
}

impl Agent {
    /// Dials the agent's socket; fails at once if nothing listens there.
    pub async fn connect(socket: &Path) -> Result<Agent, AgentError> {
        let path = socket.to_owned();
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        });
        let channel = Endpoint::from_static("http://caracal-agent.local")
            .connect_with_connector(connector)
            .await
            .map_err(|source| AgentError::Unreachable {
                path: socket.to_owned(),
                source,
            })?;
        Ok(Agent {
            client: CniClient::new(channel),
        })
    }

    pub async fn add(&mut self, req: pb::CniRequest) -> Result<pb::CniResult, AgentError> {
        within(REQUEST_TIMEOUT, self.client.add(req)).await
    }

    pub async fn del(&mut self, req: pb::CniRequest) -> Result<(), AgentError> {
        within(REQUEST_TIMEOUT, self.client.del(req))
            .await
            .map(drop)
    }

    pub async fn check(&mut self, req: pb::CniRequest) -> Result<(), AgentError> {
        within(REQUEST_TIMEOUT, self.client.check(req))
            .await
            .map(drop)
    }

    pub async fn gc(&mut self, req: pb::GcRequest) -> Result<pb::GcResponse, AgentError> {
        within(REQUEST_TIMEOUT, self.client.gc(req)).await
    }

    pub async fn status(&mut self) -> Result<pb::StatusResponse, AgentError> {
        within(STATUS_TIMEOUT, self.client.status(pb::StatusRequest {})).await
    }
}

/// Awaits a call for at most `limit`; running out is `DeadlineExceeded`.
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, AgentError> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => Ok(answer?.into_inner()),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the agent did not answer within {}s",
            limit.as_secs()
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(command: Command, status: Status) -> ErrorCode {
        AgentError::Status(status).into_cni(command).code
    }

    #[test]
    fn maps_grpc_statuses_to_cni_codes() {
        let add = Command::Add;
        assert_eq!(
            code(add, Status::unavailable("x")),
            ErrorCode::TryAgainLater
        );
        assert_eq!(
            code(add, Status::deadline_exceeded("x")),
            ErrorCode::TryAgainLater
        );
        assert_eq!(
            code(add, Status::invalid_argument("x")),
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            code(Command::Check, Status::not_found("x")),
            ErrorCode::UnknownContainer
        );
        assert_eq!(code(add, Status::internal("x")), ErrorCode::Plugin);
        assert_eq!(code(add, Status::already_exists("x")), ErrorCode::Plugin);
        assert_eq!(
            code(Command::Status, Status::internal("x")),
            ErrorCode::NotAvailable
        );
    }

    #[test]
    fn keeps_the_agent_message() {
        let e = AgentError::Status(Status::resource_exhausted("pool 10.65.0.0/16 is full"))
            .into_cni(Command::Add);
        assert_eq!(e.code.number(), 999);
        assert_eq!(e.msg, "pool 10.65.0.0/16 is full");
        assert_eq!(e.details, "gRPC status ResourceExhausted");
    }

    #[test]
    fn classifies_not_found_and_timeouts() {
        assert!(AgentError::Status(Status::not_found("x")).is_not_found());
        assert!(!AgentError::Status(Status::internal("x")).is_not_found());
        assert!(AgentError::Status(Status::deadline_exceeded("x")).is_timeout());
    }

    #[test]
    fn an_absent_socket_is_try_again_later_or_not_available() {
        let path =
            std::env::temp_dir().join(format!("caracal-cni-absent-{}.sock", std::process::id()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(Agent::connect(&path)).unwrap_err();
        let add = rt
            .block_on(Agent::connect(&path))
            .unwrap_err()
            .into_cni(Command::Add);
        assert_eq!(add.code, ErrorCode::TryAgainLater);
        assert!(add.msg.contains(&*path.to_string_lossy()), "{add}");
        assert!(!add.details.is_empty(), "{add:?}");
        let status = err.into_cni(Command::Status);
        assert_eq!(status.code, ErrorCode::NotAvailable);
        assert!(status.details.contains("cannot connect"), "{status:?}");
    }
}

//! The agent's connection to the dataplane: dialing its unix socket,
//! noticing at once when the connection drops (the dataplane stopped or
//! restarted), reading its state and applying [`Op`]s and policy batches
//! to it.
//!
//! Loss is noticed at the socket: HTTP/2 keeps a read pending on the
//! connection, so the end of the stream (or an error) arrives the moment
//! the dataplane goes away; and when the client ends the connection
//! itself (say, after the dataplane's GOAWAY), the socket is dropped.
//! Either wakes [`Connection::lost`].

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use caracal_proto::dataplane as pb;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tonic::transport::{Endpoint, Uri};

use super::diff::Op;
use super::model::DataplaneState;
use crate::dataplane_client::DataplaneClient;

#[derive(Debug, thiserror::Error)]
// The cause is part of the message (tonic's own says only "transport
// error"), so it is not also a `source`.
#[error("cannot connect to the dataplane at {}: {}", path.display(), causes(cause))]
pub struct ConnectError {
    path: PathBuf,
    cause: tonic::transport::Error,
}

/// `err` and its sources, `: `-separated ("transport error: No such file
/// or directory").
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut last = text.clone();
    let mut next = err.source();
    while let Some(e) = next {
        // Wrappers often repeat their source's message.
        let this = e.to_string();
        if this != last {
            text.push_str(": ");
            text.push_str(&this);
        }
        last = this;
        next = e.source();
    }
    text
}

/// One connection to the dataplane.
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: DataplaneClient,
    lost: Arc<Notify>,
}

impl Connection {
    /// Dials `socket`; fails at once when nothing listens there.
    pub async fn connect(socket: &Path) -> Result<Self, ConnectError> {
        let lost = Arc::new(Notify::new());
        let path = socket.to_owned();
        let signal = Arc::clone(&lost);
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            let lost = Arc::clone(&signal);
            async move {
                let stream = UnixStream::connect(path).await?;
                Ok::<_, io::Error>(TokioIo::new(Watched { stream, lost }))
            }
        });
        // The authority is a placeholder: the connector dials the socket.
        let channel = Endpoint::from_static("http://dataplane.local")
            .connect_with_connector(connector)
            .await
            .map_err(|cause| ConnectError {
                path: socket.to_owned(),
                cause,
            })?;
        Ok(Connection {
            client: DataplaneClient::new(channel),
            lost,
        })
    }

    /// Completes when the connection drops.
    pub async fn lost(&self) {
        self.lost.notified().await;
    }

    /// The dataplane's interfaces and routes, as listed.
    pub async fn list(&self) -> Result<Listing, tonic::Status> {
        let mut interfaces = self.client.interfaces.clone();
        let mut routes = self.client.routes.clone();
        let (i, r) = tokio::try_join!(
            interfaces.list_interfaces(pb::ListInterfacesRequest {}),
            routes.list_routes(pb::ListRoutesRequest {}),
        )?;
        Ok(Listing {
            interfaces: i.into_inner().interfaces,
            routes: r.into_inner().routes,
        })
    }

    /// Applies one op. For an interface added or replaced, the
    /// dataplane's description of it.
    pub async fn apply(&self, op: &Op) -> Result<Option<pb::Interface>, tonic::Status> {
        let mut interfaces = self.client.interfaces.clone();
        let mut routes = self.client.routes.clone();
        match op {
            Op::DeleteRoute(prefix) => {
                let req = pb::DeleteRouteRequest {
                    prefix: prefix.to_string(),
                };
                routes.delete_route(req).await?;
                Ok(None)
            }
            Op::DeleteInterface(name) => {
                let req = pb::DeleteInterfaceRequest { name: name.clone() };
                interfaces.delete_interface(req).await?;
                Ok(None)
            }
            Op::ReplaceInterface(spec) | Op::AddInterface(spec) => {
                let req = pb::AddInterfaceRequest {
                    spec: Some(spec.to_proto()),
                };
                Ok(Some(interfaces.add_interface(req).await?.into_inner()))
            }
            Op::ReplaceRoute(route) | Op::AddRoute(route) => {
                let req = pb::AddRouteRequest {
                    route: Some(route.to_proto()),
                };
                routes.add_route(req).await?;
                Ok(None)
            }
        }
    }

    /// Every IP set, policy and attachment the dataplane runs.
    pub async fn policy_state(&self) -> Result<pb::PolicyState, tonic::Status> {
        let mut policy = self.client.policy.clone();
        let req = pb::GetPolicyStateRequest {
            interface: String::new(),
        };
        Ok(policy.get_policy_state(req).await?.into_inner())
    }

    /// Applies `batch` as one atomic change; returns the policy
    /// generation every worker enforces once it is in.
    pub async fn apply_policy(&self, batch: pb::PolicyBatch) -> Result<u64, tonic::Status> {
        let mut policy = self.client.policy.clone();
        Ok(policy.apply(batch).await?.into_inner().generation)
    }
}

/// What the dataplane reports it runs.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub interfaces: Vec<pb::Interface>,
    pub routes: Vec<pb::Route>,
}

impl Listing {
    pub fn state(&self) -> DataplaneState {
        DataplaneState::from_listing(&self.interfaces, &self.routes)
    }
}

/// Whether a failed call means the connection is gone (rather than the
/// dataplane refusing the request).
pub fn is_disconnect(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
}

/// A unix stream that reports its end: end of stream, an error, or
/// being dropped.
#[derive(Debug)]
struct Watched {
    stream: UnixStream,
    lost: Arc<Notify>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.lost.notify_one();
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        let ended = match &poll {
            Poll::Ready(Ok(())) => room > 0 && buf.filled().len() == before,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if ended {
            this.lost.notify_one();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Err(_))) {
            this.lost.notify_one();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Err(_))) {
            this.lost.notify_one();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

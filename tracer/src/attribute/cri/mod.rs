//! The Container Runtime Interface: how a Kubernetes node's runtime (containerd, CRI-O) names
//! its pods and containers, asked over gRPC (`runtime.v1`) on the runtime's unix socket.
//!
//! At start (and after every reconnection) every sandbox and container is listed, so their
//! names are known before anything is killed; then the runtime's events keep that current
//! ([`events`]). A container is looked up (`ContainerStatus`, verbose: its main pid) when an
//! event says it started, or when a kill names one that nothing said anything about yet.

mod convert;
mod events;
pub mod proto;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::{Code, Status};

use self::events::EventSource;
use self::proto::containerd::services::events::v1::SubscribeRequest;
use self::proto::containerd::services::events::v1::events_client::EventsClient;
use self::proto::runtime::v1 as cri;
use self::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
pub use self::transport::UnixChannel;
use super::runtime::{
    ContainerMetadata, ContainerRuntime, RuntimeError, RuntimeEvent, RuntimeResult,
};

/// Where containerd and CRI-O listen, unless `--cri-socket` says otherwise.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/containerd/containerd.sock", "/run/crio/crio.sock"];

/// A call's own limit; the lookups a kill waits for have tighter ones around them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The kubelet's own limit: a node's listing can be large.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Events waiting for the watcher; the runtime's stream waits while this is full.
const EVENT_QUEUE: usize = 64;

pub type Client = RuntimeServiceClient<UnixChannel>;

/// A CRI client for the runtime at one socket.
pub struct CriRuntime {
    socket: String,
    state: Mutex<Option<Connected>>,
    /// The event stream last used, so a change (a runtime upgraded) is said again.
    source: Mutex<Option<EventSource>>,
}

#[derive(Clone)]
struct Connected {
    channel: UnixChannel,
    /// `containerd`, `cri-o`, or `cri` for another runtime.
    runtime: &'static str,
    version: String,
}

/// A client for `channel`, with the kubelet's message size limit.
pub fn client(channel: UnixChannel) -> Client {
    RuntimeServiceClient::with_origin(channel, UnixChannel::origin())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

impl CriRuntime {
    pub fn new(socket: impl Into<String>) -> Self {
        CriRuntime {
            socket: socket.into(),
            state: Mutex::new(None),
            source: Mutex::new(None),
        }
    }

    fn connected(&self) -> RuntimeResult<Connected> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match &*state {
            Some(connected) if !connected.channel.is_closed() => Ok(connected.clone()),
            Some(_) => Err(RuntimeError::Unavailable(
                "the connection was closed".to_owned(),
            )),
            None => Err(RuntimeError::Unavailable("not connected".to_owned())),
        }
    }

    async fn try_connect(&self) -> RuntimeResult<()> {
        let channel = UnixChannel::connect(&self.socket)
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    RuntimeError::Absent(format!("nothing listens at {}: {err}", self.socket))
                }
                _ => RuntimeError::Unavailable(format!("connecting: {err}")),
            })?;
        let request = cri::VersionRequest {
            version: "v1".to_owned(),
        };
        let version = call(client(channel.clone()).version(request))
            .await
            .map_err(|err| match err {
                // Docker's own containerd has its CRI plugin disabled.
                RuntimeError::Garbage(why) if why.contains("Unimplemented") => {
                    RuntimeError::Absent(format!("it serves no CRI runtime.v1 ({why})"))
                }
                err => err,
            })?;
        let runtime = match version.runtime_name.as_str() {
            "containerd" => "containerd",
            "cri-o" => "cri-o",
            _ => "cri",
        };
        let version = format!("{} {}", version.runtime_name, version.runtime_version);
        *self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(Connected {
            channel,
            runtime,
            version,
        });
        Ok(())
    }

    async fn try_list(&self) -> RuntimeResult<Vec<ContainerMetadata>> {
        let Connected {
            channel, runtime, ..
        } = self.connected()?;
        let mut client = client(channel);
        let sandboxes = call(client.list_pod_sandbox(cri::ListPodSandboxRequest::default()))
            .await?
            .items;
        let containers = call(client.list_containers(cri::ListContainersRequest::default()))
            .await?
            .containers;
        let pods: HashMap<&str, &cri::PodSandbox> = sandboxes
            .iter()
            .map(|sandbox| (sandbox.id.as_str(), sandbox))
            .collect();
        let mut listed: Vec<ContainerMetadata> = containers
            .into_iter()
            .map(|container| {
                let pod = pods
                    .get(container.pod_sandbox_id.as_str())
                    .and_then(|sandbox| sandbox.metadata.as_ref());
                convert::listed(container, pod, runtime)
            })
            .collect();
        listed.extend(sandboxes.iter().map(|sandbox| {
            convert::sandbox(
                &sandbox.id,
                sandbox.metadata.as_ref(),
                sandbox.labels.clone(),
                runtime,
            )
        }));
        Ok(listed)
    }

    async fn try_inspect(&self, id: &str) -> RuntimeResult<Option<ContainerMetadata>> {
        let Connected {
            channel, runtime, ..
        } = self.connected()?;
        let mut client = client(channel);
        let request = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: true,
        };
        match call_status(client.container_status(request)).await {
            Ok(response) => {
                let Some((mut meta, sandbox_id)) = convert::status(response, runtime) else {
                    return Ok(None);
                };
                // Created by something other than a kubelet, without its labels: the
                // sandbox knows the pod.
                if let (None, Some(sandbox_id)) = (&meta.k8s.pod_name, sandbox_id)
                    && let Ok(Some(sandbox)) = self.sandbox(&mut client, &sandbox_id).await
                {
                    meta.k8s = meta.k8s.or_pod(&sandbox.k8s);
                }
                Ok(Some(meta))
            }
            // A sandbox is no container to the CRI.
            Err(status) if status.code() == Code::NotFound => self.sandbox(&mut client, id).await,
            Err(status) => Err(classify(status)),
        }
    }

    async fn sandbox(
        &self,
        client: &mut Client,
        id: &str,
    ) -> RuntimeResult<Option<ContainerMetadata>> {
        let runtime = self.connected()?.runtime;
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        match call_status(client.pod_sandbox_status(request)).await {
            Ok(response) => Ok(response.status.map(|status| {
                convert::sandbox(&status.id, status.metadata.as_ref(), status.labels, runtime)
            })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(classify(status)),
        }
    }

    /// Says which event stream follows the runtime when it is first chosen, or changes.
    fn chose(&self, source: EventSource) {
        let mut last = self
            .source
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *last != Some(source) {
            log::info!("container runtime {}: following {source}", self.describe());
            *last = Some(source);
        }
    }
}

impl ContainerRuntime for CriRuntime {
    fn describe(&self) -> String {
        match self.connected() {
            Ok(connected) => format!("{} (CRI) at {}", connected.version, self.socket),
            Err(_) => format!("the CRI at {}", self.socket),
        }
    }

    fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(self.try_connect())
    }

    fn is_connected(&self) -> bool {
        self.connected().is_ok()
    }

    fn disconnect(&self) {
        *self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = None;
    }

    fn list(&self) -> BoxFuture<'_, RuntimeResult<Vec<ContainerMetadata>>> {
        Box::pin(self.try_list())
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>> {
        Box::pin(self.try_inspect(id))
    }

    /// The CRI keeps no history to replay: the listing that follows a (re)connection covers
    /// what happened meanwhile, so `since` is not needed. The subscription is made at once, on
    /// a task of its own, so nothing falls between it and that listing.
    fn events(&self, _since: SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>> {
        let Connected {
            channel, runtime, ..
        } = match self.connected() {
            Ok(connected) => connected,
            Err(err) => return stream::once(async { Err(err) }).boxed(),
        };
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        let (chosen_sender, chosen) = tokio::sync::oneshot::channel();
        tokio::spawn(forward_events(channel, runtime, sender, chosen_sender));
        let said = async move {
            if let Ok(source) = chosen.await {
                self.chose(source);
            }
        };
        let events = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|event| (event, receiver))
        });
        // The choice is said before the first event is handed on.
        stream::once(said)
            .filter_map(|()| async { None })
            .chain(events)
            .boxed()
    }
}

/// Subscribes to the runtime's events and sends them on until either side ends.
async fn forward_events(
    channel: UnixChannel,
    runtime: &'static str,
    sender: mpsc::Sender<RuntimeResult<RuntimeEvent>>,
    chosen: tokio::sync::oneshot::Sender<EventSource>,
) {
    let mut client = client(channel.clone());
    let failed = match client.get_container_events(cri::GetEventsRequest {}).await {
        Ok(response) => {
            let _ = chosen.send(EventSource::Cri);
            let mut events = response.into_inner();
            loop {
                match next(&mut events, &sender).await {
                    Ok(Some(event)) => {
                        if sender
                            .send(Ok(events::from_cri(event, runtime)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => break status,
                }
            }
        }
        Err(status) if status.code() == Code::Unimplemented => {
            let _ = chosen.send(EventSource::Containerd);
            let mut events_client = EventsClient::with_origin(channel, UnixChannel::origin())
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let request = SubscribeRequest {
                filters: events::containerd_filters(),
            };
            match events_client.subscribe(request).await {
                Ok(response) => {
                    let mut events = response.into_inner();
                    loop {
                        match next(&mut events, &sender).await {
                            Ok(Some(envelope)) => {
                                let Some(event) = events::from_containerd(envelope) else {
                                    continue;
                                };
                                if sender.send(Ok(event)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => return,
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => Status::new(
                    status.code(),
                    format!(
                        "neither the CRI's GetContainerEvents nor containerd's events: {}",
                        status.message()
                    ),
                ),
            }
        }
        Err(status) => status,
    };
    let _ = sender.send(Err(classify(failed))).await;
}

/// The stream's next message, or its end once nobody reads what is forwarded (the watcher
/// reconnected): the subscription ends with it rather than at the next event.
async fn next<T>(
    events: &mut tonic::Streaming<T>,
    sender: &mpsc::Sender<RuntimeResult<RuntimeEvent>>,
) -> Result<Option<T>, Status> {
    tokio::select! {
        message = events.message() => message,
        () = sender.closed() => Ok(None),
    }
}

/// A unary call with its own limit, its status as a [`RuntimeError`].
async fn call<T>(
    request: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> RuntimeResult<T> {
    call_status(request).await.map_err(classify)
}

/// A unary call with its own limit; a timeout is a status too.
async fn call_status<T>(
    request: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => {
            let why = format!("no answer within {REQUEST_TIMEOUT:?}");
            let mut status = Status::deadline_exceeded(why.clone());
            // Ours, not the runtime's: `classify` may quote it.
            status.set_source(Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                why,
            )));
            Err(status)
        }
    }
}

/// A status as an error that names its code. Its message is quoted only where this side made
/// it (a transport failure, a timeout: the status has a source); a message the runtime sent
/// is its own text, which may carry anything, so it is left out.
fn classify(status: Status) -> RuntimeError {
    let why = if std::error::Error::source(&status).is_some() {
        format!("{:?}: {}", status.code(), status.message())
    } else {
        format!("{:?} (the runtime's message is not quoted)", status.code())
    };
    match status.code() {
        Code::Unimplemented | Code::InvalidArgument | Code::DataLoss | Code::Internal => {
            RuntimeError::Garbage(why)
        }
        _ => RuntimeError::Unavailable(why),
    }
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    #[test]
    fn a_runtime_message_is_not_quoted() {
        let status = Status::internal("secret-token \u{1b}]0;title\u{7}");
        let said = classify(status).to_string();
        assert!(said.contains("Internal"), "{said}");
        assert!(!said.contains("secret-token"), "{said}");
        assert!(!said.contains('\u{1b}'), "{said}");
    }

    #[test]
    fn a_failure_of_this_side_is_quoted() {
        let mut status = Status::unavailable("transport error");
        status.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let said = classify(status).to_string();
        assert!(said.contains("transport error"), "{said}");
    }
}

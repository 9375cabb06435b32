//! The Docker Engine API over a unix socket, through `bollard`. podman serves the same API
//! (`podman system service`), so one client covers both; `/version` says which one answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt as _};

use super::runtime::{
    ContainerMetadata, ContainerRuntime, RuntimeError, RuntimeEvent, RuntimeResult,
};

/// bollard's own request timeout, in whole seconds; callers put tighter deadlines around
/// the lookups that a kill waits for.
const REQUEST_TIMEOUT_SECS: u64 = 5;

pub struct DockerApi {
    socket: String,
    state: Mutex<Option<Connected>>,
    /// The server's API version, once `/version` said it is older than bollard's: every
    /// reconnection speaks it from its first request. Docker refuses a newer client's every
    /// request (400), its event stream among them, and Debian 12's Docker 20.10 speaks 1.41.
    server_version: Mutex<Option<ClientVersion>>,
}

#[derive(Clone)]
struct Connected {
    client: Docker,
    engine: &'static str,
    /// `/version` answered on this connection: the client speaks the server's API version.
    identified: bool,
}

impl DockerApi {
    pub fn new(socket: impl Into<String>) -> Self {
        DockerApi {
            socket: socket.into(),
            state: Mutex::new(None),
            server_version: Mutex::new(None),
        }
    }

    fn connected(&self) -> RuntimeResult<Connected> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
            .ok_or_else(|| RuntimeError::Unavailable("not connected".to_owned()))
    }

    /// A ping: milliseconds, so a kill waiting for the connection does not wait long.
    async fn try_connect(&self) -> RuntimeResult<()> {
        let known = *self
            .server_version
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let client = unix_client(&self.socket, known.as_ref().unwrap_or(API_DEFAULT_VERSION))?;
        client
            .ping()
            .await
            .map_err(|err| classify(PING_PATH, err))?;
        // Until `/version` says, the socket's name is the best guess at the engine.
        let engine = if self.socket.contains("podman") {
            "podman"
        } else {
            "docker"
        };
        self.set(Connected {
            client,
            engine,
            identified: false,
        });
        Ok(())
    }

    /// `/version` names the engine and its API version. podman takes most of a second to
    /// answer it, so it comes after the connection is in use.
    async fn try_identify(&self) -> RuntimeResult<()> {
        let Connected { client, .. } = self.connected()?;
        let version = client
            .version()
            .await
            .map_err(|err| classify(VERSION_PATH, err))?;
        let podman = version
            .components
            .unwrap_or_default()
            .iter()
            .any(|component| component.name.to_ascii_lowercase().contains("podman"));
        let engine = if podman { "podman" } else { "docker" };
        // Speak the server's version when it is older than bollard's: Docker refuses newer ones.
        let client = match version.api_version.as_deref().and_then(parse_api_version) {
            Some(server) if server < (1, 53) => {
                let server = ClientVersion {
                    major_version: server.0,
                    minor_version: server.1,
                };
                *self
                    .server_version
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner()) = Some(server);
                unix_client(&self.socket, &server)?
            }
            _ => client,
        };
        self.set(Connected {
            client,
            engine,
            identified: true,
        });
        Ok(())
    }

    fn set(&self, connected: Connected) {
        *self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(connected);
    }
}

/// A client of the socket at `socket`, through the bounded transport ([`super::docker_socket`]).
fn unix_client(socket: &str, version: &ClientVersion) -> RuntimeResult<Docker> {
    Docker::connect_with_custom_transport(
        super::docker_socket::transport(socket),
        Some("http://localhost"),
        REQUEST_TIMEOUT_SECS,
        version,
    )
    .map_err(|err| classify("the client", err))
}

/// `1.41` → (1, 41).
fn parse_api_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl ContainerRuntime for DockerApi {
    fn describe(&self) -> String {
        match self.connected() {
            Ok(connected) => format!("{} at {}", connected.engine, self.socket),
            Err(_) => format!("the Docker API at {}", self.socket),
        }
    }

    fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(self.try_connect())
    }

    fn identify(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(self.try_identify())
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
        Box::pin(async move {
            let Connected { client, engine, .. } = self.connected()?;
            let options = ListContainersOptionsBuilder::default().all(true).build();
            let summaries = client
                .list_containers(Some(options))
                .await
                .map_err(|err| classify(LIST_PATH, err))?;
            Ok(summaries
                .into_iter()
                .filter_map(|summary| from_summary(summary, engine))
                .collect())
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>> {
        Box::pin(async move {
            let Connected { client, engine, .. } = self.connected()?;
            match client.inspect_container(id, None).await {
                Ok(response) => from_inspect(response, engine).map(Some),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                // podman 4 says `"Status": "stopped"`, which the API does not define: the
                // listing still names the container, without its pid and limit.
                Err(err) => match classify(&inspect_path(id), err) {
                    RuntimeError::Garbage(why) => {
                        log::debug!("inspecting container {id}: {why}; listing it instead");
                        let filters = HashMap::from([("id", vec![id])]);
                        let options = ListContainersOptionsBuilder::default()
                            .all(true)
                            .filters(&filters)
                            .build();
                        let listed = client
                            .list_containers(Some(options))
                            .await
                            .map_err(|err| classify(LIST_PATH, err))?;
                        Ok(listed
                            .into_iter()
                            .filter_map(|summary| from_summary(summary, engine))
                            .find(|meta| meta.id == id))
                    }
                    err => Err(err),
                },
            }
        })
    }

    fn events(&self, since: SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>> {
        let since = since
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        // Docker refuses an API version newer than its own (400 to the whole stream), and
        // bollard's is newer than most daemons': the stream is asked in the server's version,
        // which `/version` says, milliseconds on Docker. podman (slow to answer `/version`)
        // takes bollard's, so its events are followed at once.
        let connected = async move {
            if let Ok(Connected {
                engine: "docker",
                identified: false,
                ..
            }) = self.connected()
                && let Err(err) = self.try_identify().await
            {
                log::debug!("container runtime {}: /version: {err}", self.socket);
            }
            self.connected()
        };
        stream::once(connected)
            .flat_map(move |connected| match connected {
                // Read line by line here, each bounded: bollard's reader would keep an endless
                // line.
                Ok(Connected { client, engine, .. }) => {
                    super::docker_socket::events(&self.socket, &client.client_version(), since)
                        .filter_map(move |message| async move {
                            match message {
                                Ok(message) => from_event(message, engine).map(Ok),
                                Err(why) => Some(Err(RuntimeError::Unavailable(why))),
                            }
                        })
                        .boxed()
                }
                Err(err) => stream::once(async { Err(err) }).boxed(),
            })
            .boxed()
    }
}

/// The Engine API's paths the agent asks, for messages.
const PING_PATH: &str = "GET /_ping";
const VERSION_PATH: &str = "GET /version";
const LIST_PATH: &str = "GET /containers/json";

fn inspect_path(id: &str) -> String {
    format!("GET /containers/{}/json", super::short(id))
}

/// What went wrong with the request to `path`, in the agent's own words: the kind of error and
/// the path, never what was answered. Whoever listens at the socket chooses the daemon's error
/// text (bollard's `message`) and the bytes that failed to parse, and both would otherwise reach
/// the log, the record's attribution warning and the history.
fn classify(path: &str, err: BollardError) -> RuntimeError {
    match err {
        // The socket's path is the operator's, not the daemon's.
        BollardError::SocketNotFoundError(socket) => {
            RuntimeError::Absent(format!("no socket at {socket}"))
        }
        BollardError::DockerResponseServerError { status_code, .. } => {
            RuntimeError::Unavailable(format!("{path}: refused with HTTP status {status_code}"))
        }
        BollardError::JsonDataError { column, .. } => RuntimeError::Garbage(format!(
            "{path}: an answer that is not the Engine API's (at column {column})"
        )),
        BollardError::JsonSerdeError { err } => RuntimeError::Garbage(format!(
            "{path}: an answer that is not the Engine API's ({:?} error at line {}, column {})",
            err.classify(),
            err.line(),
            err.column()
        )),
        BollardError::APIVersionParseError {} => {
            RuntimeError::Garbage(format!("{path}: an API version that is not one"))
        }
        BollardError::StrParseError { .. } => {
            RuntimeError::Garbage(format!("{path}: an answer that is not UTF-8"))
        }
        BollardError::DockerStreamError { .. } | BollardError::DockerContainerWaitError { .. } => {
            RuntimeError::Unavailable(format!("{path}: the daemon reported an error"))
        }
        BollardError::RequestTimeoutError => {
            RuntimeError::Unavailable(format!("{path}: no answer within {REQUEST_TIMEOUT_SECS} s"))
        }
        // The socket file of a daemon that is not running: as absent as no file at all.
        BollardError::IOError { err } if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            RuntimeError::Absent("nothing listens at the socket".to_owned())
        }
        err if refused(&err) => RuntimeError::Absent("nothing listens at the socket".to_owned()),
        // The transport's and hyper's own words (a connection reset, an answer past its bound,
        // a malformed header), which name no content; hyper's message alone does not say what
        // the connection's reader reported.
        err => RuntimeError::Unavailable(format!("{path}: {}", super::docker_socket::chain(&err))),
    }
}

/// Whether the error comes down to a connection refused.
fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = err.source();
    }
    false
}

pub fn from_summary(summary: ContainerSummary, engine: &'static str) -> Option<ContainerMetadata> {
    let id = summary.id?;
    let name = summary
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut meta = ContainerMetadata::new(&id, &name, engine, summary.labels.unwrap_or_default());
    meta.image = summary.image.map(|image| super::runtime::bounded(&image));
    Some(meta)
}

pub fn from_inspect(
    response: ContainerInspectResponse,
    engine: &'static str,
) -> RuntimeResult<ContainerMetadata> {
    let id = response
        .id
        .ok_or_else(|| RuntimeError::Garbage("a container without an id".to_owned()))?;
    let config = response.config.unwrap_or_default();
    let host_config = response.host_config.unwrap_or_default();
    let mut meta = ContainerMetadata::new(
        &id,
        response.name.as_deref().unwrap_or_default(),
        engine,
        config.labels.unwrap_or_default(),
    );
    meta.image = config
        .image
        .or(response.image)
        .map(|image| super::runtime::bounded(&image));
    let state = response.state.unwrap_or_default();
    // Pid 0 means not running.
    meta.main_pid = state
        .pid
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0);
    meta.memory_limit_bytes = host_config
        .memory
        .and_then(|bytes| u64::try_from(bytes).ok())
        .filter(|&bytes| bytes > 0);
    meta.restart_policy = host_config
        .restart_policy
        .and_then(|policy| policy.name)
        .map(|name| name.to_string())
        .filter(|name| !name.is_empty());
    meta.restart_count = response
        .restart_count
        .and_then(|count| u32::try_from(count).ok());
    Ok(meta)
}

/// Container events that change what the agent knows; the rest (exec, attach, …) are ignored.
pub fn from_event(message: EventMessage, engine: &'static str) -> Option<RuntimeEvent> {
    let actor = message.actor?;
    let id = actor.id?;
    match message.action.as_deref()? {
        "create" | "start" | "rename" | "update" | "restart" => {
            // Docker and podman put the name and image in the event's attributes, next to the
            // labels: enough to name a container that is gone before it could be inspected.
            let mut attributes = actor.attributes.unwrap_or_default();
            let name = attributes.remove("name");
            let image = attributes.remove("image");
            let known = name.map(|name| {
                let mut meta = ContainerMetadata::new(&id, &name, engine, attributes);
                meta.image = image.map(|image| super::runtime::bounded(&image));
                Box::new(meta)
            });
            Some(RuntimeEvent::Changed { id, known })
        }
        // Docker says `destroy`; podman's compatible API says `remove`.
        "destroy" | "remove" => Some(RuntimeEvent::Removed { id }),
        _ => None,
    }
}

/// How long a lookup that a kill waits for may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(400);

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    /// A socket file nobody listens at any more, as a stopped daemon leaves it, and none at all.
    #[tokio::test]
    async fn a_stale_socket_is_absent_like_a_missing_one() {
        let dir = crate::history::tests::temp_dir();
        let stale = dir.join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        for socket in [stale, dir.join("none.sock")] {
            let api = DockerApi::new(socket.to_str().unwrap());
            match api.try_connect().await {
                Err(RuntimeError::Absent(_)) => {}
                other => panic!("{}: {other:?}", socket.display()),
            }
        }
    }

    /// Docker 20.10 (API 1.41) refuses bollard's newer version on every path: once `/version`
    /// told, a reconnection (after its event stream was refused, say) speaks 1.41 from the start.
    #[tokio::test]
    async fn a_reconnection_speaks_the_version_the_server_told() {
        let dir = crate::history::tests::temp_dir();
        let socket = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut request = vec![0; 4096];
                let read = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]).into_owned();
                let body = if request.contains("/version ") {
                    r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#
                } else {
                    "OK"
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let api = DockerApi::new(socket.to_str().unwrap());
        let version = |api: &DockerApi| api.connected().unwrap().client.client_version();
        api.try_connect().await.unwrap();
        assert_eq!(version(&api), *API_DEFAULT_VERSION);
        api.try_identify().await.unwrap();
        let server = ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        assert_eq!(version(&api), server);
        api.disconnect();
        api.try_connect().await.unwrap();
        assert_eq!(version(&api), server);
    }

    fn event(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("c0ffee".to_owned()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            ..EventMessage::default()
        }
    }

    #[test]
    fn a_start_event_carries_name_image_and_labels() {
        let message = event(
            "start",
            &[
                ("name", "db"),
                ("image", "localhost/pg:16"),
                ("io.kubernetes.pod.name", "db-0"),
            ],
        );
        let Some(RuntimeEvent::Changed {
            id,
            known: Some(meta),
        }) = from_event(message, "podman")
        else {
            panic!("a start event is a change with what it carried");
        };
        assert_eq!(id, "c0ffee");
        assert_eq!(meta.name, "db");
        assert_eq!(meta.image.as_deref(), Some("localhost/pg:16"));
        assert_eq!(meta.runtime, "podman");
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("db-0"));
        assert!(!meta.labels.contains_key("name"));
    }

    #[test]
    fn both_engines_removal_words_are_removals() {
        for action in ["destroy", "remove"] {
            assert_eq!(
                from_event(event(action, &[]), "docker"),
                Some(RuntimeEvent::Removed {
                    id: "c0ffee".to_owned()
                })
            );
        }
    }

    #[test]
    fn other_events_and_events_without_an_actor_are_ignored() {
        assert_eq!(from_event(event("exec_start", &[]), "docker"), None);
        assert_eq!(from_event(event("die", &[]), "docker"), None);
        let message = EventMessage {
            action: Some("start".to_owned()),
            ..EventMessage::default()
        };
        assert_eq!(from_event(message, "docker"), None);
    }

    #[test]
    fn inspect_gives_pid_limit_and_restart_policy() {
        let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "c0ffee",
            "Name": "/web",
            "Image": "sha256:1234",
            "State": {"Pid": 4242, "Running": true},
            "Config": {"Image": "localhost/web:1", "Labels": {"app": "web"}},
            "HostConfig": {"Memory": 50331648, "RestartPolicy": {"Name": "always"}},
            "RestartCount": 8
        }))
        .expect("a valid inspect response");
        let meta = from_inspect(response, "docker").expect("complete enough");
        assert_eq!(meta.name, "web");
        assert_eq!(meta.image.as_deref(), Some("localhost/web:1"));
        assert_eq!(meta.main_pid, Some(4242));
        assert_eq!(meta.memory_limit_bytes, Some(48 << 20));
        assert_eq!(meta.restart_policy.as_deref(), Some("always"));
        assert_eq!(meta.restart_count, Some(8));
    }

    #[test]
    fn a_stopped_container_without_limit_has_neither() {
        let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "c0ffee",
            "Name": "/batch",
            "State": {"Pid": 0},
            "HostConfig": {"Memory": 0, "RestartPolicy": {"Name": ""}}
        }))
        .expect("a valid inspect response");
        let meta = from_inspect(response, "docker").expect("complete enough");
        assert_eq!(meta.main_pid, None);
        assert_eq!(meta.memory_limit_bytes, None);
        assert_eq!(meta.restart_policy, None);
    }

    #[test]
    fn api_versions_parse() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version("1.53"), Some((1, 53)));
        assert_eq!(parse_api_version("v2"), None);
        assert!(parse_api_version("1.9").unwrap() < (1, 53));
    }

    #[test]
    fn an_inspect_answer_without_an_id_is_garbage() {
        let response = ContainerInspectResponse::default();
        assert!(matches!(
            from_inspect(response, "docker"),
            Err(RuntimeError::Garbage(_))
        ));
    }
}

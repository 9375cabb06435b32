//! The state readers on copies of real state directories: what they list, and what they say
//! when a runtime writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::*;
use crate::attribute::runtime::Origin;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/state");
const SHOP_DB: &str = "4e9ee8e1d7d167949d849d3dbd4588c0997a1353fd384018f7f721b5dc85c79c";
const NEW_ID: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";

/// A fresh directory under the temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("oomtrace-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` as a runtime does: a temporary file renamed over the old one.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-oomtrace");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn next_event(events: &mut BoxStream<'_, RuntimeResult<RuntimeEvent>>) -> RuntimeEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on")
        .expect("no error")
}

#[tokio::test]
async fn dockers_state_is_listed_and_followed() {
    let scratch = Scratch::new("docker");
    let root = &scratch.0;
    let fixture = Path::new(FIXTURES).join("docker/containers").join(SHOP_DB);
    let dir = root.join("containers").join(SHOP_DB);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.v2.json", "hostconfig.json"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }

    let state = RuntimeState::new(root, 16);
    assert!(!state.is_connected());
    state.connect().await.expect("a Docker data root");
    assert_eq!(
        state.describe(),
        format!("docker, its state at {}", root.display())
    );
    assert!(state.describes_in_full());
    let mut events = state.events(SystemTime::now());
    let listed = state.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "shop_db_1");
    assert_eq!(listed[0].origin, Origin::State);

    // A container created: its directory, then its config.
    let config = std::fs::read_to_string(fixture.join("config.v2.json"))
        .unwrap()
        .replace(SHOP_DB, NEW_ID)
        .replace("/shop_db_1", "/shop_db_2");
    let new_dir = root.join("containers").join(NEW_ID);
    std::fs::create_dir(&new_dir).unwrap();
    replace(&new_dir.join("config.v2.json"), config.as_bytes());
    let named = loop {
        match next_event(&mut events).await {
            RuntimeEvent::Changed {
                id,
                known: Some(meta),
            } if id == NEW_ID => break meta,
            RuntimeEvent::Changed { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(named.name, "shop_db_2");
    assert_eq!(named.compose.service.as_deref(), Some("db"));
    assert_eq!(
        state.inspect(NEW_ID).await.unwrap().map(|meta| meta.name),
        Some("shop_db_2".to_owned())
    );

    // Renamed, as `docker rename` rewrites the config.
    replace(
        &new_dir.join("config.v2.json"),
        config.replace("/shop_db_2", "/renamed").as_bytes(),
    );
    assert!(matches!(
        next_event(&mut events).await,
        RuntimeEvent::Changed { known: Some(meta), .. } if meta.name == "renamed"
    ));

    // Removed.
    std::fs::remove_dir_all(&new_dir).unwrap();
    assert_eq!(
        next_event(&mut events).await,
        RuntimeEvent::Removed {
            id: NEW_ID.to_owned()
        }
    );
    assert_eq!(state.inspect(NEW_ID).await.unwrap(), None);

    // The whole directory gone: the stream says so and ends, and the runtime reconnects later.
    std::fs::remove_dir_all(root.join("containers")).unwrap();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(err))) => break err,
            Ok(None) => panic!("ended without saying why"),
            Err(_) => panic!("no end within 5 s"),
        }
    };
    assert!(matches!(ended, RuntimeError::Absent(_)), "{ended}");
}

#[tokio::test]
async fn podmans_state_is_listed_from_libpods_database() {
    let scratch = Scratch::new("podman-bolt");
    let root = &scratch.0;
    std::fs::create_dir_all(root.join("libpod")).unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("podman/bolt_state.db"),
        root.join("libpod/bolt_state.db"),
    )
    .unwrap();
    let state = RuntimeState::new(root, 16);
    state.connect().await.expect("a podman storage root");
    assert_eq!(
        state.describe(),
        format!("podman, its state at {}", root.display())
    );
    let mut names: Vec<String> = state
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|meta| meta.name)
        .collect();
    names.sort();
    assert_eq!(names, ["restarter", "shop_db_1", "web"]);
}

#[tokio::test]
async fn podmans_containers_json_is_followed() {
    let scratch = Scratch::new("podman-storage");
    let root = &scratch.0;
    let dir = root.join("overlay-containers");
    std::fs::create_dir_all(&dir).unwrap();
    let json = std::fs::read(Path::new(FIXTURES).join("podman/containers.json")).unwrap();
    replace(&dir.join("containers.json"), &json);

    let state = RuntimeState::new(root, 16);
    state.connect().await.expect("a containers/storage root");
    let mut events = state.events(SystemTime::now());
    let listed = state.list().await.unwrap();
    assert_eq!(listed.len(), 3);

    // `podman rm web`: containers/storage rewrites its list without it.
    let mut entries: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    let web = entries
        .iter()
        .position(|entry| entry["names"][0] == "web")
        .expect("web in the fixture");
    let web_id = entries.remove(web)["id"].as_str().unwrap().to_owned();
    replace(
        &dir.join("containers.json"),
        &serde_json::to_vec(&entries).unwrap(),
    );
    assert_eq!(
        next_event(&mut events).await,
        RuntimeEvent::Removed { id: web_id }
    );
}

#[tokio::test]
async fn a_directory_of_neither_is_absent() {
    let scratch = Scratch::new("neither");
    let state = RuntimeState::new(&scratch.0, 16);
    assert!(matches!(
        state.connect().await,
        Err(RuntimeError::Absent(_))
    ));
    let missing = RuntimeState::new(scratch.0.join("missing"), 16);
    assert!(matches!(
        missing.connect().await,
        Err(RuntimeError::Absent(_))
    ));
    assert!(!missing.is_connected());
    assert!(missing.list().await.is_err());
}

#[tokio::test]
async fn a_fifo_or_a_symlink_in_dockers_state_is_refused_and_quoted_nowhere() {
    let scratch = Scratch::new("hostile");
    let root = &scratch.0;
    let secret = root.join("secret.json");
    std::fs::write(
        &secret,
        format!(r#"{{"ID":"{NEW_ID}","Name":"the secret"}}"#),
    )
    .unwrap();
    let fifo_dir = root.join("containers").join(SHOP_DB);
    let link_dir = root.join("containers").join(NEW_ID);
    std::fs::create_dir_all(&fifo_dir).unwrap();
    std::fs::create_dir_all(&link_dir).unwrap();
    let fifo = std::ffi::CString::new(
        fifo_dir
            .join("config.v2.json")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(&secret, link_dir.join("config.v2.json")).unwrap();

    let state = RuntimeState::new(root, 16);
    state.connect().await.expect("a Docker data root");
    let listed = tokio::time::timeout(Duration::from_secs(5), state.list())
        .await
        .expect("a FIFO does not hold the listing up")
        .unwrap();
    assert_eq!(listed, []);
    for (id, why) in [(SHOP_DB, "a FIFO"), (NEW_ID, "a symlink")] {
        let err = tokio::time::timeout(Duration::from_secs(5), state.inspect(id))
            .await
            .expect("answered")
            .expect_err("refused");
        let message = err.to_string();
        assert!(message.contains(why), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}

#[test]
fn a_bad_json_file_is_described_without_its_content() {
    let err = docker::parse(br#"{"ID":"the secret"}"#, None).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = docker::parse(br#"{"ID":["the secret"]}"#, None).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = podman::from_containers_json(br#"[{"id":{"the secret":1}}]"#).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

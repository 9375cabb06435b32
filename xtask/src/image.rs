//! `image`: the agent's container image, `FROM scratch` with the static agent
//! (deploy/Containerfile), built by podman without a registry.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{
    run::{target_dir, workspace_root},
    setup::{Apt, Env, install_test_tools, run},
};

/// `localhost/oomtrace:<version>`, the tag the `podman run` line of docs/deploy.md uses.
pub fn tag() -> String {
    format!("localhost/oomtrace:{}", env!("CARGO_PKG_VERSION"))
}

pub fn image(env: &Env) -> anyhow::Result<()> {
    install_test_tools(&mut Apt::default())?;
    let agent = crate::suite::build_static_agent(env)?;
    let tag = tag();
    build(&agent, &tag)?;
    println!("image: {tag}");
    Ok(())
}

/// `podman build` of deploy/Containerfile, from a context holding only the static `agent`
/// (named `oomtrace`) and the journal's catalog: a context of the whole target directory would
/// be copied for nothing.
pub fn build(agent: &Path, tag: &str) -> anyhow::Result<()> {
    let previous = image_id(tag);
    let context = target_dir().join("image");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    fs::copy(agent, context.join("oomtrace"))
        .with_context(|| format!("copying {} into the image context", agent.display()))?;
    let catalog = workspace_root().join("deploy/oomtrace.catalog");
    fs::copy(&catalog, context.join("oomtrace.catalog"))
        .with_context(|| format!("copying {} into the image context", catalog.display()))?;
    run(Command::new("podman")
        .args(["build", "--quiet", "--file"])
        .arg(workspace_root().join("deploy/Containerfile"))
        .args(["--tag", tag])
        .arg(&context))
    .with_context(|| format!("building the image {tag}"))?;
    // A rebuilt agent leaves the image the tag named before untagged: remove it, unless a
    // container still uses it.
    if let Some(previous) = previous.filter(|id| image_id(tag).as_ref() != Some(id)) {
        let _ = Command::new("podman")
            .args(["rmi", &previous])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
    Ok(())
}

fn image_id(tag: &str) -> Option<String> {
    let output = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !id.is_empty()).then_some(id)
}

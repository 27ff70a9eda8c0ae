//! The image recipe: the Dockerfile and images/image.py (what the real-pod tests run) ship the same
//! layout and config, and an archive built by images/image.py holds what the node needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use drakkar_e2e::drakkar_bin;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// USER, ENTRYPOINT, CMD and EXPOSE of each final (`FROM scratch AS <name>`) stage of the Dockerfile.
fn dockerfile_stages() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut stages = BTreeMap::new();
    let mut current: Option<(String, Value)> = None;
    for line in text.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "FROM" => {
                if let Some((name, v)) = current.take() {
                    stages.insert(name, v);
                }
                if let Some(name) = rest.strip_prefix("scratch AS ") {
                    current = Some((name.trim().to_string(), json!({"cmd": [], "ports": []})));
                }
            }
            "USER" | "ENTRYPOINT" | "CMD" | "EXPOSE" => {
                if let Some((_, v)) = current.as_mut() {
                    let value = match word {
                        "USER" => json!(rest),
                        "EXPOSE" => json!(
                            rest.split_whitespace().map(|p| p.parse::<u64>().unwrap()).collect::<Vec<_>>()
                        ),
                        _ => serde_json::from_str(rest)
                            .unwrap_or_else(|e| panic!("{word} {rest}: not JSON: {e}")),
                    };
                    let key = if word == "EXPOSE" { "ports".to_string() } else { word.to_lowercase() };
                    v[key.as_str()] = value;
                }
            }
            _ => {}
        }
    }
    if let Some((name, v)) = current {
        stages.insert(name, v);
    }
    stages
}

#[test]
fn the_dockerfile_and_the_test_images_agree() {
    let stages = dockerfile_stages();
    assert_eq!(stages.keys().collect::<Vec<_>>(), ["node", "operator"], "final stages: {stages:?}");
    for (name, stage) in &stages {
        let desc: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join(format!("images/{name}.json"))).unwrap(),
        )
        .unwrap();
        for key in ["user", "entrypoint", "cmd", "ports"] {
            assert_eq!(stage[key], desc[key], "{name}: Dockerfile {key} differs from images/{name}.json");
        }
    }
}

/// `(path without a trailing slash, the whole `tar -tv` line)` of every entry.
fn tar_list(archive: &Path) -> Vec<(String, String)> {
    let out = Command::new("tar").arg("--numeric-owner").arg("-tvf").arg(archive).output().unwrap();
    assert!(out.status.success(), "tar -tvf {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            (l.split_whitespace().nth(5).unwrap_or_default().trim_end_matches('/').to_string(), l.to_string())
        })
        .collect()
}

#[test]
fn an_image_archive_holds_the_binary_its_libraries_and_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("node.tar");
    let out = Command::new("python3")
        .arg(repo().join("images/image.py"))
        .arg(repo().join("images/node.json"))
        .arg(drakkar_bin())
        .arg("example.test/drakkar:1")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "image.py: {}", String::from_utf8_lossy(&out.stderr));
    let untar = Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dir.path()).status().unwrap();
    assert!(untar.success());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["example.test/drakkar:1"]));
    let config: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(manifest[0]["Config"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], json!(["/usr/local/bin/drakkar"]));
    let layer = dir.path().join(manifest[0]["Layers"][0].as_str().unwrap());
    let entries = tar_list(&layer);
    let entry = |path: &str| entries.iter().find(|(p, _)| p == path).map(|(_, line)| line.clone());
    let listing = entries.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
    for path in ["usr/local/bin/drakkar", "etc/passwd", "etc/group", "etc/nsswitch.conf", "tmp"] {
        assert!(entry(path).is_some(), "{path} missing from the layer:\n{listing}");
    }
    // Every library the binary loads is in the image (a binary that cannot start is the failure this
    // catches), and the data directory belongs to the node's user.
    let ldd = Command::new("ldd").arg(drakkar_bin()).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        assert!(entry(lib.trim_start_matches('/')).is_some(), "{lib} missing from the layer:\n{listing}");
    }
    let data = entry("var/lib/drakkar").expect("var/lib/drakkar");
    assert!(data.contains("65532/65532"), "owner of var/lib/drakkar: {data}");
    let tmp = entry("tmp").unwrap();
    assert!(tmp.starts_with("drwxrwxrwt"), "mode of /tmp: {tmp}");
}

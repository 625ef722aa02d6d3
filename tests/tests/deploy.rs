//! The deployment files: the Dockerfile and the Kubernetes manifests say what mesh-node needs
//! (probes on the right routes and ports, flags that exist), and seeds given by DNS name work.
//! The image itself is not built here: that needs the base images from a registry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{node_bin, wait_converged, MeshNode};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every document of every manifest in `deploy/kubernetes`, as JSON.
fn manifests() -> Vec<Value> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        assert_eq!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml"),
            "{}",
            file.display()
        );
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e: serde_yaml::Error| panic!("{}: {e}", file.display()));
            documents.push(value);
        }
    }
    documents
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// The long flags `mesh-node --help` lists.
fn help_flags() -> BTreeSet<String> {
    let mut child = Command::new(node_bin())
        .arg("--help")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Held until the output is read: the program exits when its standard input closes.
    let _lifeline = child.stdin.take();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    help.split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches([',', '=']).to_owned())
        .filter(|flag| !flag.is_empty())
        .collect()
}

#[test]
fn the_statefulset_probes_the_node_and_passes_it_flags_it_has() {
    let documents = manifests();
    let kinds: BTreeSet<&str> = documents.iter().map(|d| str_of(&d["kind"])).collect();
    for kind in [
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "Kustomization",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    let [set] = of_kind(&documents, "StatefulSet")[..] else {
        panic!("one StatefulSet")
    };
    let spec = &set["spec"];
    // A node with seeds is ready only once it heard from another: pods must start together.
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    // Alone, such a node is never ready.
    assert!(
        spec["replicas"].as_u64().unwrap() >= 2,
        "{}",
        spec["replicas"]
    );
    let pod = &spec["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace >= 30, "{grace} s is too short to drain and hand over");
    let [container] = &pod["containers"].as_array().unwrap()[..] else {
        panic!("one container")
    };

    let ports = container["ports"].as_array().unwrap();
    let port_named = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    assert_eq!(port_named("http")["containerPort"], 4000);
    assert_eq!(port_named("http")["protocol"], "TCP");
    // Gossip is UDP on the same port number as HTTP.
    assert_eq!(port_named("gossip")["containerPort"], 4000);
    assert_eq!(port_named("gossip")["protocol"], "UDP");
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }

    // Every flag exists, and each says what the manifest means by it.
    let flags = help_flags();
    let args: Vec<(&str, &str)> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            let arg = str_of(arg)
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{arg}: not a --flag=value"));
            arg.split_once('=')
                .unwrap_or_else(|| panic!("--{arg}: not a --flag=value"))
        })
        .collect();
    for (flag, _) in &args {
        assert!(
            flags.contains(*flag),
            "--{flag} is not in mesh-node --help: {flags:?}"
        );
    }
    let arg = |flag: &str| {
        args.iter()
            .find(|(f, _)| *f == flag)
            .unwrap_or_else(|| panic!("no --{flag}"))
            .1
    };
    let env_from = |var: &str| {
        let env = container["env"].as_array().unwrap();
        let entry = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("no env {var}"));
        str_of(&entry["valueFrom"]["fieldRef"]["fieldPath"]).to_owned()
    };
    assert_eq!(arg("listen"), "0.0.0.0:4000");
    assert_eq!(arg("advertise"), "$(POD_IP):4000");
    assert_eq!(env_from("POD_IP"), "status.podIP");
    assert_eq!(arg("node-id"), "$(POD_NAME)");
    assert_eq!(env_from("POD_NAME"), "metadata.name");

    // The seeds: the headless Service's DNS name, which resolves to every pod.
    let headless = str_of(&spec["serviceName"]);
    let service = of_kind(&documents, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == headless)
        .unwrap_or_else(|| panic!("no Service {headless}"));
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "{headless} is not headless"
    );
    // Nodes find each other before they are ready.
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let labels = &spec["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the Service does not select the pods");
    }
    let protocols: BTreeSet<(&str, u64)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (str_of(&p["protocol"]), p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(protocols, BTreeSet::from([("TCP", 4000), ("UDP", 4000)]));
    assert_eq!(
        arg("seeds"),
        format!("{headless}.$(POD_NAMESPACE).svc.cluster.local:4000")
    );
    assert_eq!(env_from("POD_NAMESPACE"), "metadata.namespace");

    // --data-dir on the claim template's volume, --secret-file in the Secret's.
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_of = |path: &str| {
        let mount = mounts
            .iter()
            .find(|m| Path::new(path).starts_with(str_of(&m["mountPath"])))
            .unwrap_or_else(|| panic!("{path} is on no volume"));
        str_of(&mount["name"]).to_owned()
    };
    let claims: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| str_of(&c["metadata"]["name"]))
        .collect();
    assert!(
        claims.contains(&mount_of(arg("data-dir")).as_str()),
        "{claims:?}"
    );
    let secret_volume = mount_of(arg("secret-file"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == secret_volume.as_str())
        .unwrap();
    assert!(volume["secret"]["secretName"].is_string(), "{volume}");
    // The image's user runs the node.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_as_a_user_in_another() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from: Vec<&str> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(
        from[0].starts_with("rust:") && from[0].ends_with(" AS build"),
        "{from:?}"
    );
    assert_eq!(from[1], "debian:bookworm-slim");
    let runtime: Vec<&str> = instructions
        .iter()
        .skip_while(|l| !l.starts_with("FROM debian"))
        .copied()
        .collect();
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    assert!(
        runtime.contains(&r#"ENTRYPOINT ["mesh-node"]"#),
        "{runtime:?}"
    );
    assert!(runtime.contains(&"VOLUME /var/lib/mesh"), "{runtime:?}");
    assert!(runtime.contains(&"EXPOSE 4000/tcp 4000/udp"), "{runtime:?}");
    assert!(
        runtime
            .iter()
            .any(|l| l.contains("MESH_DATA_DIR=/var/lib/mesh/")),
        "{runtime:?}"
    );

    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for entry in ["target", ".git", "mesh-data"] {
        assert!(
            ignored.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

/// A seed given by DNS name: `localhost`, which resolves (as a headless Service's name does)
/// to more addresses than the node can use (`::1` too).
#[tokio::test]
async fn a_seed_given_as_a_dns_name_joins_its_cluster() {
    let first = MeshNode::builder().capabilities(["counter"]).start().await;
    let second = MeshNode::builder()
        .capabilities(["counter"])
        .seeds([format!("localhost:{}", first.addr().port())])
        .start()
        .await;
    wait_converged(&[first, second], Duration::from_secs(10)).await;
}

/// A seed that is no `host:port` stops the start with a message that says so, rather than a node
/// that looks it up forever and never serves.
#[test]
fn a_seed_without_a_port_is_refused_at_start() {
    let data = std::env::temp_dir().join(format!("mesh-deploy-test-{}", std::process::id()));
    let mut child = Command::new(node_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seeds",
            "localhost",
            "--data-dir",
        ])
        .arg(&data)
        // The node lives as long as this pipe (see mesh_tests::node).
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let status = status.unwrap_or_else(|| panic!("still running after 20 s: {stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"seed "localhost" is not host:port"#),
        "{stderr}"
    );
}

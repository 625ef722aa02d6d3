//! The smoke run of `mesh-bench`: it runs and reports every figure. It asserts nothing about
//! speed; the figures and what limits them are in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

const FIGURES: [&str; 9] = [
    "api_calls",
    "api_hot_calls",
    "api_sequential_p50_us",
    "activations",
    "memory_per_activation_bytes",
    "http_call",
    "http_call_p50_us",
    "http_forwarded",
    "http_forwarded_p50_us",
];

#[test]
fn the_smoke_run_reports_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["--smoke", "--json"])
        .output()
        .expect("mesh-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mesh-bench failed:\n{stderr}");

    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let mut figures = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let figure: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        let name = figure["name"].as_str().expect("a name").to_owned();
        assert!(
            figures.insert(name.clone(), figure).is_none(),
            "{name} reported twice"
        );
    }
    let names: Vec<&str> = figures.keys().map(String::as_str).collect();
    let mut expected = FIGURES.to_vec();
    expected.sort();
    assert_eq!(names, expected, "stderr:\n{stderr}");
    for (name, figure) in &figures {
        let object = figure.as_object().expect("an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["floor", "mesh", "name", "ratio", "unit"], "{name}");
        assert!(
            figure["unit"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}"
        );
        for field in ["mesh", "floor", "ratio"] {
            let value = figure[field].as_f64().unwrap_or(f64::NAN);
            assert!(
                value.is_finite() && value > 0.0,
                "{name}.{field} should be a finite positive number: {figure}"
            );
        }
    }
}

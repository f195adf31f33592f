//! The PromQL of the dashboards and the alert rules, for the tests that
//! check it (names against the code, and running it in a real Prometheus).

use std::path::{Path, PathBuf};

/// One dashboard panel and its expressions.
pub struct Panel {
    pub file: String,
    pub title: String,
    pub exprs: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every `expr` string anywhere in a JSON value.
pub fn exprs_in(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs_in(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs_in(v, out)),
        _ => {}
    }
}

/// The dashboard files, parsed, in name order.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text).expect("dashboard JSON");
            (path.display().to_string(), json)
        })
        .collect()
}

/// Every panel with expressions, of every dashboard.
pub fn panels() -> Vec<Panel> {
    let mut out = Vec::new();
    for (file, json) in dashboards() {
        for panel in json["panels"].as_array().expect("panels") {
            let mut exprs = Vec::new();
            exprs_in(panel, &mut exprs);
            if !exprs.is_empty() {
                let title = panel["title"].as_str().unwrap_or("?").to_string();
                out.push(Panel {
                    file: file.clone(),
                    title,
                    exprs,
                });
            }
        }
    }
    out
}

/// The alert rules' expressions (each `expr:` line of config/alerts.yml).
pub fn alert_exprs() -> Vec<String> {
    std::fs::read_to_string(root().join("config/alerts.yml"))
        .expect("config/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect()
}

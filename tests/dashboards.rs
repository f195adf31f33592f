//! The dashboards and alert rules use only metric names the code defines.
//!
//! Every PromQL expression in dashboards/*.json (every `expr` anywhere in
//! the JSON) and in config/alerts.yml is scanned for metric names: each
//! `chorus_*` name, less a histogram's `_bucket`/`_sum`/`_count`, must be
//! in `chorus::metrics::ALL`, each `process_*` name in
//! `chorus::metrics::PROCESS`, and anything else must be Prometheus's own
//! `up`. The real-Prometheus test (tests/prometheus.rs) then runs them.

mod common;

use chorus::metrics::{ALL, Kind, PROCESS};
use common::dashboards::{alert_exprs, dashboards, panels};

/// Words of PromQL that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// The metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    // Drop strings, label matchers, ranges and `by (...)` label lists.
    let mut cleaned = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth_brace = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                }
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
            }
            _ if depth_brace > 0 => {}
            _ => cleaned.push(c),
        }
    }
    let words: Vec<(String, char)> = {
        let mut out = Vec::new();
        let mut word = String::new();
        let chars: Vec<char> = cleaned.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' {
                word.push(c);
            } else if !word.is_empty() {
                let next = chars[i..]
                    .iter()
                    .find(|c| !c.is_whitespace())
                    .copied()
                    .unwrap_or(' ');
                out.push((std::mem::take(&mut word), next));
            }
        }
        if !word.is_empty() {
            out.push((word, ' '));
        }
        out
    };
    let mut names = Vec::new();
    let mut skip_list = false;
    for (word, next) in words {
        if skip_list {
            if next == ')' {
                skip_list = false;
            }
            continue;
        }
        if matches!(
            word.as_str(),
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            skip_list = next == '(';
            continue;
        }
        let numeric = word
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '$');
        if numeric || next == '(' || KEYWORDS.contains(&word.as_str()) {
            continue;
        }
        names.push(word);
    }
    names
}

fn defined(name: &str) -> bool {
    if PROCESS.contains(&name) || name == "up" {
        return true;
    }
    ALL.iter().any(|d| {
        d.name == name
            || (d.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(d.name)))
    })
}

#[test]
fn every_expression_reads_only_metrics_the_code_defines() {
    let mut checked = 0;
    let mut all: Vec<(String, String)> = Vec::new();
    for panel in panels() {
        all.extend(panel.exprs.into_iter().map(|e| (panel.file.clone(), e)));
    }
    assert!(all.len() >= 40, "only {} panel expressions", all.len());
    all.extend(
        alert_exprs()
            .into_iter()
            .map(|e| ("config/alerts.yml".to_string(), e)),
    );
    for (file, expr) in &all {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{file}: no metric in `{expr}`");
        for name in names {
            assert!(
                defined(&name),
                "{file}: `{name}` in `{expr}` is not a metric chorus defines"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} names checked");
}

#[test]
fn the_scanner_finds_names_and_flags_a_typo() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (op, le) (rate(chorus_request_duration_seconds_bucket{job="$job",op=~"get|put"}[$__rate_interval])))"#,
    );
    assert_eq!(names, vec!["chorus_request_duration_seconds_bucket"]);
    assert!(defined(&names[0]));
    let typo = metric_names("sum(rate(chorus_reqests_total[5m])) or up == 0");
    assert_eq!(typo, vec!["chorus_reqests_total", "up"]);
    assert!(!defined(&typo[0]), "a misspelt name must be caught");
}

#[test]
fn dashboards_have_the_variables_operators_expect() {
    let boards = dashboards();
    assert_eq!(boards.len(), 4, "overview, replication, anti-entropy, ring");
    for (file, json) in boards {
        assert!(
            json["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{file}"
        );
        let vars: Vec<&str> = json["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(vars, ["datasource", "job", "instance"], "{file}");
        for panel in json["panels"].as_array().expect("panels") {
            if panel["type"] != "row" {
                assert_eq!(
                    panel["datasource"]["uid"], "${datasource}",
                    "{file}: {}",
                    panel["title"]
                );
            }
        }
    }
}

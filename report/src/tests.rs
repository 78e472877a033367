//! Tests of the whole page: user-supplied names shown literally, empty sections, nothing that
//! fetches, well-formed SVG, validation messages and the atomic write.

use crate::*;

const HOSTILE: &str = r#"<script>alert(1)</script> & <img src=x onerror=alert(2)> "q" 'a'"#;

/// A small but complete report; `name` goes into every user-supplied text field.
fn fixture(name: &str) -> ReportData {
    let labels: Vec<u8> = (0..200).map(|i| u8::from(i % 5 == 0)).collect();
    let scores: Vec<f32> = (0..200)
        .map(|i| ((i * 37) % 101) as f32 / 100.0 + f32::from(labels[i]) * 0.4)
        .collect();
    let models: Vec<ModelBar> = (0..80)
        .map(|i| ModelBar {
            name: format!("{name} {i}"),
            kind: ["cnn", "logreg", name][i % 3].to_string(),
            auc: 0.78 + (i as f64 * 0.37).sin().abs() * 0.08,
        })
        .collect();
    let names: Vec<String> = (0..5).map(|i| format!("{name} m{i}")).collect();
    ReportData {
        experiment: name.to_string(),
        generated_at: "2026-05-01T12:00:00Z".to_string(),
        summary: vec![
            (name.to_string(), name.to_string()),
            ("best".into(), "0.8612".into()),
        ],
        recommendation: name.to_string(),
        oracle_auc: Some(0.9),
        roc_curves: vec![Curve {
            name: name.to_string(),
            auc: 0.86,
            points: roc_points(&labels, &scores, 100),
        }],
        models,
        correlation: Some(Heatmap {
            labels: names.clone(),
            values: (0..5)
                .map(|i| {
                    (0..5)
                        .map(|j| {
                            if i == j {
                                1.0
                            } else {
                                0.8 + 0.02 * (i + j) as f64
                            }
                        })
                        .collect()
                })
                .collect(),
        }),
        fold_table: vec![FoldRow {
            name: name.to_string(),
            fold_aucs: vec![0.85, f64::NAN, 0.86],
            mean: 0.855,
        }],
        intervals: vec![
            Interval {
                name: name.to_string(),
                auc: 0.86,
                low: 0.84,
                high: 0.88,
                is_median: true,
                recommended: false,
            },
            Interval {
                name: "b".into(),
                auc: 0.87,
                low: 0.85,
                high: 0.89,
                is_median: false,
                recommended: true,
            },
        ],
        shakeup: Some(ShakeUp {
            on: name.to_string(),
            public_fraction: 0.3,
            methods: vec![ShakeMethod {
                name: name.to_string(),
                deltas: (0..50).map(|i| (i as f64 * 0.7).sin() * 0.01).collect(),
                mean_public: 0.86,
                mean_private: 0.855,
            }],
            public_best_loses: 0.4,
            public_best_vs_median_loses: 0.2,
        }),
        timeline: (0..40)
            .map(|i| TimelineJob {
                worker: format!("{name} w{}", i % 2),
                kind: if i % 4 == 0 {
                    name.to_string()
                } else {
                    "train".to_string()
                },
                start_s: 100.0 + i as f64 * 10.0,
                end_s: 108.0 + i as f64 * 10.0,
                state: if i == 7 {
                    "failed".to_string()
                } else {
                    "succeeded".to_string()
                },
            })
            .collect(),
    }
}

/// Checks that `svg` is well-formed XML as far as markup goes: tags nest and close, attribute
/// values are quoted, and every `&` starts an entity. A browser forgives all of these inside
/// HTML; an SVG viewer given the extracted chart would not.
fn assert_well_formed(svg: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open]);
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
        } else {
            let name = tag.split([' ', '/']).next().unwrap_or("");
            let attrs = &tag[name.len()..].trim_end_matches('/');
            assert_eq!(
                attrs.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            for value in attrs.split('"').skip(1).step_by(2) {
                assert!(!value.contains('<'), "raw < in an attribute of <{tag}>");
                check_text(value);
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn check_text(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity),
            "bare & in {text:?}"
        );
    }
}

fn svgs(html: &str) -> Vec<&str> {
    html.match_indices("<svg ")
        .map(|(start, _)| &html[start..start + html[start..].find("</svg>").unwrap() + 6])
        .collect()
}

#[test]
fn hostile_names_are_shown_literally_never_executed() {
    let html = render(&fixture(HOSTILE)).unwrap();
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains("<script"),
        "a script tag made it into the page"
    );
    assert!(!lower.contains("<img"), "an img tag made it into the page");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt; &quot;q&quot; &#39;a&#39;"));
    // Shown in the title, header, every section and the tooltips, not dropped.
    assert!(html.matches("&lt;script&gt;alert(1)").count() > 20);
    let charts = svgs(&html);
    // ROC, top bars, histogram, kinds, heatmap, forest plot, shake-up, timeline.
    assert_eq!(charts.len(), 8);
    for svg in charts {
        assert_well_formed(svg);
    }
}

#[test]
fn empty_data_renders_every_section_with_a_note() {
    let mut data = ReportData::default();
    let html = render(&data).unwrap();
    for id in [
        "roc",
        "models",
        "kinds",
        "correlation",
        "folds",
        "intervals",
        "shakeup",
        "timeline",
    ] {
        assert!(
            html.contains(&format!(r#"<section id="{id}">"#)),
            "section {id} missing"
        );
    }
    assert!(!html.contains("<svg"), "an empty report draws no chart");
    assert_eq!(
        html.matches(r#"class="empty""#).count(),
        9,
        "8 sections and the recommendation"
    );

    // Present but empty, and all-NaN, are no data too.
    data.correlation = Some(Heatmap::default());
    data.shakeup = Some(ShakeUp::default());
    data.models = vec![ModelBar {
        name: "m".into(),
        kind: "cnn".into(),
        auc: f64::NAN,
    }];
    let html = render(&data).unwrap();
    assert!(!html.contains("<svg"));
    assert!(html.contains("No public/private shake-up study was run."));
    assert!(html.contains("No model AUCs were recorded."));
}

#[test]
fn nothing_is_fetched() {
    let html = render(&fixture("model")).unwrap();
    let namespace = format!(r#"xmlns="{}""#, "http://www.w3.org/2000/svg");
    assert_eq!(
        html.matches(&namespace).count(),
        html.matches("<svg ").count()
    );
    let rest = html.replace(&namespace, "");
    for needle in [
        "http://", "https://", "//cdn", "src=", "<link", "@import", "<script", "<img", "<iframe",
    ] {
        assert!(!rest.contains(needle), "found {needle:?}");
    }
    // The only url() is the heatmap's reference to its own gradient.
    assert_eq!(
        rest.matches("url(").count(),
        rest.matches("url(#sh-heat-scale)").count()
    );
    assert!(
        rest.contains("default-src 'none'"),
        "the page forbids fetches itself"
    );
}

#[test]
fn saved_data_with_unmeasured_aucs_loads_and_renders_the_same() {
    let mut data = fixture("m");
    data.models[3].auc = f64::NAN;
    data.correlation.as_mut().unwrap().values[1][2] = f64::NAN;
    let json = serde_json::to_string(&data).unwrap();
    assert!(json.contains("null"), "NaN is saved as null");
    let back: ReportData = serde_json::from_str(&json).unwrap();
    assert_eq!(render(&back).unwrap(), render(&data).unwrap());

    // Sections left out of older saved data are empty.
    let old: ReportData = serde_json::from_str(r#"{"experiment": "x"}"#).unwrap();
    assert_eq!(old.experiment, "x");
    assert!(old.models.is_empty() && old.shakeup.is_none());
}

#[test]
fn contradictory_data_is_rejected_saying_what_is_wrong() {
    let mut data = fixture("m");
    data.correlation.as_mut().unwrap().values[3].pop();
    let err = render(&data).unwrap_err().to_string();
    assert!(
        err.contains("row 3") && err.contains("has 4 values; expected 5"),
        "{err}"
    );

    let mut data = fixture("m");
    data.intervals[1].low = 0.95;
    let err = render(&data).unwrap_err().to_string();
    assert!(
        err.contains("interval of \"b\"") && err.contains("low <= high"),
        "{err}"
    );

    let mut data = fixture("m");
    data.timeline[2].end_s = 0.0;
    assert!(render(&data)
        .unwrap_err()
        .to_string()
        .contains("timeline job 2"));
}

#[test]
fn write_replaces_the_report_atomically_and_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("m");
    let path = dir.path().join("report.html");
    std::fs::write(&path, "old").unwrap();
    write(&data, &path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        render(&data).unwrap()
    );
    let entries = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(entries(dir.path()), ["report.html"], "no temp file left");

    // The directory does not exist: the error names the path and the reason.
    let missing = dir.path().join("no-such-dir").join("report.html");
    let err = write(&data, &missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");

    // The target is a directory: the temp file is made, the rename fails, the temp file goes.
    // (Permission bits would not stop a root test run; this fails for root too.)
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    let err = write(&data, &blocked).unwrap_err();
    assert!(
        err.to_string().contains(&blocked.display().to_string()),
        "{err}"
    );
    assert_eq!(
        entries(dir.path()),
        ["blocked", "report.html"],
        "no temp file left"
    );
    assert!(entries(&blocked).is_empty());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        render(&data).unwrap()
    );
}

//! The shipped scenario files (`crates/cxone-sim/scenarios/`): every one parses with the
//! same loader `cxone-sim --scenario` and `cdrsync sim --scenario` use, says what it is in a
//! leading comment, and together they cover every fault and schema knob.

use std::path::{Path, PathBuf};

use cxone_sim::Scenario;
use cxone_sim::scenario::{JsonLayout, PartFaultKind, Stage};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_scenario_parses_starts_with_a_comment_and_the_set_covers_every_knob() {
    let mut loaded = Vec::new();
    for path in scenario_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".toml"),
            "{name}: only TOML scenarios belong here"
        );
        let scenario = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.starts_with("# ") && l.len() > 10),
            "{name}: the first line must be a comment saying what the scenario is"
        );
        loaded.push((text, scenario));
    }

    let covered = |knob: &str, is_set: &dyn Fn(&Scenario) -> bool| {
        assert!(
            loaded.iter().any(|(_, s)| is_set(s)),
            "no scenario file sets {knob}"
        );
    };
    let http = |s: &Scenario, status: u16| s.faults.http.iter().any(|f| f.status == status);
    let part = |s: &Scenario, kind| s.faults.parts.iter().any(|f| f.kind == kind);
    covered("a 429 burst", &|s| http(s, 429));
    covered("a 5xx burst", &|s| {
        s.faults.http.iter().any(|f| f.status >= 500)
    });
    covered("a connection reset", &|s| part(s, PartFaultKind::Reset));
    covered("a short body", &|s| part(s, PartFaultKind::Short));
    covered("a flipped byte", &|s| part(s, PartFaultKind::Flip));
    covered("stuck PENDING", &|s| s.faults.stuck == Some(Stage::Pending));
    covered("stuck PROCESSING", &|s| {
        s.faults.stuck == Some(Stage::Processing)
    });
    covered("failed generations", &|s| s.faults.failed_generations > 0);
    covered("request expiry", &|s| s.retention_secs < 3600.0);
    covered("access-token revocation", &|s| {
        s.faults.revoke_access_after_data_calls.is_some()
    });
    covered("refresh-token invalidation", &|s| {
        s.faults.invalidate_refresh_after_data_calls.is_some()
    });
    covered("a growing manifest", &|s| s.faults.grow_manifest);
    covered("empty COMPLETED polls", &|s| s.completed_empty_polls > 0);
    covered("skip PENDING", &|s| s.skip_pending);
    covered("a pre-signed other origin", &|s| s.faults.other_origin);
    covered("../ file names", &|s| s.faults.traversal_file_names);
    covered("a bandwidth cap", &|s| {
        s.faults.bandwidth_bytes_per_sec.is_some()
    });
    covered("no Range support", &|s| !s.faults.range_support);
    covered("`requestId` create answers", &|s| {
        s.faults.create_answers_request_id
    });
    covered("extra columns", &|s| !s.schema.extra_columns.is_empty());
    covered("dropped columns", &|s| !s.schema.drop_columns.is_empty());
    covered("renamed columns", &|s| !s.schema.rename_columns.is_empty());
    covered("a shuffled header", &|s| s.schema.shuffle_header);
    covered("drift from part k", &|s| s.schema.drift_from_part.is_some());
    covered("Duration in decimal ms", &|s| {
        s.schema.duration_as_decimal_ms
    });
    covered("a BOM", &|s| s.schema.bom);
    covered("CRLF", &|s| s.schema.crlf);
    // The array layout is also the default: require a file that asks for it.
    assert!(
        loaded
            .iter()
            .any(|(text, s)| text.contains("json_layout = \"array\"")
                && s.schema.json_layout == JsonLayout::Array),
        "no scenario file sets JSON arrays"
    );
    covered("NDJSON", &|s| s.schema.json_layout == JsonLayout::Ndjson);
    covered("an empty day", &|s| {
        s.rows_per_date.values().any(|&r| r == 0)
    });
}

//! Integration tests: the simulator over real HTTP on 127.0.0.1.

mod auth;
mod download;
mod faults;
mod lifecycle;
mod schema;
mod support;

#[test]
fn bundled_scenarios_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        cxone_sim::Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 2);
}

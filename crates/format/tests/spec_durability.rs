//! Golden tests for `protocol-spec/durability.md`: its tables are exactly what
//! `python3 tools/durability.py` prints (the script is deterministic: exact sums and a
//! seeded Monte Carlo), and its normative defaults are the crate's.

use std::process::Command;

use swarmbak_core::placement::DEFAULT_COPIES;
use swarmbak_format::erasure::MAX_SHARD;
use swarmbak_format::{DEFAULT_K, DEFAULT_M};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn spec() -> String {
    swarmbak_core::spec::read("durability.md")
}

/// The text of every ```text block of the spec, joined by newlines.
fn text_blocks(md: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in md.lines() {
        if inside {
            if line == "```" {
                inside = false;
            } else {
                out.push(line);
            }
        } else if line == "```text" {
            inside = true;
        }
    }
    out.join("\n")
}

/// §5: "Produced by `python3 tools/durability.py`": run it and compare, line by line.
#[test]
fn s5_tables_are_what_the_tool_prints() {
    let spec = spec();
    assert!(spec.contains("Produced by `python3 tools/durability.py` (p_online = 0.5;"));
    let tables = text_blocks(&spec);
    assert!(
        tables.starts_with("# swarmbak durability tables (tools/durability.py, p_online=0.5)"),
        "the tables are the spec's only text block"
    );
    let out = Command::new("python3")
        .arg("tools/durability.py")
        .current_dir(ROOT)
        .output()
        .expect("python3 (see README: Debian's python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let (want, got): (Vec<&str>, Vec<&str>) = (
        tables.lines().collect(),
        printed.trim_end().lines().collect(),
    );
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "line {} of the tables in durability.md §5", i + 1);
    }
    assert_eq!(want.len(), got.len(), "number of lines");
}

/// §4: the normative defaults.
#[test]
fn s4_normative_defaults() {
    let spec = swarmbak_core::spec::squash(&spec());
    let rule = format!(
        "Implementations MUST use k = {DEFAULT_K} data shards and m = {DEFAULT_M} parity shards \
         per stripe by default, with shards of at most {} MiB ({} MiB of data per stripe), and \
         copies T = {DEFAULT_COPIES}.",
        MAX_SHARD >> 20,
        (DEFAULT_K as usize * MAX_SHARD) >> 20
    );
    assert!(spec.contains(&rule), "{rule}");
    // "Storage overhead: T(k+m)/k = 3.0x"
    let overhead = DEFAULT_COPIES as f64 * (DEFAULT_K + DEFAULT_M) as f64 / DEFAULT_K as f64;
    assert!(spec.contains(&format!("Storage overhead: T(k+m)/k = {overhead:.1}x")));
}

//! `gentree`: deterministic synthetic file trees for swarmbak tests and benchmarks.
//!
//! ```text
//! gentree OUT [--size 256M] [--seed 1] [--profile office|edge|small] [--count N] [--big 8M]
//! gentree --mutate DIR [--seed 2] [--percent 2]
//! ```
//!
//! Prints what it made (or did) as one JSON line on standard output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: gentree OUT [--size 256M] [--seed 1] [--profile office|edge|small] [--count N] [--big 8M]
       gentree --mutate DIR [--seed 2] [--percent 2]

Deterministic synthetic file trees: the same seed and size always give byte-identical trees.
  office  media, text documents, a deep source tree, duplicates and near-duplicate versions
          (--size, default 256M; K/M/G suffixes)
  edge    empty files, odd names, deep nesting, modes, symlinks, a sparse-ish file (--big, default 8M)
  small   --count small text files (100 B to 4 KiB), 100 per directory (default 100000)
--mutate edits DIR in place like a work day (--percent of the files; default seed 2).
OUT must be missing or empty. Prints one JSON line with the counts.";

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("gentree: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn run() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut mutate: Option<PathBuf> = None;
    let mut size: u64 = 256 << 20;
    let mut seed: Option<u64> = None;
    let mut profile = String::from("office");
    let mut count: u64 = 100_000;
    let mut percent: u32 = 2;
    let mut big: u64 = swarmbak_gentree::EDGE_BIG_FILE;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--size" => {
                let v = value("--size")?;
                size = swarmbak_gentree::parse_size(&v).ok_or(format!("bad size {v:?}"))?;
            }
            "--big" => {
                let v = value("--big")?;
                big = swarmbak_gentree::parse_size(&v).ok_or(format!("bad size {v:?}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                seed = Some(v.parse().map_err(|_| format!("bad seed {v:?}"))?);
            }
            "--profile" => profile = value("--profile")?,
            "--count" => {
                let v = value("--count")?;
                count = v.parse().map_err(|_| format!("bad count {v:?}"))?;
            }
            "--percent" => {
                let v = value("--percent")?;
                percent = v.parse().map_err(|_| format!("bad percent {v:?}"))?;
                if percent > 100 {
                    return Err(format!("--percent {percent} is over 100"));
                }
            }
            "--mutate" => mutate = Some(PathBuf::from(value("--mutate")?)),
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}\n{USAGE}"))
            }
            s => {
                if out.is_some() {
                    return Err(format!("more than one OUT given\n{USAGE}"));
                }
                out = Some(PathBuf::from(s));
            }
        }
    }
    let started = Instant::now();
    if let Some(dir) = mutate {
        if out.is_some() {
            return Err(format!("--mutate takes no OUT\n{USAGE}"));
        }
        let seed = seed.unwrap_or(2);
        let st = swarmbak_gentree::mutate(&dir, seed, percent)
            .map_err(|e| format!("mutate {}: {e}", dir.display()))?;
        let j = st.to_json();
        return Ok(format!(
            "{{\"mutate\":{},\"seed\":{seed},\"percent\":{percent},{},\"seconds\":{:.3}}}",
            json_str(&dir.to_string_lossy()),
            &j[1..j.len() - 1],
            started.elapsed().as_secs_f64()
        ));
    }
    let out = out.ok_or(format!("OUT is required\n{USAGE}"))?;
    let seed = seed.unwrap_or(1);
    let st = match profile.as_str() {
        "office" => swarmbak_gentree::office(&out, size, seed),
        "edge" => swarmbak_gentree::edge_with_big_file(&out, seed, big),
        "small" => swarmbak_gentree::small_files(&out, count, seed),
        p => return Err(format!("unknown profile {p:?} (office, edge or small)")),
    }
    .map_err(|e| format!("{}: {e}", out.display()))?;
    let j = st.to_json();
    Ok(format!(
        "{{\"out\":{},\"profile\":{},\"seed\":{seed},{},\"seconds\":{:.3}}}",
        json_str(&out.to_string_lossy()),
        json_str(&profile),
        &j[1..j.len() - 1],
        started.elapsed().as_secs_f64()
    ))
}

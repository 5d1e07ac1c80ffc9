//! The documentation matches the loader: every TOML example in `docs/` and
//! the README loads, and `docs/configuration.md` lists every section and
//! key with the default the loader really has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mail_config::Config;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README and every page under `docs/`.
fn pages() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// A fenced code block: its info string, first line number and text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in md.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: i + 2,
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed code block");
    out
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text, &root().join("docs")).map_err(|e| e.to_string())
}

#[test]
fn every_toml_example_loads() {
    let mut seen = 0;
    for (path, md) in pages() {
        for b in blocks(&md) {
            let at = format!("{}:{}", path.display(), b.line);
            if b.info == "toml" {
                seen += 1;
                if let Err(e) = load(&b.text) {
                    panic!("{at}: the example does not load: {e}");
                }
            } else if b.info.is_empty() {
                // A configuration example must say it is one, so that this
                // test reads it.
                let header = b.text.lines().map(str::trim).find(|l| {
                    l.starts_with('[')
                        && l.ends_with(']')
                        && l[1..l.len() - 1]
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                });
                assert!(
                    header.is_none(),
                    "{at}: a configuration example in an untagged block; tag it ```toml"
                );
            }
        }
    }
    assert!(seen >= 3, "only {seen} TOML examples found");
}

/// The names the loader accepts in `[section]` (or at the top level for
/// `None`), from its unknown-key error, which lists them.
fn accepted_keys(section: Option<&str>) -> BTreeSet<String> {
    let text = match section {
        Some(s) => format!("[{s}]\nno_such_key_for_the_test = 1\n"),
        None => "[no_such_section_for_the_test]\n".to_string(),
    };
    let e = load(&text).unwrap_err();
    // serde writes "expected one of `a`, `b`, `c`", or "expected `a` or
    // `b`" for a section of two keys.
    let list = e
        .split("expected one of")
        .nth(1)
        .or_else(|| e.split("expected").nth(1))
        .unwrap_or_else(|| panic!("unexpected error form: {e}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `(section, key, default)` from the tables of `docs/configuration.md`:
/// rows ``| `key` | `default` | ... |`` under ``## `[section]` ``.
fn documented_defaults() -> Vec<(String, String, String)> {
    let md = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut section = None;
    let mut out = Vec::new();
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .strip_prefix("`[")
                .and_then(|h| h.strip_suffix("]`"))
                .map(str::to_string);
            continue;
        }
        let Some(s) = &section else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let unquote = |c: &str| {
            c.strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .unwrap_or_else(|| panic!("{s}: cell {c:?} is not `code`"))
                .to_string()
        };
        out.push((s.clone(), unquote(cells[1]), unquote(cells[2])));
    }
    out
}

#[test]
fn configuration_md_lists_every_key_with_its_real_default() {
    let rows = documented_defaults();
    let defaults = load("").unwrap();
    let sections: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(sections, accepted_keys(None), "documented sections");
    for section in &sections {
        let documented: BTreeSet<String> = rows
            .iter()
            .filter(|r| &r.0 == section)
            .map(|r| r.1.clone())
            .collect();
        assert_eq!(
            documented,
            accepted_keys(Some(section)),
            "documented keys of [{section}]"
        );
    }
    for (section, key, value) in rows {
        let cfg = load(&format!("[{section}]\n{key} = {value}\n"))
            .unwrap_or_else(|e| panic!("[{section}] {key} = {value}: {e}"));
        assert!(
            cfg == defaults,
            "[{section}] {key}: the documented default {value} is not the loader's"
        );
    }
}

#[test]
fn dns_md_example_is_the_defaults_plus_a_zone() {
    // docs/dns.md says its example sets every key to its default but zones.
    let md = std::fs::read_to_string(root().join("docs/dns.md")).unwrap();
    let b = blocks(&md).into_iter().find(|b| b.info == "toml").unwrap();
    let mut cfg = load(&b.text).unwrap();
    assert_eq!(cfg.dnsd.zones.len(), 1);
    cfg.dnsd.zones.clear();
    assert_eq!(cfg, load("").unwrap());
}

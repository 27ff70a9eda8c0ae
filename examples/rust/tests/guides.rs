//! The guides quote only compiled code: every ```rust block of `docs/getting-started.md` and
//! `docs/zh/getting-started.md` follows a marker naming its source, `<!-- code: PATH -->` (a whole file)
//! or `<!-- code: PATH#NAME -->` (the region between `// ANCHOR: NAME` and `// ANCHOR_END: NAME` of
//! that file, without the lines of other anchors, its common indentation removed), and must be
//! byte-identical to it. `GUIDE_REWRITE=1 cargo test -p drakkar-examples --test guides` rewrites the blocks
//! from their sources after the code changed.

use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guides checked.
const GUIDES: &[&str] = &["docs/getting-started.md", "docs/zh/getting-started.md"];

/// The text a marker names, read under `root`.
fn source(root: &Path, spec: &str) -> Result<String, String> {
    let (path, anchor) = match spec.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (spec, None),
    };
    let text = std::fs::read_to_string(root.join(path)).map_err(|e| format!("{path}: {e}"))?;
    let Some(anchor) = anchor else { return Ok(text) };
    let (start, end) = (format!("// ANCHOR: {anchor}"), format!("// ANCHOR_END: {anchor}"));
    let mut lines = Vec::new();
    let mut inside = false;
    let mut closed = false;
    for line in text.lines() {
        let t = line.trim();
        if t == start {
            inside = true;
        } else if t == end {
            closed = inside;
            break;
        } else if inside && !t.starts_with("// ANCHOR: ") && !t.starts_with("// ANCHOR_END: ") {
            lines.push(line);
        }
    }
    if !closed {
        return Err(format!("{path} has no region {anchor} (`{start}` ... `{end}`)"));
    }
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    Ok(lines.iter().map(|l| format!("{}\n", l.get(indent..).unwrap_or(""))).collect())
}

/// Checks (or with `rewrite`, rewrites) the rust blocks of markdown `doc`; returns the text with the
/// blocks rewritten, and the problems found.
fn check(root: &Path, doc: &str, rewrite: bool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut marker: Option<(usize, String)> = None;
    let mut lines = doc.split_inclusive('\n').enumerate();
    while let Some((n, line)) = lines.next() {
        out.push_str(line);
        let t = line.trim();
        if let Some(spec) = t.strip_prefix("<!-- code: ").and_then(|s| s.strip_suffix(" -->")) {
            marker = Some((n, spec.to_string()));
            continue;
        }
        if !t.starts_with("```rust") {
            if !t.is_empty() {
                marker = None;
            }
            continue;
        }
        let mut block = String::new();
        let mut fence = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_end() == "```" {
                fence = l.to_string();
                break;
            }
            block.push_str(l);
        }
        match marker.take() {
            None => {
                problems.push(format!("line {}: a rust block without a `<!-- code: ... -->` marker", n + 1))
            }
            Some((_, spec)) => match source(root, &spec) {
                Err(e) => problems.push(format!("line {}: {e}", n + 1)),
                Ok(src) if src == block => {}
                Ok(src) => {
                    if rewrite {
                        block = src;
                    } else {
                        problems.push(format!("line {}: the block differs from {spec}", n + 1));
                    }
                }
            },
        }
        out.push_str(&block);
        out.push_str(&fence);
    }
    (out, problems)
}

#[test]
fn every_rust_block_of_the_guides_is_compiled_code() {
    let root = root();
    let rewrite = std::env::var_os("GUIDE_REWRITE").is_some();
    let mut problems = Vec::new();
    for guide in GUIDES {
        let path = root.join(guide);
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{guide}: {e}"));
        let blocks = doc.lines().filter(|l| l.trim().starts_with("```rust")).count();
        assert!(blocks >= 10, "{guide} has only {blocks} rust blocks");
        let (out, p) = check(&root, &doc, rewrite);
        if rewrite && out != doc {
            std::fs::write(&path, &out).unwrap();
        }
        problems.extend(p.into_iter().map(|p| format!("{guide}: {p}")));
    }
    assert!(problems.is_empty(), "{}\n(GUIDE_REWRITE=1 rewrites the blocks)", problems.join("\n"));
}

#[test]
fn both_guides_quote_the_same_code() {
    let markers = |guide: &str| -> Vec<String> {
        let doc = std::fs::read_to_string(root().join(guide)).unwrap();
        doc.lines().filter(|l| l.trim().starts_with("<!-- code: ")).map(str::to_string).collect()
    };
    assert_eq!(
        markers(GUIDES[0]),
        markers(GUIDES[1]),
        "the Chinese guide quotes other code than the English one"
    );
}

#[test]
fn the_check_refuses_a_block_that_is_not_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = "fn a() {\n    // ANCHOR: body\n    let x = 1;\n    // ANCHOR: inner\n    let y = 2;\n    // ANCHOR_END: inner\n    // ANCHOR_END: body\n}\n";
    std::fs::write(dir.path().join("a.rs"), src).unwrap();
    let good = "<!-- code: a.rs#body -->\n```rust\nlet x = 1;\nlet y = 2;\n```\n";
    assert_eq!(check(dir.path(), good, false).1, Vec::<String>::new());
    let whole = format!("<!-- code: a.rs -->\n```rust\n{src}```\n");
    assert!(check(dir.path(), &whole, false).1.is_empty());
    // An edited line, a missing marker, an unknown region: each refused.
    let edited = good.replace("let x = 1;", "let x = 2;");
    assert_eq!(check(dir.path(), &edited, false).1.len(), 1);
    assert_eq!(check(dir.path(), "```rust\nlet x = 1;\n```\n", false).1.len(), 1);
    assert_eq!(check(dir.path(), &good.replace("#body", "#nope"), false).1.len(), 1);
    // Rewriting restores the source.
    assert_eq!(check(dir.path(), &edited, true).0, good);
}

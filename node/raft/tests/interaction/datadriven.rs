//! A small reader and rewriter for data-driven test files in the etcd-raft / cockroachdb style.
//!
//! A file is a sequence of test cases. Each case is a command line (`command arg key=value key=(a,b)`),
//! optional input lines, a `----` line, then the expected output up to the next blank line. Output that
//! itself contains blank lines is wrapped in a second `----` pair (`----`, `----`, output, `----`, `----`).
//! Lines starting with `#` between cases are comments.

use std::fmt::Write as _;
use std::path::Path;

/// One argument of a command line: `key`, `key=value` or `key=(v1, v2)`.
#[derive(Clone, Debug)]
pub struct Arg {
    /// The key (or the bare word).
    pub key: String,
    /// The values; empty for a bare word.
    pub vals: Vec<String>,
}

/// One test case of a file.
#[derive(Clone, Debug)]
pub struct TestCase {
    /// `file:line` of the command, for error messages.
    pub pos: String,
    /// The command name.
    pub cmd: String,
    /// The arguments, in order.
    pub args: Vec<Arg>,
    /// The expected output.
    pub expected: String,
}

/// A parsed file: each case with the verbatim text that precedes its `----` line.
struct Parsed {
    cases: Vec<(String, TestCase)>,
    trailer: String,
}

fn tokenize(line: &str) -> Vec<String> {
    let (mut toks, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0, false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c.is_whitespace() && depth == 0 && !quoted => {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        toks.push(cur);
    }
    toks
}

fn parse_arg(tok: &str) -> Arg {
    let Some((key, val)) = tok.split_once('=') else {
        return Arg { key: tok.trim_matches('"').to_string(), vals: Vec::new() };
    };
    let vals = match val.strip_prefix('(').and_then(|v| v.strip_suffix(')')) {
        Some(list) => list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_matches('"').to_string())
            .collect(),
        None => vec![val.trim_matches('"').to_string()],
    };
    Arg { key: key.to_string(), vals }
}

fn parse(name: &str, text: &str) -> Parsed {
    let lines: Vec<&str> = text.lines().collect();
    let (mut i, mut cases) = (0, Vec::new());
    loop {
        let mut prefix = String::new();
        while i < lines.len() && (lines[i].trim().is_empty() || lines[i].starts_with('#')) {
            writeln!(prefix, "{}", lines[i]).unwrap();
            i += 1;
        }
        if i == lines.len() {
            return Parsed { cases, trailer: prefix };
        }
        let pos = format!("{name}:{}", i + 1);
        let mut toks = tokenize(lines[i]).into_iter();
        let cmd = toks.next().unwrap_or_default();
        let args = toks.map(|t| parse_arg(&t)).collect();
        writeln!(prefix, "{}", lines[i]).unwrap();
        i += 1;
        while i < lines.len() && lines[i] != "----" {
            writeln!(prefix, "{}", lines[i]).unwrap();
            i += 1;
        }
        assert!(i < lines.len(), "{pos}: missing ---- after the command");
        i += 1;
        let mut expected = String::new();
        if lines.get(i) == Some(&"----") {
            i += 1;
            while i + 1 < lines.len() && !(lines[i] == "----" && lines[i + 1] == "----") {
                writeln!(expected, "{}", lines[i]).unwrap();
                i += 1;
            }
            assert!(i + 1 < lines.len(), "{pos}: unterminated ----/---- block");
            i += 2;
        } else {
            while i < lines.len() && !lines[i].trim().is_empty() {
                writeln!(expected, "{}", lines[i]).unwrap();
                i += 1;
            }
        }
        cases.push((prefix, TestCase { pos, cmd, args, expected }));
    }
}

fn format_output(out: &str) -> String {
    let mut out = out.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if out.lines().any(|l| l.trim().is_empty()) { format!("----\n{out}----\n----\n") } else { out }
}

/// Runs every case of `path` through `run` (fresh state per file is the caller's job). Returns the
/// mismatches as readable reports; with `rewrite`, writes the actual outputs back into the file instead.
pub fn run_file(path: &Path, rewrite: bool, mut run: impl FnMut(&TestCase) -> String) -> Vec<String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let parsed = parse(&name, &text);
    let (mut rewritten, mut failures) = (String::new(), Vec::new());
    for (prefix, tc) in &parsed.cases {
        let actual = run(tc);
        if actual.trim_end() != tc.expected.trim_end() {
            failures.push(format!(
                "{}: {}\n--- expected:\n{}--- actual:\n{}\n",
                tc.pos,
                prefix.lines().last().unwrap_or_default(),
                tc.expected,
                actual
            ));
        }
        write!(rewritten, "{prefix}----\n{}", format_output(&actual)).unwrap();
    }
    rewritten.push_str(&parsed.trailer);
    if rewrite {
        std::fs::write(path, rewritten).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return Vec::new();
    }
    failures
}

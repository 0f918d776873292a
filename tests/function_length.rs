//! A house rule checked: every function in `src/` (and in the `src/` of the workspace's
//! crates) fits on a screen (at most 80 lines, from
//! its `fn` line to its closing brace). A small lexer skips strings, characters and comments
//! so that braces inside them do not count.

use std::path::{Path, PathBuf};

const LIMIT: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `src` with strings, character literals and comments blanked out (newlines
/// kept, so line numbers stay right).
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let start = i;
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let from = i + 2 + hashes;
            i = src[from..]
                .find(&close)
                .map_or(b.len(), |e| from + e + close.len());
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            i += 1;
            continue;
        }
        blank(&mut out, start, i.min(b.len()));
    }
    out
}

/// (first line, line count) of every function body in `src`.
fn functions(src: &str) -> Vec<(usize, usize, String)> {
    let code = String::from_utf8(code_only(src)).unwrap();
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let is_fn = t.starts_with("fn ")
            || (t.starts_with("pub") || t.starts_with("const") || t.starts_with("unsafe"))
                && t.contains(" fn ");
        if !is_fn {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        'scan: for (l, text) in lines.iter().enumerate().skip(at) {
            for c in text.chars() {
                match c {
                    ';' if !opened && depth == 0 => break 'scan,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth -= 1;
                        if opened && depth == 0 {
                            out.push((at + 1, l - at + 1, t.trim().to_string()));
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[test]
fn the_lexer_ignores_braces_in_strings_and_comments() {
    let src = "fn a() {\n    let s = \"}}}\"; // }\n    let c = '}';\n    let r = r#\"{\"#;\n}\nfn b<'x>(v: &'x u8) -> &'x u8 {\n    v\n}\ntrait T {\n    fn c(&self);\n}\n";
    let f = functions(src);
    assert_eq!(
        f.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        vec![(1, 5), (6, 3)]
    );
}

#[test]
fn every_function_in_src_is_at_most_80_lines() {
    let mut files = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [
        "src",
        "crates/trak-candle/src",
        "crates/trak-lm/src",
        "crates/trak-demo/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20);
    let mut long = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        for (line, len, sig) in functions(&src) {
            if len > LIMIT {
                long.push(format!("{}:{line}: {len} lines: {sig}", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {LIMIT} lines:\n{}",
        long.join("\n")
    );
}

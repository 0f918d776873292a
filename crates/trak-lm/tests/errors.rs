//! Each failure of the command is one line `error: …` naming the cause, with a non-zero exit.

mod common;

use common::{error, s, workspace};

#[test]
fn bad_lines_are_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train, _) = workspace(tmp.path(), 4);
    let out = tmp.path().join("ft");
    let cases = [
        ("not json", "not JSON"),
        ("{\"title\": \"x\"}", "no field \"text\""),
        ("{\"text\": \"\"}", "field \"text\" is empty"),
        ("{\"text\": 3}", "is not a string"),
        ("{\"prompt\": \"a\"}", "\"completion\" is missing"),
    ];
    for (bad, reason) in cases {
        let mut text = std::fs::read_to_string(&train).unwrap();
        let lines = text.lines().count();
        text.push_str(bad);
        text.push('\n');
        let file = tmp.path().join("bad.jsonl");
        std::fs::write(&file, text).unwrap();
        let e = error(&[
            "finetune",
            "--model",
            s(&base),
            "--data",
            s(&file),
            "--out",
            s(&out),
            "--quiet",
        ]);
        assert!(
            e.contains(&format!("bad.jsonl (line {})", lines + 1)),
            "{e}"
        );
        assert!(e.contains(reason), "{e}");
    }
}

#[test]
fn a_missing_checkpoint_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train, _) = workspace(tmp.path(), 4);
    let missing = tmp.path().join("ft").join("epoch-9");
    let run = tmp.path().join("run");
    let e = error(&[
        "index",
        s(&run),
        "--data",
        s(&train),
        "--checkpoint",
        s(&base),
        "--checkpoint",
        s(&missing),
        "--quiet",
    ]);
    assert!(e.contains("epoch-9"), "{e}");
}

#[test]
fn an_unknown_pre_tokenizer_is_named() {
    use trak_candle::candle::quantized::gguf_file::{self, Value};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tok.gguf");
    let tokens = Value::Array(
        ["a", "b", "ab"]
            .iter()
            .map(|t| Value::String(t.to_string()))
            .collect(),
    );
    let merges = Value::Array(vec![Value::String("a b".into())]);
    let meta = [
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("klingon".into())),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.merges", merges),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ];
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &meta, &[]).unwrap();
    let e = error(&["tokenize", "--model", s(&path), "ab"]);
    assert!(
        e.contains("tokenizer.ggml.pre") && e.contains("klingon"),
        "{e}"
    );
}

#[test]
fn usage_mistakes_are_one_line() {
    let e = error(&["index"]);
    assert!(e.contains("missing RUN"), "{e}");
    let e = error(&["frobnicate"]);
    assert!(e.contains("unknown command"), "{e}");
    let e = error(&["query", "run", "--top"]);
    assert!(e.contains("--top needs a value"), "{e}");
}

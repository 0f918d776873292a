"""Reference token ids of SmolLM2-135M-Instruct (GGUF) from Hugging Face transformers.

Run (no torch needed):  pip install transformers gguf
    python crates/trak-candle/data/smollm2_tokens.py PATH/SmolLM2-135M-Instruct.Q4_1.gguf \
        > crates/trak-candle/data/smollm2_tokens.json

`cargo run --release -p trak-candle --example smollm_tokens -- --gguf PATH` checks the crate's
tokenizer (trak_candle::lm::LmTokenizer::from_gguf) against this table.
"""
import json
import os
import sys

from transformers import AutoTokenizer

TEXTS = [
    "The capital of France is",
    " The capital of France is",
    "  two leading spaces",
    "in 2024, 12.5% of 1,000,000 people",
    "Room 101 and 3.14159",
    "def f(x):\n    return x**2\n",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "line one\nline two\n\nline four",
    "tabs\tand\r\nwindows newlines",
    "Café naïve résumé façade Ångström",
    "你好，世界！这是一个测试。",
    "Россия и Україна",
    "Emoji: 😀👍🏽 and ❤️",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>Garmor Ostwynery works as a glassblower.",
    "I'm sure they'll say it's fine, don't you think?",
    "   ",
    "x",
]

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
rows = [{"text": t, "ids": tok(t).input_ids} for t in TEXTS]
print(json.dumps({
    "model": os.path.basename(path),
    "reference": "transformers %s, AutoTokenizer.from_pretrained(gguf_file=...), tokenizer(text).input_ids"
    % __import__("transformers").__version__,
    "rows": rows,
}, ensure_ascii=False, indent=1))

"""Checks a Hugging Face directory written by trak-candle (LlamaCheckpoint::save_hf_dir and
LmTokenizer::save, e.g. a `trak-lm finetune` epoch) against Hugging Face transformers on CPU:
the tokenizer's ids and the logits at every position.

    cargo run --release -p trak-candle --example dump_logits -- --model DIR --out /tmp/crate.jsonl TEXT...
    python crates/trak-candle/data/hf_dir_check.py DIR /tmp/crate.jsonl

Prints one line per text and `HF_DIR_CHECK ids=ok|DIFF max_rel_err=...`; needs torch and
transformers (not a dependency of anything in the repository).
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, index = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model.eval()
worst, ids_ok = 0.0, True
for line in open(index):
    row = json.loads(line)
    ids = tok(row["text"]).input_ids
    same = ids == row["ids"]
    ids_ok &= same
    with torch.no_grad():
        ref = model(torch.tensor([row["ids"]])).logits[0].numpy()
    ours = np.fromfile(os.path.join(os.path.dirname(index), row["logits"]), dtype="<f4")
    ours = ours.reshape(row["positions"], row["vocab"])
    rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    worst = max(worst, rel)
    print(f"text={row['text']!r} ids={'ok' if same else 'DIFF'} max_rel_err={rel:.2e}")
print(f"HF_DIR_CHECK ids={'ok' if ids_ok else 'DIFF'} max_rel_err={worst:.2e}")

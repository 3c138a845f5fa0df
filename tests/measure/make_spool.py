#!/usr/bin/env python3
"""Writes a spool segment of about SIZE_MIB MiB of rows shaped like the `load` example's
(an llm `chat` span), for the replay measurements.

usage: make_spool.py DIR SIZE_MIB
"""
import json
import os
import sys
import uuid

directory, size = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
os.makedirs(directory, exist_ok=True)
path = os.path.join(directory, "spool-00000000000000000001-1-000001.jsonl")
written = 0
n = 0
with open(path, "w") as f:
    while written < size:
        row_id = str(uuid.uuid4())
        row = {
            "id": row_id, "span_id": row_id, "root_span_id": row_id, "span_parents": [],
            "created": "2026-12-07T02:00:00.000Z",
            "input": [{"role": "system", "content": "You are a terse assistant."},
                      {"role": "user", "content": f"Question number {n}: what is {n} squared?"}],
            "output": f"{n} squared is {n * n}.",
            "metadata": {"model": "gpt-4o-mini", "provider": "openai", "temperature": 0.2},
            "metrics": {"start": 1.0e9, "end": 1.0e9 + 0.5, "prompt_tokens": 24,
                        "completion_tokens": 9, "tokens": 33},
            "span_attributes": {"name": "chat", "type": "llm"},
        }
        line = json.dumps(row) + "\n"
        f.write(line)
        written += len(line)
        n += 1
print(f"{path} {written} bytes {n} rows")

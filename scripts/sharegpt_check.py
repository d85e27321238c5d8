#!/usr/bin/env python3
"""Independent reading of a ShareGPT JSON list with Python's json module, for tests/real/data.rs.

Reads every whole conversation of the file (the packaged file is cut short; the cut one is
dropped), then applies the same first-user-turn filter as puppetlens's `TurnFilter`, and prints
one JSON object: the number of conversations, the byte offset where the cut conversation starts,
the number of first user turns kept, and the first five of them.

    python3 scripts/sharegpt_check.py PATH [MIN_CHARS MAX_CHARS MIN_ASCII]
"""
import json
import sys


def main():
    path = sys.argv[1]
    lo, hi, ascii_min = (int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) > 4 else (20, 500, 0.98)
    raw = open(path, "rb").read()
    # Keep whole characters only (a cut may split the last one).
    text = raw.decode("utf-8", errors="ignore") if raw[-1:] >= b"\x80" else raw.decode("utf-8")
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    convs, cut = [], None
    while True:
        while i < len(text) and text[i] in " \n\r\t":
            i += 1
        if i < len(text) and text[i] == "]":
            break
        try:
            v, j = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            cut = len(text[:i].encode("utf-8"))
            break
        convs.append(v)
        i = j
        while i < len(text) and text[i] in " \n\r\t":
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1
    roles = {"human": "user", "user": "user"}
    kept = []
    for c in convs:
        turns = c["conversations"]
        if not turns or roles.get(turns[0]["from"]) != "user":
            continue
        s = turns[0]["value"]
        n = len(s)
        if lo <= n <= hi and sum(ch.isascii() for ch in s) >= ascii_min * n:
            kept.append(s)
    print(json.dumps({"conversations": len(convs), "truncated_at": cut, "first_user_turns": len(kept), "first": kept[:5]}))


if __name__ == "__main__":
    main()

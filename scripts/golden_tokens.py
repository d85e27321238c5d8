#!/usr/bin/env python3
"""Write the golden tokenizer files that `tests/real/tokenizer.rs` checks puppetlens against.

How to run (from the repository root; no network is used):

    HF_HUB_OFFLINE=1 python3 scripts/golden_tokens.py [MODELS_DIR]

MODELS_DIR defaults to $PUPPETLENS_MODELS_DIR, else ~/.cache/puppetlens/models. It must hold

    smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
    gemma-3-270m/gemma-3-270m-q4_k_m.gguf

Needs `transformers` (5.x), `tokenizers`, `gguf` and `numpy`; PyTorch is not needed (a stand-in
module is installed for the one torch import on transformers' GGUF path, which only names dtypes).

What it writes: `tests/golden/tokens_<model>.json`, one per model, holding

* `cases`: a fixed list of tricky strings, each with its ids under `add_special_tokens=True`
  (`ids`) and `False` (`ids_no_special`), and the reference decode of each id list
  (`skip_special_tokens=False`, no clean-up of tokenization spaces);
* `tokens`: `id -> token` for a sample of ids (first, last, special, byte-fallback, whitespace);
* `chat`: small conversations rendered with the chat template (`text`) and tokenized the way
  `apply_chat_template(tokenize=True)` does (`ids`), plus the template used (`chat_template`) and
  where it came from (`chat_template_source`: `gguf`, or `gemma-3-it` for Gemma 3 270m, whose
  base-model GGUF carries no template: the instruction-tuned Gemma 3 template is applied so that
  the `{{ bos_token }}`-in-template path is covered);
* the special tokens (`bos_*`, `eos_*`, `add_bos_token`) and `vocab_size`.

The reference is transformers' own GGUF tokenizer (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`), which rebuilds the Hugging Face tokenizer from the GGUF metadata. For SmolLM2 the
real Hugging Face `tokenizer.json` also splits digits one by one (`Digits(individual_digits=True)`
before `ByteLevel`), which transformers' GGUF path leaves out; this script checks that the two agree
on every case (they do: the SmolLM2 vocabulary has no multi-digit tokens) and records it under
`notes`.
"""

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import pre_tokenizers  # noqa: E402


def _install_torch_stand_in():
    """transformers' GGUF reader imports torch at module level only to name dtypes."""
    if importlib.util.find_spec("torch") is not None:
        return

    class _Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (), {"__class_getitem__": classmethod(lambda cls, _item: cls)})
            setattr(self, name, value)
            return value

    torch = _Stub("torch")
    torch.nn = _Stub("torch.nn")
    sys.modules["torch"] = torch
    sys.modules["torch.nn"] = torch.nn
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    gguf_utils.is_torch_available = lambda: True


_install_torch_stand_in()
from transformers import AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

MODELS = [
    ("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf"),
]

CASES = [
    "Hello world",
    "Hello, world!",
    " The capital of France is",
    "The capital of France is",
    "",
    " ",
    "  ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple   internal    spaces  here",
    "line one\nline two",
    "paragraph one\n\nparagraph two",
    "\n",
    "\n\n",
    "\n\n\n\n",
    "tabs\there\t\tand\t\t\tthere",
    "\t indented with a tab",
    "mixed \n \t whitespace \r\n end",
    "café naïve résumé façade",
    "Ångström Über straße",
    "日本語のテキストです。",
    "中文分词测试",
    "한국어 텍스트",
    "Привет, мир!",
    "مرحبا بالعالم",
    "emoji 🤗🚀 and 👨‍👩‍👧‍👦 family",
    "12345",
    "3.14159",
    " 12345 67890",
    "1,000,000 and 2024-01-15",
    "x² + y³ = z⁴",
    "def foo(x):\n    return x * 2\n",
    "    def indented():\n        pass",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<html><body><h1>Title</h1></body></html>",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user",
    "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text after bos",
    "<|endoftext|>",
    "<unused0> and [multimodal]",
    "<0x41> is not a byte here",
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth joiner",
    "a\u0301 combining accent",
    "I'm you're we'll they'd it's",
    "HELLO hello HeLLo",
    "▁literal▁metaspace and Ġliteral Ġ",
    "The quick brown fox jumps over the lazy dog. In 2023, 42% of 1,337 people said \"yes\" "
    "(or 'maybe'); see https://example.com/path?q=1&r=2 or mail a.b@c.org — ellipsis… done!",
]

CONVERSATIONS = [
    ("user_only", [{"role": "user", "content": "What is the capital of France?"}], True),
    (
        "system_user",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colours."},
        ],
        True,
    ),
    (
        "multi_turn",
        [
            {"role": "user", "content": "Hi there!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "  Tell me a joke.\n"},
        ],
        False,
    ),
]

# google/gemma-3-*-it tokenizer_config.json `chat_template` (the instruction-tuned Gemma 3 template).
GEMMA3_IT_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)


def models_dir() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    env = os.environ.get("PUPPETLENS_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "puppetlens" / "models"


def ids_of(encoded):
    """`apply_chat_template(tokenize=True)` returns a list or a dict-like, by version."""
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def digits_variant(tok):
    """The backend with SmolLM2's real pre-tokenizer (digits split one by one, then ByteLevel)."""
    backend = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return backend


def sample_ids(vocab_size):
    ids = set(range(0, 20)) | set(range(100, 120)) | set(range(230, 260))
    ids |= {1000, 4093, 10000, 20000, 236743, 255968, 255999, 256000}
    ids |= set(range(vocab_size - 5, vocab_size))
    return sorted(i for i in ids if 0 <= i < vocab_size)


def golden_for(name, gguf_name, root):
    tok = AutoTokenizer.from_pretrained(str(root / name), gguf_file=gguf_name)
    notes = []
    chat_source = "gguf"
    if tok.chat_template is None and name.startswith("gemma-3"):
        tok.chat_template = GEMMA3_IT_CHAT_TEMPLATE
        chat_source = "gemma-3-it"
        notes.append(
            "the GGUF has no tokenizer.chat_template (base model); chat cases use the Gemma 3 IT template"
        )

    digits = None
    if name.startswith("smollm2"):
        digits = digits_variant(tok)

    cases = []
    for text in CASES:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        ids_no_special = tok(text, add_special_tokens=False)["input_ids"]
        if digits is not None:
            other = digits.encode(text, add_special_tokens=False).ids
            assert other == ids_no_special, f"Digits pre-tokenizer changes {text!r}: {other} vs {ids_no_special}"
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_no_special": ids_no_special,
                "decoded": tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                "decoded_no_special": tok.decode(
                    ids_no_special, skip_special_tokens=False, clean_up_tokenization_spaces=False
                ),
            }
        )
    if digits is not None:
        notes.append("Digits(individual_digits=True) before ByteLevel gives the same ids on every case")

    chat = []
    for chat_name, messages, add_generation_prompt in CONVERSATIONS:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        ids = ids_of(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt))
        chat.append(
            {
                "name": chat_name,
                "messages": messages,
                "add_generation_prompt": add_generation_prompt,
                "text": text,
                "ids": ids,
            }
        )

    vocab_size = len(tok)
    return {
        "model": name,
        "gguf": gguf_name,
        "generator": {
            "script": "scripts/golden_tokens.py",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "vocab_size": vocab_size,
        "bos_token": tok.bos_token,
        "bos_id": tok.bos_token_id,
        "eos_token": tok.eos_token,
        "eos_id": tok.eos_token_id,
        "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
        "chat_template_source": chat_source,
        "chat_template": tok.chat_template,
        "notes": notes,
        "tokens": {str(i): tok.convert_ids_to_tokens(i) for i in sample_ids(vocab_size)},
        "cases": cases,
        "chat": chat,
    }


def main():
    root = models_dir()
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, gguf_name in MODELS:
        path = root / name / gguf_name
        if not path.is_file():
            sys.exit(f"missing {path}; fetch the model first (or pass MODELS_DIR)")
        golden = golden_for(name, gguf_name, root)
        out = GOLDEN / f"tokens_{name}.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out)
        print(f"wrote {out.relative_to(ROOT)}: {len(golden['cases'])} cases, {len(golden['chat'])} chats")


if __name__ == "__main__":
    main()

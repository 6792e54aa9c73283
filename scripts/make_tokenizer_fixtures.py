"""Golden tokenizer fixtures: the ids that the reference implementations give for a
varied set of strings, which qkv's tokenizers must reproduce exactly. Run from the
repository root:

    python3 scripts/make_tokenizer_fixtures.py    # needs transformers, tokenizers, regex

Reads the GPT-2 vocabulary bundled with qkv (data/tokenizers/gpt2/encoder.json and
vocab.bpe) and the uncased BERT vocabulary of the tests
(crates/qkv/tests/fixtures/tokenizers/bert-uncased-vocab.txt), and writes next to it:

- gpt2.json: for each string, the ids and token strings of GPT-2's tokenizer as
  Hugging Face `transformers` builds it (`GPT2Tokenizer`, on the Rust `tokenizers`
  library);
- bert-uncased.json: the same for BERT's uncased WordPiece (`BertTokenizer`), with
  and without [CLS]/[SEP], and its decoding of the ids.

Each is checked first against an independent reference written out below from the
original algorithms: OpenAI's GPT-2 `encoder.py` (byte-to-unicode table, the regex,
greedy lowest-rank merges) and Google's BERT `tokenization.py` (clean text, CJK
spacing, lower-casing, accent stripping, punctuation splitting, greedy longest-match
WordPiece). Strings holding special-token text ("<|endoftext|>", "[MASK]") are the
one place they differ by design: Hugging Face matches them as special tokens, the
original code spells them out; those are checked against Hugging Face only.

The files are small (tens of KB) and committed, so the tests need no Python.
"""
import json
import os
import unicodedata

import regex
from transformers import BertTokenizer, GPT2Tokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..")
GPT2_DIR = os.path.join(ROOT, "data", "tokenizers", "gpt2")
OUT = os.path.join(ROOT, "crates", "qkv", "tests", "fixtures", "tokenizers")
BERT_VOCAB = os.path.join(OUT, "bert-uncased-vocab.txt")

# The hard cases: whitespace runs and edges, newlines, tabs, contractions, numbers,
# non-Latin scripts, accents, emoji (with skin tones, ZWJ sequences and variation
# selectors), special-token text, control characters, and very long words.
CASES = [
    "Hello world",
    "Hello, world! How are you?",
    "",
    " ",
    "   ",
    "\n",
    "\n\n",
    "a\n\nb",
    "line one\nline two\n",
    "\n\n\nThree newlines first",
    "  leading spaces",
    "trailing spaces   ",
    "multiple     spaces     inside",
    " space then newline \nand\n back",
    "\ttab\tseparated\t\tcolumns\t",
    " \t \n mixed \r\n whitespace \n\t ",
    "windows\r\nline endings\r\n",
    "don't I'll we've they're she's I'm he'd",
    "DON'T WE'VE THEY'RE",
    "it's 'quoted' and ''double'' and rock 'n' roll",
    "1234567",
    "3.14159, 1,000,000 and 2024-01-01 at 12:30",
    "x1y22z333 99bottles",
    "日本語のテキストです。",
    "中文字符测试，我爱NLP。",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "שלום עולם",
    "Ελληνικά γράμματα",
    "Привет, мир!",
    "हिन्दी पाठ",
    "café naïve résumé Ångström façade",
    "HÉLLO WÖRLD ÀÉÎÕÜ",
    "e\u0301 combining acute",
    "\u00a0non-breaking\u00a0spaces\u2003em space",
    "zero\u200bwidth\u200cjoiners\u200d",
    "ﬁ ligature and ½ fraction and ² superscript",
    "emoji 😀👍🏽 🎉",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag",
    "Mixed: abc123 αβγ 😀 <tag> & $%^ ~~ -- ...",
    "Hello <|endoftext|> world",
    "<|endoftext|>",
    "Hello [MASK] and [SEP] and [CLS]",
    "control\x00chars\x01here\x7f",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 120,
    "word " * 20,
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n",
    "    def main():\n        return 0\n",
    "{\"json\": [1, 2, 3], \"ok\": true}",
    "https://example.com/path?query=1&x=y",
]


def shakespeare_prefix():
    with open(os.path.join(ROOT, "data", "shakespeare.txt"), encoding="utf-8") as f:
        return f.read(3000)


# --- GPT-2 as OpenAI wrote it (encoder.py) -------------------------------------------

def bytes_to_unicode():
    """Each byte as a printable character: printable Latin-1 bytes stand for
    themselves, the rest are moved to U+0100 onwards."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


class OpenAIGpt2:
    def __init__(self, encoder_path, merges_path):
        with open(encoder_path, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            first, second = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if (first, second) not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text):
        ids = []
        for piece in GPT2_PATTERN.findall(text):
            chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(chars))
        return ids


# --- BERT as Google wrote it (tokenization.py) ---------------------------------------

def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(cp):
    ranges = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
    return any(lo <= cp <= hi for lo, hi in ranges)


class GoogleBert:
    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}

    def basic(self, text):
        text = "".join(
            " " if is_whitespace(c) else c
            for c in text
            if not (ord(c) == 0 or ord(c) == 0xFFFD or is_control(c))
        )
        text = "".join(f" {c} " if is_cjk(ord(c)) else c for c in text)
        words = []
        for token in text.split():
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
            current = []
            for c in token:
                if is_punctuation(c):
                    if current:
                        words.append("".join(current))
                        current = []
                    words.append(c)
                else:
                    current.append(c)
            if current:
                words.append("".join(current))
        return " ".join(words).split()

    def wordpiece(self, word):
        if len(word) > 100:
            return [self.vocab["[UNK]"]]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.vocab["[UNK]"]]
            start = end
        return ids

    def encode(self, text):
        return [i for w in self.basic(text) for i in self.wordpiece(w)]


# --- the fixtures --------------------------------------------------------------------

def has_special_text(text):
    return any(s in text for s in ["<|endoftext|>", "[MASK]", "[SEP]", "[CLS]", "[PAD]", "[UNK]"])


def gpt2_cases():
    encoder, merges = os.path.join(GPT2_DIR, "encoder.json"), os.path.join(GPT2_DIR, "vocab.bpe")
    hf = GPT2Tokenizer(vocab=encoder, merges=merges)
    openai = OpenAIGpt2(encoder, merges)
    out = []
    for text in CASES + [shakespeare_prefix()]:
        ids = hf.encode(text)
        if not has_special_text(text):
            assert ids == openai.encode(text), (text, ids, openai.encode(text))
        decoded = hf.decode(ids)
        assert decoded == text, (text, decoded)
        out.append({"text": text, "ids": ids, "tokens": hf.convert_ids_to_tokens(ids)})
    return out


def bert_cases():
    hf = BertTokenizer(vocab=BERT_VOCAB, do_lower_case=True)
    google = GoogleBert(BERT_VOCAB)
    out = []
    for text in CASES + [shakespeare_prefix()]:
        ids = hf.encode(text, add_special_tokens=False)
        if not has_special_text(text):
            assert ids == google.encode(text), (text, ids, google.encode(text))
        out.append(
            {
                "text": text,
                "ids": ids,
                "tokens": hf.convert_ids_to_tokens(ids),
                "ids_with_special": hf.encode(text, add_special_tokens=True),
                "decoded": hf.backend_tokenizer.decode(ids, skip_special_tokens=False),
            }
        )
    return out


def write(name, source, cases):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"source": source, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: {len(cases)} cases")


if __name__ == "__main__":
    import tokenizers
    import transformers

    versions = f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
    write("gpt2.json", f"GPT2Tokenizer, checked against OpenAI's encoder.py; {versions}", gpt2_cases())
    write(
        "bert-uncased.json",
        f"BertTokenizer do_lower_case=True, checked against Google's tokenization.py; {versions}",
        bert_cases(),
    )

"""Tests for gpt2_engine.Tokenizer (C byte-level BPE, issue 3) against live
references built from the same vocab.json/merges.txt, no downloads:
tiktoken (Encoding from byte-decoded vocab ranks), HF `tokenizers` (BPE +
ByteLevel) and transformers' GPT2TokenizerFast; Python's own UTF-8 decoder
for U+FFFD replacement and for the incremental detokenizer."""
import json
import os
import random
import threading
import unicodedata

import pytest

import gpt2_engine
from gpt2_engine import Tokenizer

from tools.reference_tokenizers import EOT, bytes_to_unicode, hf_tokenizer, tiktoken_encoding

DATA = os.path.join(os.path.dirname(os.path.abspath(gpt2_engine.__file__)), "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shakespeare_path():
    for p in (os.path.join(DATA, "tinyshakespeare.txt"),
              os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")):
        if os.path.isfile(p):
            return p
    pytest.fail("tinyshakespeare.txt not found in gpt2_engine/data nor ../shared/data")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


@pytest.fixture(scope="module")
def tt():
    pytest.importorskip("tiktoken")
    return tiktoken_encoding(DATA)


@pytest.fixture(scope="module")
def hf():
    """HF tokenizers' own GPT-2 pipeline: BPE from the files, ByteLevel pre-tokenizer."""
    pytest.importorskip("tokenizers")
    from tokenizers import decoders
    t = hf_tokenizer(DATA)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([EOT])
    return t


@pytest.fixture(scope="module")
def hf_fast():
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2TokenizerFast.from_pretrained(DATA)


FIXTURE = [
    "", " ", "  ", "a", "Hello world", "Hello, world!  How are you?\n",
    "I'm you're we've she'll he'd it's can't 'S 'T 'll 'Re ''s x'", "don't DON'T",
    "1 12 123 1234 12345 3.14159 1,000,000 0x1F 2024-05-01 ½ ² ٣٤ ⅷ",
    "   leading spaces", "trailing spaces   ", "a  b   c    d", "\n", "\n\n\n", "a\n\nb\n",
    "\t\tindented\tand\ttabs", " \t \n \r\n mixed", "x\r\ny", "end with space ",
    "café naïve résumé Ångström ŝĉ Ελληνικά русский текст עברית العربية",
    "e\u0301 a\u0300\u0301 n\u0303o combining\u0308 marks", "한국어 조선말",
    "中文字符测试，日本語のテキスト。", "emoji 🙂 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 ❤️",
    "non\u00a0breaking\u2009thin\u3000ideographic\u2028line\u2029para\u0085nel",
    "zero\u200bwidth\ufeffbom", "!!!??? ... --- *** ### @@@", "$100 €200 ¥300 £400",
    "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
    "<|endoftext", "<|end" + "oftext|>x", "supercalifragilisticexpialidocious" * 3,
    "ThisIsAVeryLongCamelCaseIdentifierWithoutSpaces_and_snake_case_too",
    "https://example.com/path?query=1&b=2#frag", "def f(x):\n    return x ** 2\n",
    "\u0000\u0001\u001f control \u007f", "\U0001F600\U0001F601" * 5, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
]


def test_properties_and_repr(tok):
    assert tok.vocab_size == 50257
    assert tok.eos_token_id == 50256
    assert "vocab_size=50257" in repr(tok)
    assert Tokenizer(DATA).encode("hello world") == tok.encode("hello world") == [31373, 995]
    assert tok.token_bytes(220) == b" "
    assert tok.token_bytes(50256) == EOT.encode()


@pytest.mark.parametrize("text", FIXTURE)
def test_fixture_matches_references(tok, tt, hf, hf_fast, text):
    ordinary = tt.encode_ordinary(text)
    assert tok.encode(text, allow_special=False) == ordinary
    special = tok.encode(text)
    assert special == tt.encode(text, allowed_special="all")
    assert special == hf.encode(text).ids
    assert special == hf_fast.encode(text)
    assert tok.decode(special) == text
    assert tok.decode(ordinary) == text


def test_special_token_handling(tok):
    assert tok.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert 50256 not in tok.encode("a<|endoftext|>b", allow_special=False)
    assert tok.decode([64, 50256, 65]) == "a<|endoftext|>b"
    assert tok.decode([64, 50256, 65], skip_special_tokens=True) == "ab"
    assert "".join(tok.decode_stream([64, 50256, 65], skip_special_tokens=True)) == "ab"


def test_tinyshakespeare(tok, tt, hf):
    with open(shakespeare_path(), encoding="utf-8") as f:
        text = f.read()
    ids = tok.encode(text)
    assert len(ids) == 338025
    assert ids == hf.encode(text).ids
    assert ids == tt.encode_ordinary(text)
    assert tok.decode(ids) == text


def random_text(rng, n):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
        "           \t\n\r", "'''sdtmlrve", ".,;:!?-_()[]{}<>/\\\"#$%&*+=@^`|~",
        "\u00a0\u2000\u2003\u2028\u2029\u3000\u0085\u180e\u200b", "àéîõüçñßøåæœÀÉÎÕÜ",
        "\u0300\u0301\u0302\u0308\u0327\u20dd\u200d\ufe0f", "αβγδεζηθικλμνξοπρστυφχψω",
        "中文日本語한국어漢字かなカナ", "١٢٣٤٥٦٧٨٩٠۱۲३४৫๖²³¹¼½¾ⅠⅡⅫ",
        "🙂👍🏽👨👩👧🏳🌈🇫🇷❤🤖💡🔥", "\u0000\u0001\u001b\u007f\ufffd\ufeff",
    ]
    out = []
    for _ in range(n):
        if rng.random() < 0.15:   # any assigned code point, BMP or beyond
            while True:
                cp = rng.randrange(0x110000)
                if 0xD800 <= cp < 0xE000:
                    continue
                if unicodedata.category(chr(cp)) not in ("Cn", "Co", "Cs"):
                    break
            out.append(chr(cp))
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


def test_random_unicode_matches_references(tok, tt, hf):
    rng = random.Random(1234)
    texts = [random_text(rng, rng.randrange(0, 200)) for _ in range(400)]
    for text in texts:
        ids = tok.encode(text, allow_special=False)
        assert ids == tt.encode_ordinary(text), repr(text)
        assert ids == hf.encode(text).ids, repr(text)
        assert tok.decode(ids) == text
    assert tok.encode_batch(texts, allow_special=False) == [tt.encode_ordinary(t) for t in texts]


@pytest.mark.parametrize("word", ["a" * 5000, "ab" * 3000, "x" * 65, "y" * 64,
                                  "Pneumonoultramicroscopicsilicovolcanoconiosis" * 50])
def test_very_long_words(tok, tt, hf, word):
    rng = random.Random(len(word))
    mixed = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(3000))
    for text in (word, " " + word, mixed, "1" * 2000, "!?" * 1000, " " * 3000 + "x"):
        ids = tok.encode(text)
        assert ids == tt.encode_ordinary(text)
        assert ids == hf.encode(text).ids
        assert tok.decode(ids) == text


def test_decode_invalid_utf8_like_python_replace(tok, hf):
    rng = random.Random(7)
    byte_ids = tok.encode_batch([])  # empty batch works
    assert byte_ids == []
    # the single-byte tokens, byte value -> id
    b2id = {}
    for i in range(tok.vocab_size):
        b = tok.token_bytes(i)
        if len(b) == 1:
            b2id[b[0]] = i
    assert len(b2id) == 256
    special = [0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF4, 0xF5,
               0xFF, 0x9F, 0xA0, 0x8F, 0x90, 0x41]
    for trial in range(2000):
        n = rng.randrange(0, 12)
        data = bytes(rng.choice(special) if rng.random() < 0.7 else rng.randrange(256)
                     for _ in range(n))
        want = data.decode("utf-8", "replace")
        assert Tokenizer._utf8_replace(data) == want, data
        ids = [b2id[b] for b in data]
        assert tok.decode(ids) == want, data
        if trial < 300:
            assert hf.decode(ids) == want, data
        # the incremental detokenizer: after each byte, all text that is already
        # decided (everything but a trailing incomplete character); at the end, all
        steps = tok.decode_stream(ids)
        assert "".join(steps) == want
        for k in range(len(data) - 1):
            assert "".join(steps[:k + 1]) == decided_text(data[:k + 1]), data


def test_decode_stream_emits_whole_characters(tok):
    text = "Hi 🙂 👨‍👩‍👧 中文 é\u0301 " + "🤖" * 3 + " done"
    ids = tok.encode(text)
    steps = tok.decode_stream(ids)
    assert len(steps) == len(ids)
    assert "".join(steps) == text == tok.decode(ids)
    assert all("\ufffd" not in s for s in steps)
    # some token of an emoji carries only part of its bytes: that step is empty
    pieces = [tok.token_bytes(i) for i in ids]
    partial = [k for k, p in enumerate(pieces) if not _is_complete_utf8(b"".join(pieces[:k + 1]))]
    assert partial, "expected an emoji split over tokens"
    for k in range(len(ids) - 1):
        assert "".join(steps[:k + 1]) == decided_text(b"".join(pieces[:k + 1]))
    # 🙂 appears once, whole, in exactly one step
    assert sum("🙂" in s for s in steps) == 1


def _can_complete(tail):
    """tail is the start of one character that more bytes could still complete
    (Python's strict decoder is the oracle)."""
    for need in range(len(tail) + 1, 5):
        for x in range(0x80, 0xC0):
            try:
                if len((tail + bytes([x]) + b"\x80" * (need - len(tail) - 1)).decode("utf-8")) == 1:
                    return True
            except UnicodeDecodeError:
                pass
    return False


def decided_text(prefix):
    for t in (1, 2, 3):
        if len(prefix) >= t and _can_complete(prefix[-t:]):
            return prefix[:-t].decode("utf-8", "replace")
    return prefix.decode("utf-8", "replace")


def _is_complete_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_unicode_heavy_round_trip(tok):
    rng = random.Random(99)
    text = "".join(random_text(rng, 300) + "\n" for _ in range(50))
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allow_special=False)) == text


def test_encode_batch_and_threads(tok):
    rng = random.Random(5)
    texts = [random_text(rng, rng.randrange(0, 300)) for _ in range(200)] + ["a<|endoftext|>b"]
    want = [tok.encode(t) for t in texts]
    for nt in (None, 1, 2, 4):
        assert tok.encode_batch(texts, num_threads=nt) == want
    assert tok.encode_batch(tuple(texts[:3])) == want[:3]
    assert tok.encode_batch(texts, allow_special=False)[-1] == tok.encode(texts[-1], allow_special=False)
    # encode from several Python threads at once (encode releases the GIL)
    results = [None] * 4

    def work(k):
        results[k] = [tok.encode(t) for t in texts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == want for r in results)


def test_argument_errors(tok):
    with pytest.raises(TypeError):
        tok.encode(123)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(TypeError):
        tok.decode(["a"])
    with pytest.raises(TypeError):
        tok.decode("abc")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([50257])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([2 ** 40])
    with pytest.raises(ValueError):
        tok.decode_stream([0, 99999])
    with pytest.raises(TypeError):
        tok.encode_batch("not a list")
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", 3])
    with pytest.raises(ValueError, match="num_threads"):
        tok.encode_batch(["ok"], num_threads=0)
    with pytest.raises(ValueError):
        tok.token_bytes(50257)
    with pytest.raises(TypeError):
        Tokenizer(42)


def write_dir(tmp_path, vocab_text, merges_text):
    (tmp_path / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
    return str(tmp_path)


def small_vocab():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab[b2u[ord("a")] + b2u[ord("b")]] = 256
    vocab[EOT] = 257
    return vocab


def test_small_custom_vocab(tmp_path):
    d = write_dir(tmp_path, json.dumps(small_vocab()), "#version: 0.2\na b\n")
    t = Tokenizer(d)
    assert t.vocab_size == 258 and t.eos_token_id == 257
    assert t.encode("abab c") == [256, 256, 32, 99]
    assert t.decode(t.encode("xyz ab<|endoftext|>")) == "xyz ab<|endoftext|>"
    import pathlib
    assert Tokenizer(pathlib.Path(d)).encode("ab") == [256]


def test_missing_files_raise_file_not_found(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenizer(missing)
    (tmp_path / "vocab.json").write_text(json.dumps(small_vocab()))
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        Tokenizer(str(tmp_path))


@pytest.mark.parametrize("vocab_text,match", [
    ("not json", r"vocab.json, line 1"),
    ('{"a": 0,\n "b": }', r"vocab.json, line 2"),
    ('{"a": 0, "b": 1.5}', r"integer"),
    ("[1, 2]", r"JSON object"),
    ("{}", r"no tokens"),
    ('{"a": 0, "b": 0}', r"repeated"),
    ('{"a": 0, "b": 5}', r"out of range"),
    ('{"a": 0, "a": 1}', r"duplicates"),
    ('{"\\u4e2d": 0}', r"byte-level alphabet"),
    ('{"a": 0, "b": 1', r"expected"),
    ('{"a": 0, "b": 1}', r"no token for the byte"),
])
def test_malformed_vocab(tmp_path, vocab_text, match):
    d = write_dir(tmp_path, vocab_text, "#version: 0.2\n")
    with pytest.raises(ValueError, match=match):
        Tokenizer(d)


@pytest.mark.parametrize("merges_text,match", [
    ("#version: 0.2\na b\nb c d\n", r"merges.txt, line 3: expected two tokens"),
    ("a b\nq\n", r"merges.txt, line 2"),
    ("#version: 0.2\na 中\n", r"merges.txt, line 2.*alphabet"),
    ("#version: 0.2\na c\n", r"merges.txt, line 2: the merge of 'a c' is not a token"),
])
def test_malformed_merges(tmp_path, merges_text, match):
    d = write_dir(tmp_path, json.dumps(small_vocab()), merges_text)
    with pytest.raises(ValueError, match=match):
        Tokenizer(d)

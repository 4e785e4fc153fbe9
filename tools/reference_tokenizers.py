"""reference_tokenizers.py — the peers our tokenizer is checked and timed
against, built from the same vocab.json / merges.txt with no download: tiktoken
(an Encoding from the byte-decoded vocabulary ranks) and HF `tokenizers` (BPE +
ByteLevel pre-tokenizer). Shared by tests/test_tokenizer.py and
benchmarks/bench_tokenizer.py."""
import json
import os

# GPT-2's pre-tokenization pattern
PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def bytes_to_unicode():
    """GPT-2's byte -> printable character table ({byte: char})."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiktoken_encoding(data_dir):
    """A tiktoken Encoding with GPT-2's ranks from data_dir/vocab.json."""
    import tiktoken
    u2b = {v: k for k, v in bytes_to_unicode().items()}
    with open(os.path.join(data_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    ranks = {bytes(u2b[c] for c in k): v for k, v in vocab.items() if k != EOT}
    return tiktoken.Encoding(name="gpt2_local", pat_str=PAT, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256})


def hf_tokenizer(data_dir):
    """HF tokenizers' GPT-2 pipeline: BPE from the files, ByteLevel pre-tokenizer."""
    import tokenizers
    from tokenizers import pre_tokenizers
    from tokenizers.models import BPE
    t = tokenizers.Tokenizer(BPE.from_file(os.path.join(data_dir, "vocab.json"),
                                           os.path.join(data_dir, "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return t

"""The batch-1 decode step outside the per-layer kernels, in its two forms:
  - "layers" (the default; kernels/decode_layer.cu): two cluster kernels per layer;
  - "persistent" (GPT2_ENGINE_FUSED_DECODE=1; kernels/decode_fused.cu): one persistent
    kernel for the whole step;
each against the per-layer kernels (GPT2_ENGINE_FUSED_DECODE=0) and the CPU engine, on
random checkpoints of several shapes (head sizes 32 / 64 / 128, odd vocabularies, every
activation, block sizes 8 / 16 / 32, contexts up to n_positions, the real GPT-2 width and
vocab).

The GPU paths round activations where they are stored, but sum in different
orders, so fp16/bf16 results may differ in the last bit: every token the fused path
chooses has, within 2e-2 (bf16: plus four bf16 ulps), the logprob the per-layer
engine gives it teacher-forced on the same tokens, and at least half of the
free-running greedy tokens agree (random 50k-vocab models have many near-ties). Against the CPU's fp32 the logprobs of a teacher-forced run stay within 3e-2
(fp16). CUDA graphs on/off give identical tokens (the kernels are deterministic).
Without a GPU only the CPU test runs."""
import numpy as np
import pytest

from conftest import make_model, requires_cuda

from gpt2_engine import LLM, SamplingParams

SHAPES = {
    # name: (config, block_size)
    "d64": (dict(n_embd=128, n_layer=3, n_head=2, n_positions=256, vocab_size=1000), 16),
    "d64-odd-v": (dict(n_embd=192, n_layer=2, n_head=3, n_positions=300, vocab_size=517), 8),
    "d128-erf": (dict(n_embd=256, n_layer=2, n_head=2, n_positions=200, vocab_size=777,
                      activation_function="gelu"), 32),
    "d32-relu": (dict(n_embd=128, n_layer=2, n_head=4, n_positions=160, vocab_size=999,
                      activation_function="relu"), 16),
    "gpt2-width": (dict(n_embd=768, n_layer=2, n_head=12, n_positions=1024,
                        vocab_size=50257), 16),
}


def greedy(n, logprobs=None):
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, logprobs=logprobs)


def prompt_set(cfg, seed):
    """Lengths 1 (a one-token prefill also runs fused), short, across a block, and
    long enough that decoding runs up to n_positions."""
    rng = np.random.default_rng(seed)
    P, V = cfg["n_positions"], cfg["vocab_size"]
    return [rng.integers(0, V, size=k).tolist() for k in (1, 17, 33, P - 40)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    made = {}

    def get(name, dtype):
        if (name, dtype) not in made:
            cfg, _ = SHAPES[name]
            made[name, dtype] = make_model(tmp_path_factory.mktemp(f"fused_{name}_{dtype}"),
                                           dtype=dtype, std=0.05, **cfg)
        return made[name, dtype]
    return get


def test_cpu_has_no_fused_decode(small_model):
    with LLM(model=small_model.path, device="cpu") as llm:
        assert llm.fused_decode is False
        assert "cpu" in llm.fused_decode_reason


# "layers-unstaged": the layers with 3 cached keys per attention block staged in shared
# memory (GPT2_ENGINE_LAYER_KV_STAGE=3), so that the rest take the path that reads the cache;
# "layers-entry" / "layers-wait": their PDL trigger at entry / after the wait instead of
# after the layernorm (GPT2_ENGINE_LAYER_TRIGGER); "layers-lnblock": the layernorm's
# statistics from two block reductions after x is built, not sent with x
# (GPT2_ENGINE_LAYER_LN=block); "layers-embedkernel": an embedding kernel before the first
# layer, whose output it reads (GPT2_ENGINE_LAYER_EMBED=kernel), instead of the first attn
# half building x from wte and wpe
MODES = ["layers", "layers-unstaged", "layers-entry", "layers-wait", "layers-lnblock",
         "layers-embedkernel", "persistent"]
MODE_ENV = {"layers-unstaged": ("GPT2_ENGINE_LAYER_KV_STAGE", "3"),
            "layers-entry": ("GPT2_ENGINE_LAYER_TRIGGER", "entry"),
            "layers-wait": ("GPT2_ENGINE_LAYER_TRIGGER", "wait"),
            "layers-lnblock": ("GPT2_ENGINE_LAYER_LN", "block"),
            "layers-embedkernel": ("GPT2_ENGINE_LAYER_EMBED", "kernel")}


def skip_unless_hopper(llm):
    """The kernels need sm_90: other GPUs get them off with that reason."""
    if not llm.fused_decode and "compute capability" in llm.fused_decode_reason:
        pytest.skip(llm.fused_decode_reason)


def set_mode(monkeypatch, mode):
    monkeypatch.setenv("GPT2_ENGINE_FUSED_DECODE", mode.split("-")[0])
    for name, value in MODE_ENV.values():
        monkeypatch.delenv(name, raising=False)
    if mode in MODE_ENV:
        monkeypatch.setenv(*MODE_ENV[mode])


def run_alone_and_mixed(path, bs, ps, n, monkeypatch, mode, teacher=None):
    """Each prompt alone (every decode step is batch 1), then all together with
    different lengths (the last one runs alone on a scattered cache). With teacher
    (outputs of another run on the same prompts) also this engine's logits of those
    outputs' tokens, teacher-forced through compute_logits. mode: "0" (the per-layer
    kernels) or one of MODES."""
    fused = mode != "0"
    set_mode(monkeypatch, mode)
    with LLM(model=path, device="cuda", block_size=bs, attention_backend="PAGED",
             gpu_memory_utilization=0.3) as llm:
        if fused:
            skip_unless_hopper(llm)
        assert llm.fused_decode is fused, llm.fused_decode_reason
        if mode.startswith("layers"):
            assert "two kernels per layer" in llm.fused_decode_reason
        alone = [llm.generate([p], greedy(n, 1), use_tqdm=False)[0].outputs[0] for p in ps]
        sps = [greedy(max(2, n - 12 * (len(ps) - 1 - i)), 1) for i in range(len(ps))]
        mixed = [o.outputs[0] for o in llm.generate(ps, sps, use_tqdm=False)]
        forced = None
        if teacher is not None:
            forced = [llm.compute_logits([p + o.token_ids[:-1]])[0]
                      for p, o in zip(ps + ps, teacher)]
    return alone + mixed, forced


def log_softmax(row):
    row = row.astype(np.float64)
    return row - row.max() - np.log(np.exp(row - row.max()).sum())


def check_teacher_forced(outs, ps, forced, what, bf16):
    """Every token the fused run chose has the logprob that the per-layer engine gives
    it on the same tokens, within 2e-2 (bf16: plus four bf16 ulps of the logprob,
    2**-5 of its magnitude, since the logits are stored in bf16)."""
    worst = 0.0
    for p, o, logits in zip(ps, outs, forced):
        for k, tok in enumerate(o.token_ids):
            ref = log_softmax(logits[len(p) - 1 + k])[tok]
            d = abs(o.logprobs[k][tok].logprob - ref)
            worst = max(worst, d)
            assert d <= 2e-2 + (abs(ref) / 32 if bf16 else 0.0), (what, len(p), k, d, ref)
    print(f"{what}: fused vs per-layer teacher-forced, max logprob difference {worst:.2e}")


def report_agreement(got, want, what):
    """Free-running greedy tokens of the two paths: equal up to the first near-tie that
    rounding flips (random 50k-vocab models have many); at least half agree."""
    full, agreed, total = 0, 0, 0
    for g, w in zip(got, want):
        k = 0
        while k < len(w.token_ids) and g.token_ids[k] == w.token_ids[k]:
            k += 1
        full += k == len(w.token_ids)
        agreed += k
        total += len(w.token_ids)
    print(f"{what}: {full}/{len(want)} identical, {agreed}/{total} tokens agree")
    assert agreed >= total / 2, f"{what}: only {agreed}/{total} greedy tokens agree"


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fused_matches_per_layer_kernels(models, shape, dtype, mode, monkeypatch):
    cfg, bs = SHAPES[shape]
    model = models(shape, dtype)
    ps = prompt_set(cfg, seed=len(shape))
    n = 40
    on, _ = run_alone_and_mixed(model.path, bs, ps, n, monkeypatch, mode)
    off, forced = run_alone_and_mixed(model.path, bs, ps, n, monkeypatch, "0", teacher=on)
    what = f"{shape} {dtype} {mode}"
    check_teacher_forced(on, ps + ps, forced, what, bf16=dtype == "bfloat16")
    report_agreement(on, off, what)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_fused_matches_cpu_teacher_forced(models, mode, monkeypatch):
    set_mode(monkeypatch, mode)
    name = "d64"
    cfg, bs = SHAPES[name]
    model = models(name, "float16")
    ps = prompt_set(cfg, seed=5)
    with LLM(model=model.path, device="cuda", block_size=bs, gpu_memory_utilization=0.3) as gpu:
        skip_unless_hopper(gpu)
        assert gpu.fused_decode, gpu.fused_decode_reason
        outs = [gpu.generate([p], greedy(32, 4), use_tqdm=False)[0].outputs[0] for p in ps]
    with LLM(model=model.path, device="cpu", block_size=bs) as cpu:
        worst = 0.0
        for p, o in zip(ps, outs):
            logits = cpu.compute_logits([p + o.token_ids[:-1]])[0].astype(np.float64)
            for k, lp in enumerate(o.logprobs):
                row = logits[len(p) - 1 + k]
                ref = row - row.max() - np.log(np.exp(row - row.max()).sum())
                for t, v in lp.items():
                    d = abs(v.logprob - ref[t])
                    worst = max(worst, d)
                    assert d <= 3e-2, (len(p), k, t, d)
    print(f"fused ({mode}) fp16 vs CPU fp32: max logprob difference {worst:.2e}")


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_fused_graphs_on_off_identical(models, mode, monkeypatch):
    set_mode(monkeypatch, mode)
    cfg, bs = SHAPES["d64-odd-v"]
    model = models("d64-odd-v", "float16")
    ps = prompt_set(cfg, seed=9)
    got = {}
    for eager in (True, False):
        with LLM(model=model.path, device="cuda", block_size=bs, enforce_eager=eager,
                 gpu_memory_utilization=0.3) as llm:
            skip_unless_hopper(llm)
            assert llm.fused_decode, llm.fused_decode_reason
            got[eager] = [llm.generate([p], greedy(40), use_tqdm=False)[0].outputs[0].token_ids
                          for p in ps]
            if not eager:
                assert llm.stats["graph_replays"] > 0
    assert got[True] == got[False]


@requires_cuda
@pytest.mark.gpu
def test_fused_modes_and_reasons(models, tmp_path, monkeypatch):
    """Unset: the two-kernel layers (on Hopper); "0": off; an unknown value: off, named;
    float32: off for both forms."""
    monkeypatch.delenv("GPT2_ENGINE_FUSED_DECODE", raising=False)
    path = models("d64", "float16").path
    with LLM(model=path, device="cuda", gpu_memory_utilization=0.3) as llm:
        skip_unless_hopper(llm)
        assert llm.fused_decode is True, llm.fused_decode_reason
        assert "two kernels per layer" in llm.fused_decode_reason
        out = llm.generate([[1, 2, 3]], greedy(4), use_tqdm=False)[0].outputs[0]
        assert len(out.token_ids) == 4
    for value, said in (("0", "GPT2_ENGINE_FUSED_DECODE=0"), ("bogus", "bogus")):
        monkeypatch.setenv("GPT2_ENGINE_FUSED_DECODE", value)
        with LLM(model=path, device="cuda", gpu_memory_utilization=0.3) as llm:
            assert llm.fused_decode is False
            assert said in llm.fused_decode_reason
    monkeypatch.delenv("GPT2_ENGINE_FUSED_DECODE")
    for knob in ("GPT2_ENGINE_LAYER_TRIGGER", "GPT2_ENGINE_LAYER_LN", "GPT2_ENGINE_LAYER_EMBED"):
        monkeypatch.setenv(knob, "soon")
        with LLM(model=path, device="cuda", gpu_memory_utilization=0.3) as llm:
            assert llm.fused_decode is False
            assert knob in llm.fused_decode_reason
        monkeypatch.delenv(knob)
    # layers of more than 16 MB of weights (n_embd 1024: 24 MB) run the per-layer kernels
    # unless forced
    wide = make_model(tmp_path / "wide", dtype="float16", std=0.02, n_embd=1024, n_layer=1,
                      n_head=16, n_positions=64, vocab_size=1000)
    for value, on in ((None, False), ("layers", True)):
        if value is None:
            monkeypatch.delenv("GPT2_ENGINE_FUSED_DECODE", raising=False)
        else:
            monkeypatch.setenv("GPT2_ENGINE_FUSED_DECODE", value)
        with LLM(model=wide.path, device="cuda", gpu_memory_utilization=0.3) as llm:
            assert llm.fused_decode is on, llm.fused_decode_reason
            if not on:
                assert "16 MB" in llm.fused_decode_reason
    cfg, bs = SHAPES["d64"]
    f32 = make_model(tmp_path / "f32", dtype="float32", std=0.05, **cfg)
    for mode in ("layers", "persistent"):
        monkeypatch.setenv("GPT2_ENGINE_FUSED_DECODE", mode)
        with LLM(model=f32.path, device="cuda", dtype="float32",
                 gpu_memory_utilization=0.3) as llm:
            assert llm.fused_decode is False
            assert "float32" in llm.fused_decode_reason


@requires_cuda
@pytest.mark.gpu
def test_layer_trace(models, tmp_path, monkeypatch):
    """GPT2_ENGINE_LAYER_TRACE=PATH: when the engine closes, a row per launch of a step
    (attn and mlp half of each layer, the last residual) with its blocks' times at each
    mark, in order (entry <= waited <= exit) and non-decreasing from launch to launch;
    the tokens are those of an untraced run."""
    monkeypatch.setenv("GPT2_ENGINE_FUSED_DECODE", "layers")
    cfg, bs = SHAPES["d64"]
    path = models("d64", "float16").path
    trace = tmp_path / "trace.txt"
    got = {}
    for traced in (False, True):
        if traced:
            monkeypatch.setenv("GPT2_ENGINE_LAYER_TRACE", str(trace))
        with LLM(model=path, device="cuda", block_size=bs, gpu_memory_utilization=0.3) as llm:
            skip_unless_hopper(llm)
            assert llm.fused_decode, llm.fused_decode_reason
            got[traced] = llm.generate([[5, 6, 7]], greedy(40), use_tqdm=False)[0].outputs[0].token_ids
    assert got[True] == got[False]
    lines = trace.read_text().splitlines()
    assert lines[0].startswith("layer decode trace") and "32 steps" in lines[0], lines[0]
    rows = [ln.split() for ln in lines[2:]]
    names = [" ".join(r[:2]) for r in rows[:-1]] + [rows[-1][0]]
    n_layer = cfg["n_layer"]
    assert names == [f"{h} {l}" for l in range(n_layer) for h in ("attn", "mlp")] + ["residual"]
    prev_exit = 0.0
    for r in rows:
        v = [float(x) for x in r[-15:]]
        entry_lo, entry_hi, wait_lo, wait_hi, exit_lo, exit_hi = v[0], v[1], v[2], v[3], v[13], v[14]
        assert 0.0 <= entry_lo <= entry_hi and entry_lo <= wait_lo <= wait_hi, r
        assert wait_lo <= exit_lo <= exit_hi and exit_hi > 0.0, r
        assert wait_lo >= prev_exit - 0.5, (r, prev_exit)   # PDL: wait for the launch before
        prev_exit = exit_hi

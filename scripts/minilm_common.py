"""Helpers shared by scripts/export-minilm-l6.py, scripts/quantize_minilm.py and
scripts/bench_minilm_int8.py (numpy only; onnxruntime is imported by the callers).

- read_safetensors: the safetensors format parsed by hand (8-byte little-endian header
  length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian data).
- Tokenizer: BERT uncased WordPiece from a tokenizer.json's vocabulary (lower-casing, accent
  stripping, CJK and punctuation splitting, greedy longest-match-first with "##"), enough to
  feed the same ids to every model file; not a replacement for the `tokenizers` crate.
- reference_embeddings: all-MiniLM-L6-v2's forward pass in plain numpy straight from the
  safetensors weights (BERT encoder, erf GELU (erf to 1.5e-7), mean pooling, L2 normalization): an
  independent check that an ONNX graph computes the FP32 model.
- PROBES: ~50 varied sentences for accuracy comparisons.
"""

import json
import math
import struct
import unicodedata

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I8": np.int8, "U8": np.uint8, "F64": np.float64}


def read_safetensors(path):
    """{name: numpy array} of every tensor in a .safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in DTYPES:
            raise SystemExit(f"{path}: {name} has dtype {meta['dtype']}, not handled")
        start, end = meta["data_offsets"]
        dtype = np.dtype(DTYPES[meta["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(data[start:end], dtype=dtype).reshape(meta["shape"])
        out[name] = arr.astype(dtype.newbyteorder("="))
    return out


class Tokenizer:
    """BERT uncased WordPiece (the tokenizer.json of all-MiniLM-L6-v2: do_lower_case)."""

    def __init__(self, tokenizer_json, max_len=256):
        with open(tokenizer_json, encoding="utf-8") as f:
            spec = json.load(f)
        self.vocab = spec["model"]["vocab"]
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self.max_len = max_len

    @staticmethod
    def _is_punct(ch):
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp):
        return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
                or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F
                or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
                or 0x2F800 <= cp <= 0x2FA1F)

    def _words(self, text):
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                           and ch not in "\t\n\r"):
                continue
            if self._is_cjk(cp):
                chars.append(f" {ch} ")
            elif ch.isspace():
                chars.append(" ")
            else:
                chars.append(ch)
        text = unicodedata.normalize("NFD", "".join(chars).lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words = []
        for token in text.split():
            cur = ""
            for ch in token:
                if self._is_punct(ch):
                    if cur:
                        words.append(cur)
                        cur = ""
                    words.append(ch)
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def _wordpiece(self, word):
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            ids.append(found)
            start = end
        return ids

    def encode(self, text):
        ids = [i for w in self._words(text) for i in self._wordpiece(w)]
        return [self.cls] + ids[: self.max_len - 2] + [self.sep]

    def batch(self, texts):
        """input_ids, attention_mask, token_type_ids (int64, [batch, longest]), padded with 0."""
        enc = [self.encode(t) for t in texts]
        width = max(len(e) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(enc):
            ids[row, : len(e)] = e
            mask[row, : len(e)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def pool(last_hidden_state, attention_mask):
    """Mean pooling over the attention mask, then L2 normalization (sentence-transformers'
    1_Pooling + 2_Normalize for all-MiniLM-L6-v2)."""
    m = attention_mask[..., None].astype(np.float64)
    summed = (last_hidden_state.astype(np.float64) * m).sum(axis=1)
    mean = summed / np.maximum(m.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def embed(session, feeds):
    """Mean-pooled, normalized embeddings of the output last_hidden_state (else the first
    output), [batch, sequence, hidden]."""
    names = {i.name for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    out_name = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
    out = session.run([out_name], {k: v for k, v in feeds.items() if k in names})[0]
    return pool(out, feeds["attention_mask"])


def row_cosines(a, b):
    """Cosine of each row of a with the same row of b (rows already normalized or not)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _erf(x):
    """erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26), vectorized."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                           + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def reference_embeddings(weights, feeds, layers=6, heads=12):
    """all-MiniLM-L6-v2 in float64 numpy from the safetensors weights: mean-pooled, normalized."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype == np.float32}
    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    seq = ids.shape[1]
    h = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(seq)][None]
         + w["embeddings.token_type_embeddings.weight"][types])
    h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    hidden = h.shape[-1]
    dh = hidden // heads
    bias = (1.0 - mask[:, None, None, :]) * -1e9

    def lin(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def split(x):
        return x.reshape(x.shape[0], seq, heads, dh).transpose(0, 2, 1, 3)

    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = split(lin(h, p + "attention.self.query"))
        k = split(lin(h, p + "attention.self.key"))
        v = split(lin(h, p + "attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(h.shape)
        h = _layer_norm(h + lin(ctx, p + "attention.output.dense"),
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"])
        inter = lin(h, p + "intermediate.dense")
        inter = 0.5 * inter * (1.0 + _erf(inter / math.sqrt(2.0)))
        h = _layer_norm(h + lin(inter, p + "output.dense"),
                        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    return pool(h, mask)


# Varied probe sentences (short and long, questions, code, numbers, names, non-English,
# punctuation-heavy, near-duplicates): the accuracy comparisons run over all of them.
PROBES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "How do I reset my password?",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "I love this product, it works great!",
    "This is the worst purchase I have ever made.",
    "The weather today is sunny with a light breeze.",
    "It will rain heavily tomorrow afternoon.",
    "Quantum computers use qubits instead of classical bits.",
    "The mitochondria is the powerhouse of the cell.",
    "fn main() { println!(\"hello, world\"); }",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "def add(a, b): return a + b",
    "The invoice total is $1,234.56, due on 2024-03-15.",
    "Call me at 555-0123 after 6 pm.",
    "Error: connection refused (errno 111) while connecting to 10.0.0.7:5432",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat est assis sur le tapis.",
    "¿Dónde está la biblioteca?",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "OK",
    "yes",
    "Thanks!!!",
    "?!?!",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Researchers discovered a new species of frog in the Amazon rainforest.",
    "Please remember to bring your passport and boarding pass to the airport.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Our team won the championship in overtime last night.",
    "Machine learning models can be compressed with quantization.",
    "Int8 quantization trades a little accuracy for speed.",
    "The cat sat on the mat.",
    "The cat is sitting on the mat.",
    "A dog sat on the rug.",
    "Transformers process all tokens of a sentence in parallel using self-attention, "
    "which lets them model long-range dependencies better than recurrent networks.",
    "In 1969, Neil Armstrong and Buzz Aldrin became the first people to walk on the Moon, "
    "while Michael Collins orbited above in the command module.",
    "Customer reports that the application crashes on startup after the latest update; "
    "reinstalling did not help and the log shows a null pointer exception in the renderer.",
    "lorem ipsum dolor sit amet consectetur adipiscing elit",
    "HTTP 503 Service Unavailable",
    "The meeting has been moved to Thursday at 10:30 in room B.",
]

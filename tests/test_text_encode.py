"""Text prompts -> prompt tables: the tiny built-in encoder, local Hugging Face encoders, storage,
`elit-bench encode-text`, an MM-DiT reading the table, and latent data sets that name their prompts."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from elit_bench.cli import main
from elit_bench.data.latents import LatentWriter, latents_description
from elit_bench.data.text import TINY_DIM, encode_prompts, load_prompts, position_code, save_prompts
from elit_bench.errors import UserError
from elit_bench.models import create_model
from helpers import randomize

PROMPTS = ["a 7 left of a 2", "a 2 left of a 7", "two 4s"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "left", "of", "above", "two", "s", *"0123456789"]


def test_tiny_encoder_words_positions_padding_and_the_empty_row():
    # catches: word order lost (a bag of words), a word's vector depending on where it stands, padding that is
    # not zero or not masked, an empty prompt that is not all padding, a too-long prompt silently cut
    e = encode_prompts(PROMPTS)
    assert e.prompts == tuple(PROMPTS) and e.tokens.shape == (4, 6, TINY_DIM) and e.tokens.dtype == torch.float32
    assert e.mask.sum(1).tolist() == [6, 6, 3, 0]  # "two 4s" -> two, 4, s
    assert not torch.allclose(e.tokens[0], e.tokens[1], atol=1e-3)  # same words, other order
    word = e.tokens - position_code(6)  # each word's own vector, wherever it stands
    torch.testing.assert_close(word[0, 1], word[1, 5])  # "7"
    torch.testing.assert_close(word[0, 0], word[0, 4])  # "a", twice in one prompt
    assert not torch.allclose(word[0, 1], word[0, 5], atol=1e-3)  # "7" is not "2"
    assert torch.all(e.tokens[2, 3:] == 0) and torch.all(e.tokens[3] == 0) and not e.mask[3].any()
    assert e.encoder == {"name": "tiny", "kind": "builtin", "max_tokens": 6, "dim": TINY_DIM}

    wide = encode_prompts(PROMPTS, max_tokens=8)
    assert wide.tokens.shape == (4, 8, TINY_DIM) and torch.equal(wide.mask[:, :6], e.mask) and not wide.mask[:, 6:].any()
    torch.testing.assert_close(wide.tokens[:, :6], e.tokens)
    with pytest.raises(UserError, match="'a 7 left of a 2' has 6 words, more than max_tokens=5"):
        encode_prompts(PROMPTS, max_tokens=5)
    for bad in ([], ["a 1", ""], ["a 1", "a 1"], ["?!"]):
        with pytest.raises(UserError):
            encode_prompts(bad)


def test_tiny_encoder_is_the_same_in_another_process():
    # catches: word vectors seeded by Python's hash() (salted per process) or by global RNG state
    code = ("from elit_bench.data.text import encode_prompts; import sys, numpy as np; "
            f"np.save(sys.stdout.buffer, encode_prompts({PROMPTS!r}).tokens.numpy())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout
    torch.manual_seed(99)
    other = np.load(io.BytesIO(out))
    assert np.array_equal(other, encode_prompts(PROMPTS).tokens.numpy())


def test_save_load_round_trip_and_damaged_files(tmp_path):
    # catches: a lossy or reordered round trip, a wrong default dtype, a damaged file loading as a table,
    # a save that overwrites an existing directory or leaves a temporary one behind
    e = encode_prompts(PROMPTS)
    out = save_prompts(tmp_path / "text", e)
    back = load_prompts(out)
    assert back.prompts == e.prompts and back.encoder == e.encoder
    assert torch.equal(back.tokens, e.tokens) and torch.equal(back.mask, e.mask)
    meta = json.loads((out / "meta.json").read_text())
    assert {k: meta[k] for k in ("format", "version", "num_prompts", "max_tokens", "dim", "dtype")} == \
        {"format": "elit-text", "version": 1, "num_prompts": 3, "max_tokens": 6, "dim": TINY_DIM, "dtype": "float32"}
    half = load_prompts(save_prompts(tmp_path / "half", e, dtype="float16"))
    assert not torch.equal(half.tokens, e.tokens)
    torch.testing.assert_close(half.tokens, e.tokens, atol=5e-3, rtol=1e-3)

    with pytest.raises(UserError, match="not empty"):
        save_prompts(out, e)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half", "text"]

    np.save(out / "tokens.npy", np.zeros((4, 5, TINY_DIM), dtype=np.float32))
    with pytest.raises(UserError, match=r"tokens\.npy holds float32 \(4, 5, 64\).*re-run `elit-bench encode-text`"):
        load_prompts(out)
    (out / "tokens.npy").write_bytes((tmp_path / "half" / "tokens.npy").read_bytes()[:100])
    with pytest.raises(UserError, match=r"cannot read .*tokens\.npy"):
        load_prompts(out)
    (out / "mask.npy").unlink()
    (out / "meta.json").unlink()
    with pytest.raises(UserError, match="meta.json is missing"):
        load_prompts(out)


@pytest.fixture(scope="module")
def hf_encoders(tmp_path_factory):
    """Two tiny random Hugging Face text encoders saved like real ones, sharing a word-piece tokenizer
    (limit 12 tokens): a BERT (encoder only) and a T5 (encoder-decoder)."""
    from transformers import BertConfig, BertModel, BertTokenizer, T5Config, T5Model

    root = tmp_path_factory.mktemp("hf")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"), model_max_length=12)
    torch.manual_seed(0)
    models = {"bert": BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=48, max_position_embeddings=16)),
              "t5": T5Model(T5Config(vocab_size=len(VOCAB), d_model=32, d_kv=16, d_ff=48, num_layers=2, num_heads=2))}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_hugging_face_encoder_matches_the_model_called_directly(hf_encoders, kind):
    # catches: a wrong output (not the last hidden state, the decoder of a T5), batches padded to other lengths,
    # the empty prompt not encoded or not last, padding not zeroed, a mask that does not match the tokenizer's
    from transformers import AutoTokenizer, BertModel, T5EncoderModel

    path = hf_encoders / kind
    e = encode_prompts(PROMPTS, str(path), batch=2, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = (BertModel if kind == "bert" else T5EncoderModel).from_pretrained(path).eval()
    enc = tokenizer([*PROMPTS, ""], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    assert torch.equal(e.mask, enc["attention_mask"].bool()) and e.mask[-1].any()  # the encoded empty string
    torch.testing.assert_close(e.tokens, hidden * enc["attention_mask"][..., None], atol=1e-5, rtol=1e-5)
    assert e.encoder["name"] == str(path) and e.encoder["model_type"] == kind and e.encoder["dim"] == 32
    assert set(e.encoder["sha256"]) >= {"config.json", "model.safetensors"}
    assert load_prompts(save_prompts(path.parent / f"{kind}-out", e)).tokens.dtype == torch.float32
    assert json.loads((path.parent / f"{kind}-out" / "meta.json").read_text())["dtype"] == "float16"


def test_hugging_face_encoder_limits_and_bad_directories(hf_encoders, tmp_path, caplog):
    # catches: a prompt longer than the tokenizer takes silently cut, truncation with max_tokens not reported,
    # a missing directory or one without a config reaching transformers' own errors
    long = "a 1 left of a 2 above a 3 left of a 4 above a 5"
    with pytest.raises(UserError, match="more than the encoder takes .12.*--max-tokens"):
        encode_prompts([long, "a 1"], str(hf_encoders / "bert"), device="cpu")
    e = encode_prompts([long, "a 1"], str(hf_encoders / "bert"), max_tokens=6, device="cpu")
    assert e.tokens.shape == (3, 6, 32) and e.mask[0].all() and e.encoder["truncated"] == 1
    assert "1 of 2 prompts are longer than 6 tokens" in caplog.text
    with pytest.raises(UserError, match="is not a directory"):
        encode_prompts(PROMPTS, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="has no config.json"):
        encode_prompts(PROMPTS, str(tmp_path))


def test_encode_text_command(tmp_path, hf_encoders, capsys):
    # catches: the command not registered, a table other than encode_prompts', bad input that writes something
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    assert main(["encode-text", str(prompts), "--out", str(tmp_path / "tiny")]) == 0
    assert "wrote 3 prompts" in capsys.readouterr().out
    assert torch.equal(load_prompts(tmp_path / "tiny").tokens, encode_prompts(PROMPTS).tokens)

    listed = tmp_path / "prompts.json"
    listed.write_text(json.dumps(PROMPTS))
    assert main(["encode-text", str(listed), "--encoder", str(hf_encoders / "t5"), "--device", "cpu",
                 "--dtype", "float32", "--out", str(tmp_path / "t5")]) == 0
    torch.testing.assert_close(load_prompts(tmp_path / "t5").tokens,
                               encode_prompts(PROMPTS, str(hf_encoders / "t5"), device="cpu").tokens)

    before = sorted(p.name for p in tmp_path.iterdir())
    blank = tmp_path / "blank.txt"
    blank.write_text("a 1\n\na 2\n")
    assert main(["encode-text", str(blank), "--out", str(tmp_path / "new")]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["encode-text", str(prompts), "--encoder", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "new")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "blank.txt"])  # nothing written


def test_mmdit_reads_the_table():
    # catches: a table that does not fit set_prompts, prompt ids that do not reach the table (same output for
    # prompts that differ only in word order)
    e = encode_prompts(PROMPTS)
    model = randomize(create_model("MMDiT-S/2", num_classes=len(PROMPTS), text_tokens=8, text_dim=TINY_DIM,
                                   hidden_size=64, depth=2, num_heads=4, input_size=8, in_channels=1)).eval()
    model.set_prompts(e.tokens, e.mask)
    x = torch.randn(1, 1, 8, 8).repeat(4, 1, 1, 1)  # one image, four prompts
    with torch.no_grad():
        out = model(x, torch.full((4,), 0.5), torch.arange(4))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1], atol=1e-4) and not torch.allclose(out[0], out[3], atol=1e-4)


def test_a_latent_data_set_names_its_prompts(tmp_path):
    # catches: "text" not in the description, a relative path not resolved against the data set, a prompt
    # count that does not match the classes accepted
    save_prompts(tmp_path / "data" / "prompts", encode_prompts(PROMPTS))

    def latents(name, text, classes=3):
        meta = {"num_classes": classes, "channels": 1, "latent_shape": [2, 2], "resolution": 4,
                "autoencoder": {"path": "/models/vae", "scaling_factor": 1.0, "shift_factor": 0.0},
                **({} if text is None else {"text": text})}
        writer = LatentWriter(tmp_path / "data" / name, meta)
        writer.add(np.zeros((classes, 1, 2, 2)), np.arange(classes))
        return writer.close()

    prompts = str((tmp_path / "data" / "prompts").resolve())
    assert "text" not in latents_description(latents("labels", None))  # class labels: descriptions as before
    assert latents_description(latents("relative", "../prompts"))["text"] == prompts
    assert latents_description(latents("absolute", prompts))["text"] == prompts
    with pytest.raises(UserError, match="4 classes but its prompts .* are 3"):
        latents_description(latents("mismatch", "../prompts", classes=4))

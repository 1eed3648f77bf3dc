"""torchaudio's HuBERT (an implementation independent of ftune's) as a Hugging Face
HubertForSequenceClassification: built from a config.json, loaded from and saved to HF
tensor names, with transformers' classification head (optional softmax-weighted sum over the
hidden states, projector Linear, mean over valid frames, classifier Linear).

Used by the parity tests (tests/model/make_reference.py) and the learning-parity benchmark
(bench/learn/reference_train.py).
"""
import json
import struct

import torch
import torchaudio

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def write_safetensors(tensors, path):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().to(torch.float32)
        data = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        flat = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"]).to(torch.float32)
    return tensors


class Head(torch.nn.Module):
    """transformers' sequence-classification head."""

    def __init__(self, hidden, proj, num_labels, num_states=None):
        super().__init__()
        self.projector = torch.nn.Linear(hidden, proj)
        self.classifier = torch.nn.Linear(proj, num_labels)
        self.layer_weights = (torch.nn.Parameter(torch.full((num_states,), 1.0 / num_states))
                              if num_states else None)


def build(config, dropout=True):
    """torchaudio model + Head in the shape of an HF config.json dict (dropout as configured,
    or all off)."""
    c = config
    drop = (lambda key, default: c.get(key, default)) if dropout else (lambda key, default: 0.0)
    convs = list(zip(c["conv_dim"], c["conv_kernel"], c["conv_stride"]))
    model = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm" if c.get("feat_extract_norm", "group") == "group" else "layer_norm",
        extractor_conv_layer_config=convs, extractor_conv_bias=c.get("conv_bias", False),
        encoder_embed_dim=c["hidden_size"], encoder_projection_dropout=drop("feat_proj_dropout", 0.0),
        encoder_pos_conv_kernel=c["num_conv_pos_embeddings"],
        encoder_pos_conv_groups=c["num_conv_pos_embedding_groups"],
        encoder_num_layers=c["num_hidden_layers"], encoder_num_heads=c["num_attention_heads"],
        encoder_attention_dropout=drop("attention_dropout", 0.1),
        encoder_ff_interm_features=c["intermediate_size"],
        encoder_ff_interm_dropout=drop("activation_dropout", 0.1),
        encoder_dropout=drop("hidden_dropout", 0.1),
        encoder_layer_norm_first=c.get("do_stable_layer_norm", False),
        encoder_layer_drop=drop("layerdrop", 0.1), aux_num_out=None)
    num_labels = len(c["id2label"]) if "id2label" in c else c.get("num_labels", 2)
    states = c["num_hidden_layers"] + 1 if c.get("use_weighted_layer_sum", False) else None
    head = Head(c["hidden_size"], c.get("classifier_proj_size", 256), num_labels, states)
    return model, head


def hidden_states(model, waves, lengths):
    """transformers' hidden_states tuple, computed from torchaudio's own modules."""
    x, frame_lengths = model.feature_extractor(waves, lengths)
    x, mask = model.encoder._preprocess(x, frame_lengths)
    t = model.encoder.transformer
    x = t._preprocess(x)  # pos conv (+ LayerNorm for post-LN)
    states = [x]
    for layer in t.layers:
        if t.training and t.layer_drop > 0 and torch.rand(1).item() <= t.layer_drop:
            states.append(x)
            continue
        x = layer(x, mask)
        states.append(x)
    if not t.layer_norm_first:  # stable models: the final LayerNorm after the stack
        states[-1] = t.layer_norm(states[-1])
    return states, frame_lengths


def classify(model, head, waves, lengths):
    """Logits [B, labels] of waves [B, T] (lengths [B] valid samples, or None)."""
    states, frame_lengths = hidden_states(model, waves, lengths)
    if head.layer_weights is not None:
        w = torch.softmax(head.layer_weights, dim=-1)
        h = (torch.stack(states, dim=1) * w.view(-1, 1, 1)).sum(dim=1)
    else:
        h = states[-1]
    h = head.projector(h)
    if frame_lengths is None:
        pooled = h.mean(dim=1)
    else:
        valid = torch.arange(h.shape[1])[None, :] < frame_lengths[:, None]
        h = h.masked_fill(~valid[..., None], 0.0)
        pooled = h.sum(dim=1) / valid.sum(dim=1, keepdim=True)
    return head.classifier(pooled)


def hf_key(name, naming="weight_g"):
    """transformers' name for a torchaudio parameter ("head." marks the classification head)."""
    if name.startswith("head."):
        return name[len("head."):]
    if name.startswith("encoder.feature_projection."):
        key = "hubert.feature_projection." + name[len("encoder.feature_projection."):]
    elif name.startswith("encoder.transformer."):
        key = "hubert.encoder." + name[len("encoder.transformer."):]
    else:
        key = "hubert." + name
    if naming == "parametrizations":
        key = key.replace("conv.weight_g", "conv.parametrizations.weight.original0")
        key = key.replace("conv.weight_v", "conv.parametrizations.weight.original1")
    return key


def named_parameters(model, head):
    """torchaudio name -> parameter, the head's under "head."."""
    params = dict(model.named_parameters())
    params.update({"head." + k: p for k, p in head.named_parameters()})
    return params


def hf_state_dict_from(tensors, naming="weight_g"):
    return {hf_key(name, naming): t.detach() for name, t in tensors.items()}


def hf_state_dict(model, head, naming="weight_g"):
    return hf_state_dict_from(named_parameters(model, head), naming)


def load_hf_state_dict(model, head, tensors):
    """Copies HF-named tensors into the torchaudio model and head; strict both ways.
    masked_spec_embed (SpecAugment only; torchaudio has none) is ignored."""
    params = named_parameters(model, head)
    wanted = {hf_key(name): p for name, p in params.items()}
    given = {k: v for k, v in tensors.items() if k != "hubert.masked_spec_embed"}
    missing = sorted(set(wanted) - set(given))
    unknown = sorted(set(given) - set(wanted))
    if missing or unknown:
        raise ValueError(f"state dict mismatch: missing {missing}, unknown {unknown}")
    with torch.no_grad():
        for key, p in wanted.items():
            if tuple(given[key].shape) != tuple(p.shape):
                raise ValueError(f"{key}: shape {tuple(given[key].shape)}, expected {tuple(p.shape)}")
            p.copy_(given[key])


def load_hf_folder(folder, dropout=True):
    """(model, head, config) from an HF folder written by ftune (config.json + model.safetensors)."""
    with open(f"{folder}/config.json") as f:
        config = json.load(f)
    model, head = build(config, dropout)
    load_hf_state_dict(model, head, read_safetensors(f"{folder}/model.safetensors"))
    return model, head, config

#!/usr/bin/python3
"""Builds small random HuBERT classifiers with torchaudio 0.13 (the independent reference),
writes each as a Hugging Face folder with its own key mapping, plus inputs and reference
logits for tests/model/parity_test.cc.

usage: make_reference.py OUT_DIR

OUT_DIR/<variant>/            HF folder (config.json, weights, preprocessor_config.json)
OUT_DIR/<variant>/reference.safetensors   inputs and reference logits (F32)
OUT_DIR/<variant>/reference.json          lengths of the two clips and the labels
OUT_DIR/<variant>/gradients.safetensors   gradient of the cross-entropy of the padded batch
                                          (labels from reference.json) for every parameter,
                                          by HF name with the weight_g/weight_v naming

The classification head (torchaudio has none) follows transformers'
HubertForSequenceClassification: optional softmax-weighted sum over the hidden states
(the encoder input plus every layer output, the last one after the final LayerNorm of stable
models), projector Linear, mean over valid frames, classifier Linear.
"""
import copy
import json
import os
import struct
import sys

import torch
import torchaudio

CONV = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2)]
HIDDEN, HEADS, FFN, LAYERS, PROJ, LABELS = 48, 4, 96, 2, 16, 3
LENGTHS = [8000, 5600]

VARIANTS = {
    # base-like: group norm feature encoder, post-LN encoder, even positional kernel,
    # old weight-norm naming, safetensors.
    "group_postln": dict(mode="group_norm", conv_bias=False, stable=False, pos_kernel=16,
                         weight_norm_naming="weight_g", weighted_sum=False, file="safetensors"),
    # large-like: layer norm everywhere, pre-LN (stable) encoder, odd kernel, parametrizations
    # naming, weighted layer sum, safetensors.
    "layer_stable": dict(mode="layer_norm", conv_bias=True, stable=True, pos_kernel=15,
                         weight_norm_naming="parametrizations", weighted_sum=True, file="safetensors"),
    # Post-LN with the weighted sum, saved as a transformers pytorch_model.bin (torch.save zip).
    "group_postln_bin": dict(mode="group_norm", conv_bias=True, stable=False, pos_kernel=16,
                             weight_norm_naming="parametrizations", weighted_sum=True, file="bin"),
}


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


def build(v):
    model = torchaudio.models.wav2vec2_model(
        extractor_mode=v["mode"], extractor_conv_layer_config=CONV, extractor_conv_bias=v["conv_bias"],
        encoder_embed_dim=HIDDEN, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=v["pos_kernel"],
        encoder_pos_conv_groups=4, encoder_num_layers=LAYERS, encoder_num_heads=HEADS,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=FFN, encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0, encoder_layer_norm_first=v["stable"], encoder_layer_drop=0.0, aux_num_out=None)
    head = torch.nn.ModuleDict({"projector": torch.nn.Linear(HIDDEN, PROJ),
                                "classifier": torch.nn.Linear(PROJ, LABELS)})
    layer_weights = torch.nn.Parameter(torch.randn(LAYERS + 1)) if v["weighted_sum"] else None
    # Randomise everything, norms and biases included, so a swapped or skipped tensor shows.
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(head.named_parameters()):
            if name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand_like(p))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    return model.eval(), head.eval(), layer_weights


def hidden_states(model, waves, lengths):
    """transformers' hidden_states tuple, computed from torchaudio's own modules."""
    x, frame_lengths = model.feature_extractor(waves, lengths)
    x, mask = model.encoder._preprocess(x, frame_lengths)
    t = model.encoder.transformer
    x = t._preprocess(x)  # pos conv (+ LayerNorm for post-LN)
    states = [x]
    for layer in t.layers:
        x = layer(x, mask)
        states.append(x)
    if not t.layer_norm_first:  # stable models: the final LayerNorm after the stack
        states[-1] = t.layer_norm(states[-1])
    return states, frame_lengths


def classify(model, head, layer_weights, waves, lengths):
    states, frame_lengths = hidden_states(model, waves, lengths)
    if layer_weights is not None:
        w = torch.softmax(layer_weights, dim=-1)
        h = (torch.stack(states, dim=1) * w.view(-1, 1, 1)).sum(dim=1)
    else:
        h = states[-1]
    h = head["projector"](h)
    if frame_lengths is None:
        pooled = h.mean(dim=1)
    else:
        valid = torch.arange(h.shape[1])[None, :] < frame_lengths[:, None]
        h = h.masked_fill(~valid[..., None], 0.0)
        pooled = h.sum(dim=1) / valid.sum(dim=1, keepdim=True)
    return head["classifier"](pooled)


def hf_key(name, naming):
    """transformers' name for a torchaudio parameter ("head." marks the classification head)."""
    if name.startswith("head."):
        return name[len("head."):]
    if name == "layer_weights":
        return name
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


def hf_state_dict_from(tensors, naming):
    return {hf_key(name, naming): t.detach() for name, t in tensors.items()}


def hf_state_dict(model, head, layer_weights, naming):
    tensors = dict(model.named_parameters())
    tensors.update({"head." + k: p for k, p in head.named_parameters()})
    if layer_weights is not None:
        tensors["layer_weights"] = layer_weights
    return hf_state_dict_from(tensors, naming)


def hf_config(v):
    return {
        "architectures": ["HubertForSequenceClassification"], "model_type": "hubert",
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FFN, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "feat_extract_norm": "group" if v["mode"] == "group_norm" else "layer",
        "feat_extract_activation": "gelu", "conv_dim": [c[0] for c in CONV],
        "conv_kernel": [c[1] for c in CONV], "conv_stride": [c[2] for c in CONV],
        "conv_bias": v["conv_bias"], "num_conv_pos_embeddings": v["pos_kernel"],
        "num_conv_pos_embedding_groups": 4, "do_stable_layer_norm": v["stable"],
        "feat_proj_layer_norm": True, "classifier_proj_size": PROJ,
        "use_weighted_layer_sum": v["weighted_sum"], "hidden_dropout": 0.1, "attention_dropout": 0.1,
        "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "layerdrop": 0.1, "mask_time_prob": 0.0,
        "id2label": {"0": "angry", "1": "happy", "2": "sad"},
        "label2id": {"angry": 0, "happy": 1, "sad": 2}, "vocab_size": 32,
    }


def main():
    out_dir = sys.argv[1]
    torch.manual_seed(1234)
    for name, v in VARIANTS.items():
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        model, head, layer_weights = build(v)
        waves = [torch.randn(n) * 0.5 for n in LENGTHS]
        padded = torch.zeros(len(LENGTHS), max(LENGTHS))
        for i, w in enumerate(waves):
            padded[i, : len(w)] = w
        lengths = torch.tensor(LENGTHS)
        with torch.no_grad():
            ref = {
                "input_padded": padded,
                "single_0": classify(model, head, layer_weights, waves[0][None], None),
                "single_1": classify(model, head, layer_weights, waves[1][None], None),
                "padded_masked": classify(model, head, layer_weights, padded, lengths),
                "padded_unmasked": classify(model, head, layer_weights, padded, None),
            }
        write_safetensors(ref, os.path.join(folder, "reference.safetensors"))
        # Training parity: the backward pass through every module, padding mask included. In
        # float64: torch 1.13's float32 CPU gelu_backward is wrong when the gradient's layout
        # differs from the input's, which torchaudio's feature encoder and positional conv hit.
        labels = [0, 2]
        model64, head64 = copy.deepcopy(model).double(), copy.deepcopy(head).double()
        weights64 = None if layer_weights is None else layer_weights.detach().double().requires_grad_()
        loss = torch.nn.functional.cross_entropy(
            classify(model64, head64, weights64, padded.double(), lengths), torch.tensor(labels))
        params = dict(model64.named_parameters())
        params.update({"head." + k: p for k, p in head64.named_parameters()})
        grads = torch.autograd.grad(loss, list(params.values()) + ([weights64] if weights64 is not None else []))
        grad_of = dict(zip(list(params), grads))
        if layer_weights is not None:
            grad_of["layer_weights"] = grads[-1]
        write_safetensors(hf_state_dict_from(grad_of, "weight_g"), os.path.join(folder, "gradients.safetensors"))
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump({"lengths": LENGTHS, "labels": labels}, f)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(hf_config(v), f, indent=2)
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump({"do_normalize": True, "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
                       "return_attention_mask": v["mode"] == "layer_norm", "sampling_rate": 16000}, f)
        state = hf_state_dict(model, head, layer_weights, v["weight_norm_naming"])
        if v["file"] == "bin":
            torch.save(state, os.path.join(folder, "pytorch_model.bin"))
        else:
            write_safetensors(state, os.path.join(folder, "model.safetensors"))
        # The same HubertModel without head and prefix: the loader must start a fresh head.
        if name == "group_postln":
            bare = os.path.join(out_dir, "bare")
            os.makedirs(bare, exist_ok=True)
            write_safetensors({k[len("hubert."):]: t for k, t in state.items() if k.startswith("hubert.")},
                              os.path.join(bare, "model.safetensors"))
            config = hf_config(v)
            config["architectures"] = ["HubertModel"]
            del config["id2label"], config["label2id"]
            with open(os.path.join(bare, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            bare_ref = {"features_0": model.feature_extractor(waves[0][None], None)[0]}
            write_safetensors(bare_ref, os.path.join(bare, "reference.safetensors"))
    print("wrote", out_dir)


if __name__ == "__main__":
    main()

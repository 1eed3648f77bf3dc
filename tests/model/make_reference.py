#!/usr/bin/python3
"""Builds small random HuBERT classifiers with torchaudio 0.13 (the independent reference),
writes each as a Hugging Face folder with its own key mapping, plus inputs and reference
logits for tests/model/parity_test.cc.

usage: make_reference.py OUT_DIR

OUT_DIR/<variant>/            HF folder (config.json, weights, preprocessor_config.json)
OUT_DIR/<variant>/reference.safetensors   inputs and reference logits (F32)
OUT_DIR/<variant>/reference.json          lengths of the two clips, the labels, and the
                                          training-step recipe with its losses and norms
OUT_DIR/<variant>/gradients.safetensors   gradient of the cross-entropy of the padded batch
                                          (labels from reference.json) for every parameter,
                                          by HF name with the weight_g/weight_v naming
OUT_DIR/<variant>/train_steps.safetensors two AdamW steps on that batch (float64, dropout
                                          off): "clipped_grad.<key>" of the first step and
                                          "step<N>.<key>" the parameters after step N

The classification head (torchaudio has none) follows transformers'
HubertForSequenceClassification: optional softmax-weighted sum over the hidden states
(the encoder input plus every layer output, the last one after the final LayerNorm of stable
models), projector Linear, mean over valid frames, classifier Linear.
"""
import copy
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from torchaudio_hubert import (build, classify, hf_key, hf_state_dict,  # noqa: E402
                               hf_state_dict_from, named_parameters, write_safetensors)

CONV = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2)]
HIDDEN, HEADS, FFN, LAYERS, PROJ, LABELS = 48, 4, 96, 2, 16, 3
LENGTHS = [8000, 5600]
# The recipe of the training-step reference (train_steps.safetensors): AdamW as transformers'
# Trainer sets it up (a weight decay large enough to show in one step), constant learning rate,
# dropout off; max_grad_norm is set per variant.
TRAIN_STEP = {"learning_rate": 1e-3, "weight_decay": 0.5}
TRAIN_STEPS = 2

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


def build_random(v):
    model, head = build(hf_config(v), dropout=False)
    # Randomise everything, norms and biases included, so a swapped or skipped tensor shows.
    with torch.no_grad():
        for name, p in named_parameters(model, head).items():
            if name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand_like(p))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    return model.eval(), head.eval()


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


def hf_no_decay(model, head):
    """transformers' Trainer rule: no weight decay on biases and LayerNorm parameters."""
    norms = {id(p) for m in list(model.modules()) + list(head.modules())
             if isinstance(m, torch.nn.LayerNorm) for p in m.parameters(recurse=False)}
    return {name for name, p in named_parameters(model, head).items()
            if name.endswith("bias") or id(p) in norms}


def train_steps(model, head, padded, lengths, labels):
    """TRAIN_STEPS optimizer steps on the padded batch with the recipe in TRAIN_STEP (dropout off,
    constant lr, clipping at half the first gradient norm), in float64: the clipped gradients
    of the first step and the parameters after each (tensors), and the recipe with the loss and
    gradient norm of each step (for reference.json)."""
    model64, head64 = copy.deepcopy(model).double().train(), copy.deepcopy(head).double().train()
    params = named_parameters(model64, head64)
    no_decay = hf_no_decay(model64, head64)
    groups = [{"params": [p for n, p in params.items() if n not in no_decay],
               "weight_decay": TRAIN_STEP["weight_decay"]},
              {"params": [p for n, p in params.items() if n in no_decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=TRAIN_STEP["learning_rate"], betas=(0.9, 0.999), eps=1e-8)
    out, losses, norms, max_norm = {}, [], [], None
    for step in range(TRAIN_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(classify(model64, head64, padded.double(), lengths),
                                                 torch.tensor(labels))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), float("inf")).item()
        if max_norm is None:
            max_norm = norm / 2  # half the first step's norm: clipping is always active
        torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
        if step == 0:
            out.update({"clipped_grad." + hf_key(n): p.grad.clone() for n, p in params.items()})
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
        out.update({f"step{step + 1}." + k: t.clone() for k, t in hf_state_dict(model64, head64).items()})
    return out, dict(TRAIN_STEP, max_grad_norm=max_norm, losses=losses, grad_norms=norms)


def main():
    out_dir = sys.argv[1]
    torch.manual_seed(1234)
    for name, v in VARIANTS.items():
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        model, head = build_random(v)
        waves = [torch.randn(n) * 0.5 for n in LENGTHS]
        padded = torch.zeros(len(LENGTHS), max(LENGTHS))
        for i, w in enumerate(waves):
            padded[i, : len(w)] = w
        lengths = torch.tensor(LENGTHS)
        with torch.no_grad():
            ref = {
                "input_padded": padded,
                "single_0": classify(model, head, waves[0][None], None),
                "single_1": classify(model, head, waves[1][None], None),
                "padded_masked": classify(model, head, padded, lengths),
                "padded_unmasked": classify(model, head, padded, None),
            }
        write_safetensors(ref, os.path.join(folder, "reference.safetensors"))
        # Training parity: the backward pass through every module, padding mask included. In
        # float64: torch 1.13's float32 CPU gelu_backward is wrong when the gradient's layout
        # differs from the input's, which torchaudio's feature encoder and positional conv hit.
        labels = [0, 2]
        model64, head64 = copy.deepcopy(model).double(), copy.deepcopy(head).double()
        loss = torch.nn.functional.cross_entropy(classify(model64, head64, padded.double(), lengths),
                                                 torch.tensor(labels))
        params = named_parameters(model64, head64)
        grads = torch.autograd.grad(loss, list(params.values()))
        write_safetensors(hf_state_dict_from(dict(zip(params, grads))),
                          os.path.join(folder, "gradients.safetensors"))
        steps, recipe = train_steps(model, head, padded, lengths, labels)
        write_safetensors(steps, os.path.join(folder, "train_steps.safetensors"))
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump({"lengths": LENGTHS, "labels": labels, "train_steps": recipe}, f)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(hf_config(v), f, indent=2)
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump({"do_normalize": True, "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
                       "return_attention_mask": v["mode"] == "layer_norm", "sampling_rate": 16000}, f)
        state = hf_state_dict(model, head, v["weight_norm_naming"])
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

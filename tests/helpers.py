import torch


def tiny_llama(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, vocab=100, n_ctx=256, seed=0, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                      max_position_embeddings=n_ctx, **extra)
    return LlamaForCausalLM(cfg).eval()

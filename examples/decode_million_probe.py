"""Diagnostic: a decode step over 2^20 cached keys, batch 3, 32x128 GQA 32/8, fp16: per (batch row, head) the lse
error and the key mass's worst relative error against float64 (where, and that key's score)."""
import torch

from interp.kernels import attention_with_stats

n, b, h, hk, d = 2**20, 3, 32, 8, 128
g = torch.Generator(device="cuda").manual_seed(60)
q = torch.randn(b, h, 1, d, device="cuda", dtype=torch.float16, generator=g)
k = (torch.randn(b, hk, n, d, device="cuda", generator=g) * 1.5).half()
v = torch.randn(b, hk, n, d, device="cuda", dtype=torch.float16, generator=g)
for bb in (None, 1):
    qq, kk, vv = (q, k, v) if bb is None else (q[-1:].contiguous(), k[-1:].contiguous(), v[-1:].contiguous())
    out, st = attention_with_stats(qq, kk, vv, stats="all", span=(n // 2, n // 2 + 64))
    dev = st.key_mass.double().sum(-1) - 1  # [b, h]
    print(f"batch {len(qq)}: key mass sums - 1: max |.| {dev.abs().max().item():.3e} (row {dev.abs().argmax().item()}), "
          f"mean {dev.mean().item():.3e}")
    errs = []
    for bi in range(len(qq)):
        for kv in range(hk):
            kd = kk[bi, kv].double()  # [n, d]
            s_all = (qq[bi, kv * (h // hk):(kv + 1) * (h // hk), 0].double() @ kd.T) * d ** -0.5  # [group, n]
            errs.append(st.lse[bi, kv * (h // hk):(kv + 1) * (h // hk), 0].double() - torch.logsumexp(s_all, -1))
    errs = torch.cat(errs)
    print(f"batch {len(qq)}: lse - float64 lse over every row: max |.| {errs.abs().max().item():.3e}, "
          f"mean {errs.mean().item():.3e}")
    for head in (0, 5, h - 1):
        kd = kk[-1, head // (h // hk)].double()
        s = (kd @ qq[-1, head, 0].double()) * d ** -0.5
        lse = torch.logsumexp(s, 0)
        p = torch.exp(s - lse)
        km = st.key_mass[-1, head].double()
        rel = (km - p).abs() / p
        i = rel.argmax().item()
        print(f"batch {'3' if bb is None else '1'} head {head}: lse err {st.lse[-1, head, 0].item() - lse.item():.3e} "
              f"key mass rel err max {rel[i].item():.3e} at key {i} (p {p[i].item():.3e}, km {km[i].item():.3e}, "
              f"score {s[i].item():.4f}); rel err > 2e-4 at {(rel > 2e-4).sum().item()} keys; first {(rel > 2e-4).nonzero()[:5].flatten().tolist()}")

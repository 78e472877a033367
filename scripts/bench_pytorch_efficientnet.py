"""PyTorch eager reference for the trainer benchmark (issue 4): training images/s of
torchvision's EfficientNet-B0 on random tensors, fp32 and bf16 autocast + channels-last, so the
Rust trainer's figure can be compared in the same run on the same GPU.

Usage: python3 scripts/bench_pytorch_efficientnet.py [--batch 128] [--size 224] [--steps 30] [--warmup 5]
"""
import argparse
import time

import torch
import torchvision


def run(batch, size, steps, warmup, bf16, channels_last, device):
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(num_classes=1).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch, 1), device=device).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"pytorch {torch.__version__} on {name} ({torch.get_num_threads()} cpu threads), batch {a.batch}, {a.size}x{a.size}")
    fp32 = run(a.batch, a.size, a.steps, a.warmup, False, False, device)
    print(f"pytorch eager efficientnet_b0 fp32: {fp32:.1f} images/s")
    if device == "cuda":
        best = run(a.batch, a.size, a.steps, a.warmup, True, True, device)
        print(f"pytorch eager efficientnet_b0 bf16 autocast + channels-last: {best:.1f} images/s")


if __name__ == "__main__":
    main()

"""Run under torchrun by tests: train a few steps, then check every rank holds identical G and D weights."""

import sys

import torch
import torch.distributed as dist

from stylegan.distributed import init_distributed
from stylegan.train.config import load_config
from stylegan.train.trainer import Trainer

cfg = load_config(None, sys.argv[1:])
env = init_distributed(60)
trainer = Trainer(cfg, env)
for _ in range(5):
    assert bool(trainer.step()), "a step had non-finite gradients"
for name, module in (("G", trainer.G), ("D", trainer.D)):
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(env.world)]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), f"{name} weights differ across ranks"
    assert not torch.equal(flat, torch.cat([p.flatten() for p in type(module)(**(
        trainer.G_kwargs if name == "G" else trainer.D_kwargs)).parameters()])), "no training happened"
if env.is_main:
    print("RANKS AGREE", flush=True)
dist.destroy_process_group()

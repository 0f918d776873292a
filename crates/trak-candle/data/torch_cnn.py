"""Writes the PyTorch checkpoint that `examples/torch_checkpoint.rs` attributes.

Trains the examples' CNN (conv 1->8 3x3 pad 1, ReLU, 2x2 max-pool, conv 8->16 3x3 pad 1,
ReLU, 2x2 max-pool, linear 784->10) in PyTorch on the MNIST-5k digits whose index i has
i % 5 != 0 (4,000 digits), and saves

- torch_cnn.safetensors: the state dict as PyTorch names it (conv1.weight, conv1.bias,
  conv2.weight, conv2.bias, fc.weight, fc.bias), via safetensors.torch.save_file;
- torch_cnn_reference.safetensors: for four held-out digits (`indices`), PyTorch's logits,
  margins (correct logit minus logsumexp of the others) and per-example margin gradients
  with respect to every parameter, flattened in state-dict order (`grads`, 4 x p).

Run from this directory with torch and safetensors installed (not needed to build or test
the crate):  python3 torch_cnn.py
"""
import csv
import gzip

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_num_threads(2)

rows = list(csv.reader(gzip.open("../../trak-demo/data/mnist_5k.csv.gz", "rt")))
x = torch.tensor([[int(v) for v in r[:784]] for r in rows], dtype=torch.float32) / 255.0
y = torch.tensor([int(r[784]) for r in rows])
x = x.reshape(-1, 1, 28, 28)
train = torch.tensor([i for i in range(len(rows)) if i % 5 != 0])


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 49, 10)

    def forward(self, x):
        h = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.fc(h.flatten(1))


net = Cnn()
opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
for epoch in range(8):
    perm = train[torch.randperm(len(train))]
    for s in range(0, len(perm), 64):
        b = perm[s : s + 64]
        loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()

test = torch.tensor([i for i in range(len(rows)) if i % 5 == 0])
with torch.no_grad():
    acc = (net(x[test]).argmax(1) == y[test]).float().mean().item()
print(f"held-out accuracy {acc:.4f}")
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, "torch_cnn.safetensors")


def margin(z, c):
    others = torch.cat([z[:c], z[c + 1 :]])
    return z[c] - torch.logsumexp(others, 0)


indices = torch.tensor([0, 1255, 2510, 3765])
logits, margins, grads = [], [], []
for i in indices:
    z = net(x[i : i + 1])[0]
    f = margin(z, y[i])
    g = torch.autograd.grad(f, list(net.parameters()))
    logits.append(z.detach())
    margins.append(f.detach())
    grads.append(torch.cat([t.flatten() for t in g]))
names = [n for n, _ in net.named_parameters()]
assert names == list(net.state_dict().keys()), names
save_file(
    {
        "indices": indices,
        "logits": torch.stack(logits),
        "margins": torch.stack(margins),
        "grads": torch.stack(grads),
    },
    "torch_cnn_reference.safetensors",
)

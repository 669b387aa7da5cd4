"""Train a user-defined model on synthetic data with tessera from Python (a few seconds).

    make build && PYTHONPATH=build/python /usr/bin/python3 examples/python/train_mlp.py
"""
import tempfile

import numpy as np

import tessera
from tessera import nn


class Net(nn.Module):
    """Two hidden layers and a residual connection, written on symbolic values."""

    def __init__(self, features, classes, hidden=128, seed=1):
        super().__init__()
        self.inp = self.add_module("inp", nn.Linear(features, hidden, seed=seed))
        self.mid = self.add_module("mid", nn.Linear(hidden, hidden, seed=seed + 1))
        self.out = self.add_module("out", nn.Linear(hidden, classes, seed=seed + 2))

    def forward(self, x):
        h = nn.relu(self.inp(x))
        h = h + nn.relu(self.mid(h))
        return self.out(h)


def main():
    features, classes = 32, 10
    data = tessera.make_synthetic_classification(12000, features, classes, seed=7, spread=1.4)
    x, y = data.x, data.y  # numpy views
    train = tessera.Dataset(x[:10000], y[:10000], classes)
    test = tessera.Dataset(x[10000:], y[10000:], classes)

    net = Net(features, classes)
    with nn.Trace("bf16") as t:  # what the Trainer will run, for a look
        net(t.input("x", [64, features]))
    print(t.graph())

    trainer = tessera.Trainer(net, [features], classes, precision="bf16", epochs=4, batch_size=64,
                              optimizer="adamw", lr=2e-3, momentum=0.0, warmup_steps=50)
    reports = trainer.fit(train, test)
    print(f"final test accuracy {reports[-1]['test_accuracy']:.2%} after {trainer.global_step} steps")
    print(trainer.stats_table())

    with tempfile.TemporaryDirectory() as ck:
        trainer.save_checkpoint(ck)
        fresh = tessera.Trainer(Net(features, classes, seed=99), [features], classes, precision="bf16",
                                optimizer="adamw", progress=False)
        fresh.load_checkpoint(ck)
    same = all(np.array_equal(a, b) for a, b in zip(trainer.named_parameters().values(),
                                                    fresh.named_parameters().values()))
    print(f"checkpoint restored: parameters equal {same}, accuracy {fresh.evaluate(test):.2%}")


if __name__ == "__main__":
    main()

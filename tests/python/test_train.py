"""tessera.Trainer and tessera.Dataset from Python: convergence, built-in models, checkpoints,
exact resume, errors, and Python modules traced while the Trainer runs without the GIL."""
import gc
import json
import os

import numpy as np
import pytest

import tessera
from tessera import nn


class Mlp(nn.Module):
    def __init__(self, seed=1, features=16, hidden=32, classes=4):
        super().__init__()
        self.fc1 = self.add_module("fc1", nn.Linear(features, hidden, seed=seed))
        self.fc2 = self.add_module("fc2", nn.Linear(hidden, classes, seed=seed + 1))

    def forward(self, x):
        return self.fc2(nn.relu(self.fc1(x)))


def split(n_train, n_test, features=16, classes=4, seed=3, spread=0.7):
    """Held-out data from one distribution (equal seeds would give equal examples)."""
    d = tessera.make_synthetic_classification(n_train + n_test, features, classes, seed=seed, spread=spread)
    x, y = d.x, d.y
    return tessera.Dataset(x[:n_train], y[:n_train], classes), tessera.Dataset(x[n_train:], y[n_train:], classes)


def quiet(**kw):
    return dict(dict(batch_size=32, lr=0.05, momentum=0.9, progress=False), **kw)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_python_mlp_trains_to_high_accuracy(precision, capsys):
    train, test = split(2048, 512, features=32, classes=8)
    trainer = tessera.Trainer(Mlp(features=32, hidden=64, classes=8), [32], 8, **quiet(precision=precision, epochs=4))
    assert trainer.evaluate(test) < 0.5
    reports = trainer.fit(train, test)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert set(reports[0]) == {"epoch", "train_loss", "test_accuracy", "seconds", "images_per_s"}
    assert reports[-1]["test_accuracy"] > 0.95, reports
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    assert trainer.evaluate(test) == reports[-1]["test_accuracy"]
    assert trainer.global_step == 4 * (2048 // 32) and trainer.skipped_steps == 0
    assert "epoch 4: train loss" in capsys.readouterr().out
    table = trainer.stats_table()
    assert "matmul" in table and "calls" in table
    assert "softmax_xent_grad" in str(trainer.train_graph())


def test_builtin_cnn_takes_steps_on_small_images():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    cnn = tessera.models.make_model("cnn", seed=1)
    trainer = tessera.Trainer(cnn, [28, 28, 1], 10, **quiet(batch_size=8, precision="bf16"))
    assert trainer.options["name"] == "cnn"
    before = cnn.named_parameters()
    losses = [trainer.step(x[i % 2 * 8:][:8], y[i % 2 * 8:][:8]) for i in range(5)]
    assert all(np.isfinite(losses)) and trainer.global_step == 5
    after = cnn.named_parameters()
    assert not np.array_equal(before["conv1.weight"], after["conv1.weight"])
    for name, value in trainer.named_parameters().items():  # the Trainer trains the model's own parameters
        assert np.array_equal(value, after[name])
    acc = trainer.evaluate(tessera.Dataset(x, y, 10))
    assert 0.0 <= acc <= 1.0


def test_transformer_on_token_sequences():
    train = tessera.make_synthetic_sequences(64, 32, 64, seed=1)
    assert train.x.dtype == np.int32 and train.x.shape == (64, 32) and train.num_classes == 64
    lm = tessera.models.make_model("transformer", seed=1)
    trainer = tessera.Trainer(lm, [32], 64, **quiet(batch_size=16, optimizer="adamw", lr=3e-3, input_dtype="i32",
                                                    label_shape=[32], max_steps=3))
    trainer.fit(train, train, log=False)
    assert trainer.global_step == 3


def steps(trainer, data, first, count):
    for i in range(first, first + count):
        lo = (i * 32) % len(data)
        trainer.step(data.x[lo:lo + 32], data.y[lo:lo + 32])


@pytest.mark.parametrize("precision,optimizer", [("fp32", "sgd"), ("bf16", "adamw"), ("cfp8", "sgd")])
def test_checkpoint_round_trip_and_exact_resume(precision, optimizer, tmp_path):
    train, _ = split(256, 0)
    opts = quiet(precision=precision, optimizer=optimizer, cfp8_rounding="stochastic")
    if optimizer == "adamw":
        opts.update(lr=0.01, momentum=0.0, weight_decay=0.01)
    straight = tessera.Trainer(Mlp(seed=1), [16], 4, **opts)
    steps(straight, train, 0, 5)
    straight.save_checkpoint(str(tmp_path))
    saved = straight.named_parameters()

    resumed_model = Mlp(seed=99)  # different init: everything must come from the checkpoint
    resumed = tessera.Trainer(resumed_model, [16], 4, **opts)
    resumed.load_checkpoint(str(tmp_path))
    assert resumed.global_step == 5 and resumed.loss_scale == straight.loss_scale
    for name, value in resumed_model.named_parameters().items():
        assert np.array_equal(value, saved[name]), name

    steps(straight, train, 5, 6)
    steps(resumed, train, 5, 6)
    a, b = straight.named_parameters(), resumed.named_parameters()
    assert list(a) == list(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{name} diverged after resume"

    other = tessera.Trainer(Mlp(seed=1), [16], 4, **dict(opts, precision="bf16" if precision != "bf16" else "fp32"))
    with pytest.raises(ValueError, match="checkpoint is for model 'Mlp'"):
        other.load_checkpoint(str(tmp_path))
    with pytest.raises(OSError, match="no checkpoint"):
        resumed.load_checkpoint(str(tmp_path / "missing"))


def test_fit_resumes_from_checkpoint_dir(tmp_path):
    train, test = split(192, 64)
    opts = quiet(epochs=3, checkpoint_dir=str(tmp_path / "ck"), metrics_path=str(tmp_path / "m.jsonl"))
    straight = tessera.Trainer(Mlp(), [16], 4, **dict(opts, checkpoint_dir=""))
    straight.fit(train, test, log=False)
    first = tessera.Trainer(Mlp(), [16], 4, **dict(opts, epochs=1))
    first.fit(train, test, log=False)
    rest = tessera.Trainer(Mlp(seed=5), [16], 4, **dict(opts, resume=True))
    reports = rest.fit(train, test, log=False)
    assert [r["epoch"] for r in reports] == [2, 3]
    assert rest.global_step == straight.global_step
    a, b = straight.named_parameters(), rest.named_parameters()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    lines = [json.loads(l) for l in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if "test_accuracy" in l] == [1, 2, 3]


def test_python_forward_traced_lazily_without_the_gil():
    """evaluate() traces an eval program per batch size; the Python forward must run then, even
    with no Python reference to the model left and the GIL released by the binding."""
    calls = []

    class Counting(Mlp):
        def forward(self, x):
            calls.append(x.shape)
            if x.shape[0] == 7:
                raise KeyError("batch of seven")
            return super().forward(x)

    train, test = split(64, 96)
    trainer = tessera.Trainer(Counting(), [16], 4, **quiet(eval_batch=50))
    gc.collect()
    assert calls == [(32, 16)]
    trainer.evaluate(test)  # batches of 50 and 46
    assert calls[1:] == [(50, 16), (46, 16)]
    with pytest.raises(KeyError, match="batch of seven"):
        trainer.evaluate(tessera.Dataset(test.x[:7], test.y[:7], 4))
    assert 0 <= trainer.evaluate(test) <= 1  # still usable after the error


def test_emulated_data_parallel_nodes_average_their_gradients():
    train, _ = split(256, 0)
    one = tessera.Trainer(Mlp(), [16], 4, **quiet())
    two = tessera.Trainer(Mlp(), [16], 4, **quiet(batch_size=16, world_nodes=2))
    assert two.options["world_nodes"] == 2
    steps(one, train, 0, 4)
    steps(two, train, 0, 4)  # the same 32 rows per step, split over two nodes
    a, b = one.named_parameters(), two.named_parameters()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="world_nodes 0"):
        tessera.Trainer(Mlp(), [16], 4, world_nodes=0)


def test_model_errors_surface_at_construction():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = self.add_module("fc1", nn.Linear(16, 128, seed=1))
            self.fc2 = self.add_module("fc2", nn.Linear(64, 4, seed=2))

        def forward(self, x):
            return self.fc2(nn.relu(self.fc1(x)))

    with pytest.raises(ValueError, match=r"Linear layer 'fc2' expects input \[batch, 64\], got \[32, 128\]"):
        tessera.Trainer(Broken(), [16], 4, **quiet())
    with pytest.raises(ValueError, match=r"model output \[32, 4\] is not .*\[32, 5\]"):
        tessera.Trainer(Mlp(), [16], 5, **quiet())


def test_bad_options_and_inputs():
    with pytest.raises(TypeError, match="unknown option 'learning_rate'.*lr"):
        tessera.Trainer(Mlp(), [16], 4, learning_rate=0.1)
    with pytest.raises(TypeError, match=r"option 'epochs' expects int, got '3' \(str\)"):
        tessera.Trainer(Mlp(), [16], 4, epochs="3")
    with pytest.raises(ValueError, match="'fp16'"):
        tessera.Trainer(Mlp(), [16], 4, precision="fp16")
    with pytest.raises(ValueError, match="batch size 0"):
        tessera.Trainer(Mlp(), [16], 4, batch_size=0)
    with pytest.raises(TypeError, match="expected a tessera.nn.Module"):
        tessera.Trainer("mlp", [16], 4)
    trainer = tessera.Trainer(Mlp(), [16], 4, **quiet())
    assert trainer.options["lr"] == 0.05 and trainer.options["precision"] == "fp32"
    x = np.zeros((32, 16), np.float32)
    with pytest.raises(ValueError, match="31"):
        trainer.step(x[:31], np.zeros(31, np.int32))
    with pytest.raises(ValueError, match="label 9"):
        trainer.step(x, np.full(32, 9))
    with pytest.raises(TypeError, match="labels y must be an integer array, got numpy dtype 'float32'"):
        trainer.step(x, np.zeros(32, np.float32))


def test_dataset_from_numpy():
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    d = tessera.Dataset(x, np.array([0, 1, 2, 0, 1, 2]))
    assert len(d) == 6 and d.num_classes == 3
    assert d.x.dtype == np.float32 and np.array_equal(d.x, x) and d.y.dtype == np.int32
    with pytest.raises(ValueError):
        d.x[0, 0] = 5  # read-only view of the tensor tessera trains on
    assert "Dataset(x [6, 2] f32" in repr(d)
    ids = tessera.Dataset(np.zeros((4, 3), np.int64), np.zeros((4, 3), np.int64), 10)
    assert ids.x.dtype == np.int32 and ids.num_classes == 10
    with pytest.raises(TypeError, match="integer array"):
        tessera.Dataset(x, np.zeros(6))
    with pytest.raises(ValueError, match="same first"):
        tessera.Dataset(x, np.zeros(5, np.int32))
    with pytest.raises(ValueError, match=">= 0"):
        tessera.Dataset(x, -np.ones(6, np.int32))
    with pytest.raises(ValueError, match="out of range for 2 classes"):
        tessera.Dataset(x, np.full(6, 2), 2)
    with pytest.raises(ValueError, match="'valid'"):
        tessera.load_fashion_mnist(split="valid")
    with pytest.raises(OSError):
        tessera.load_fashion_mnist("/nonexistent", "test")


@pytest.mark.skipif(not os.path.isdir(tessera.FASHION_MNIST_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_test_split():
    d = tessera.load_fashion_mnist(split="test")
    assert d.x.shape == (10000, 28, 28, 1) and d.y.shape == (10000,) and d.num_classes == 10
    assert abs(float(d.x.mean())) < 0.05


def test_fit_releases_the_gil():
    """While fit() runs in a thread, the main thread keeps running Python: the longest pause it
    sees is far shorter than the fit (holding the GIL would stall it for the whole fit)."""
    import threading
    import time

    train, test = split(8192, 256, features=64, classes=8)
    trainer = tessera.Trainer(Mlp(features=64, hidden=256, classes=8), [64], 8, **quiet(epochs=6))
    span = {}

    def run():
        span["start"] = time.perf_counter()
        trainer.fit(train, test, log=False)
        span["end"] = time.perf_counter()

    worker = threading.Thread(target=run)
    worker.start()
    stamps = []
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    during = [t for t in stamps if span["start"] <= t <= span["end"]]
    fit_seconds = span["end"] - span["start"]
    assert trainer.global_step == 6 * (8192 // 32)
    assert len(during) > 2, (fit_seconds, len(stamps))
    gaps = np.diff([span["start"]] + during + [span["end"]])
    assert gaps.max() < fit_seconds / 3, (gaps.max(), fit_seconds)

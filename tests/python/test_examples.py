"""The Python examples run and do what they print."""
import os
import runpy

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python")


def test_train_mlp_example(capsys):
    runpy.run_path(os.path.join(EXAMPLES, "train_mlp.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "epoch 4: train loss" in out
    assert "checkpoint restored: parameters equal True" in out
    accuracy = float(out.split("final test accuracy ")[1].split("%")[0])
    assert accuracy > 90

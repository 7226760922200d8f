"""How ``tests/data/hparams-tutorial/`` was made: TensorBoard's HParams tutorial, tiny.

Runs written by TensorFlow's Keras and TensorBoard's own hparams API, as the
tutorial "Hyperparameter Tuning with the HParams Dashboard" writes them:

- ``logs/hparam_tuning/`` holds the experiment ``hp.hparams_config`` writes
  (declaring a metric ``accuracy``, which Keras never writes);
- each ``run-N/`` holds the session info of ``hp.KerasCallback`` (start and
  end, with status) in an event file of its own, and Keras' ``train/`` and
  ``validation/`` event directories (``epoch_accuracy``, ``epoch_loss``);
- ``run-3`` follows the tutorial's first version: ``hp.hparams`` in a
  ``tf.summary`` writer of the run, then ``tf.summary.scalar("accuracy")``
  beside Keras' directories; it has no session end info.

The model is tiny so the event files stay small.  Not imported by the test
suite (TensorFlow is far too heavy for it); run once, by hand, in a scratch
environment::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tensorboard
    /tmp/tfvenv/bin/python tests/data/make_hparams_tutorial.py tests/data/hparams-tutorial
"""

from __future__ import annotations

import os
import sys


def main(out: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(64, 4)).astype("float32")
    y_train = (x_train.sum(axis=1) > 0).astype("int64")
    x_test = rng.normal(size=(32, 4)).astype("float32")
    y_test = (x_test.sum(axis=1) > 0).astype("int64")

    hp_num_units = hp.HParam("num_units", hp.Discrete([4, 8]))
    hp_dropout = hp.HParam("dropout", hp.RealInterval(0.1, 0.2))
    hp_optimizer = hp.HParam("optimizer", hp.Discrete(["adam", "sgd"]))
    metric_accuracy = "accuracy"
    root = os.path.join(out, "logs", "hparam_tuning")

    with tf.summary.create_file_writer(root).as_default():
        hp.hparams_config(
            hparams=[hp_num_units, hp_dropout, hp_optimizer],
            metrics=[hp.Metric(metric_accuracy, display_name="Accuracy")],
        )

    def model_for(hparams):
        model = tf.keras.models.Sequential(
            [
                tf.keras.Input(shape=(4,)),
                tf.keras.layers.Dense(hparams[hp_num_units], activation="relu"),
                tf.keras.layers.Dropout(hparams[hp_dropout]),
                tf.keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile(
            optimizer=hparams[hp_optimizer],
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(model, run_dir, callbacks=()):
        board = tf.keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0)
        model.fit(
            x_train,
            y_train,
            epochs=3,
            batch_size=16,
            validation_data=(x_test, y_test),
            callbacks=[board, *callbacks],
            verbose=0,
        )

    grid = [
        {hp_num_units: 4, hp_dropout: 0.1, hp_optimizer: "adam"},
        {hp_num_units: 8, hp_dropout: 0.1, hp_optimizer: "sgd"},
        {hp_num_units: 8, hp_dropout: 0.2, hp_optimizer: "adam"},
    ]
    for n, hparams in enumerate(grid):
        run_dir = os.path.join(root, f"run-{n}")
        fit(model_for(hparams), run_dir, [hp.KerasCallback(run_dir, hparams)])

    # The tutorial's first version: hp.hparams, then the declared metric.
    hparams = {hp_num_units: 4, hp_dropout: 0.2, hp_optimizer: "sgd"}
    run_dir = os.path.join(root, f"run-{len(grid)}")
    with tf.summary.create_file_writer(run_dir).as_default():
        hp.hparams(hparams)
        model = model_for(hparams)
        fit(model, run_dir)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        tf.summary.scalar(metric_accuracy, accuracy, step=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "hparams-tutorial")

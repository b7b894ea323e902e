"""TensorFlow stepper for the shared training loop (:mod:`stereodeploy.train.loop`).

Update rule, the same as :mod:`stereodeploy.train.torch_trainer` (see docs/training.md): PyTorch's SGD with momentum,
written out explicitly because Keras' SGD differs (it keeps ``v <- momentum * v - lr * g``, so a learning-rate drop
only reaches the velocity gradually)::

    v <- momentum * v + g
    w <- w - lr * v

The learning rate lives in a ``tf.Variable`` assigned before each step, so a drop at an epoch boundary takes effect
at once and never retraces the compiled step.

Several workers (``TF_CONFIG`` naming more than one task): a ``tf.distribute.MultiWorkerMirroredStrategy`` runs the
step on every worker, each on its slice of the global batch of ``B`` examples. Each worker's gradient is that of its
slice's hinge sum divided by ``B``; the replica context sums them across workers (a collective all-reduce), which
gives every worker the gradient of the global batch mean, and every worker applies the same update.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from stereodeploy.config import NetworkConfig, TrainConfig
from stereodeploy.data.patches import Batch
from stereodeploy.errors import UserError
from stereodeploy.frameworks import FRAMEWORKS
from stereodeploy.nets import tf_net
from stereodeploy.nets.weights import Weights, keras_to_torch, torch_to_keras
from stereodeploy.train.distributed import tf_process


def hinge_loss(s_pos: tf.Tensor, s_neg: tf.Tensor, margin: float) -> tf.Tensor:
    """Mean of ``max(0, margin + s_neg - s_pos)`` (as torch's clamp, the gradient passes at exactly 0)."""
    return tf.reduce_mean(tf.maximum(margin + s_neg - s_pos, 0.0))


class TFStepper:
    """One compiled forward/backward/update step of MC-CNN fast in TensorFlow (see the module docstring)."""

    framework = "tf"

    def __init__(self, network: NetworkConfig, cfg: TrainConfig, weights: Weights):
        proc = tf_process()
        self.rank, self.world = proc.rank, proc.world
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy() if self.world > 1 else None
        self.framework_version = tf.__version__
        self.tf_device, self.device = FRAMEWORKS["tf"].resolve_device(cfg.device, index=proc.local_rank)
        if self.world > 1:
            self.device = f"{self.device} x {self.world} workers"
        self.network = network
        p = network.patch_size
        with tf.device(self.tf_device):
            self.net = tf_net.build(network, weights)
            self.params = [v.value for v in self.net.variables_in_order]  # tf.Variables: k0, b0, k1, b1, ...
            self.velocity = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.params]
            self.lr = tf.Variable(cfg.lr, dtype=tf.float32, trainable=False)
            self.raw = tf_net.RawImageFeatures(self.net)
        margin = float(cfg.margin)
        momentum = float(cfg.momentum)
        params, velocity, lr, net = self.params, self.velocity, self.lr, self.net

        global_batch = float(cfg.examples_per_batch)
        strategy = self.strategy

        def forward_backward(x: tf.Tensor, scale: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
            """Gradients of ``scale`` x the slice's hinge sum; the slice's (hinge sum, correct count)."""
            with tf.GradientTape() as tape:
                f = tf.reshape(net(x), (tf.shape(x)[0], -1))  # (3B, C)
                fl, fp, fn = tf.split(f, 3)
                s_pos = tf.reduce_sum(fl * fp, axis=1)
                s_neg = tf.reduce_sum(fl * fn, axis=1)
                hinge = tf.reduce_sum(tf.maximum(margin + s_neg - s_pos, 0.0))
                loss = hinge * scale
            grads = tape.gradient(loss, params)
            return grads, hinge, tf.reduce_sum(tf.cast(s_pos > s_neg, tf.float32))

        def update(grads: list[tf.Tensor]) -> None:
            for w, v, g in zip(params, velocity, grads):
                v.assign(momentum * v + g)
                w.assign_sub(lr * v)

        @tf.function(input_signature=[tf.TensorSpec((None, p, p, 1), tf.float32)])
        def train_step(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if strategy is None:
                with tf.GradientTape() as tape:
                    f = tf.reshape(net(x), (tf.shape(x)[0], -1))  # (3B, C)
                    fl, fp, fn = tf.split(f, 3)
                    s_pos = tf.reduce_sum(fl * fp, axis=1)
                    s_neg = tf.reduce_sum(fl * fn, axis=1)
                    loss = hinge_loss(s_pos, s_neg, margin)
                grads = tape.gradient(loss, params)
                update(grads)
                acc = tf.reduce_mean(tf.cast(s_pos > s_neg, tf.float32))
                return loss, acc

            def replica(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                grads, hinge, correct = forward_backward(x, tf.constant(1.0 / global_batch))
                ctx = tf.distribute.get_replica_context()
                grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                hinge, correct = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [hinge, correct])
                update(grads)
                return hinge / global_batch, correct / global_batch

            loss, acc = strategy.run(replica, args=(x,))
            return strategy.experimental_local_results(loss)[0], strategy.experimental_local_results(acc)[0]

        @tf.function(input_signature=[tf.TensorSpec((1,), tf.float32)])
        def any_worker(flag: tf.Tensor) -> tf.Tensor:
            def replica(f: tf.Tensor) -> tf.Tensor:  # the sum is > 0 if any worker flags
                return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, [f + 0.0 * lr])[0]

            return strategy.experimental_local_results(strategy.run(replica, args=(flag,)))[0]

        self._any_worker = any_worker if strategy is not None else None

        @tf.function(input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])
        def features_nhwc(image: tf.Tensor) -> tf.Tensor:
            return self.raw(image)

        self._train_step = train_step
        self._features = features_nhwc

    def step(self, batch: Batch, lr: float) -> tuple[float, float]:
        self.lr.assign(lr)
        x = np.concatenate([batch.left, batch.pos, batch.neg])  # (3B, 1, P, P)
        try:
            with tf.device(self.tf_device):
                loss, acc = self._train_step(x.reshape(x.shape[0], x.shape[2], x.shape[3], 1))  # (3B, P, P, 1)
            return float(loss.numpy()), float(acc.numpy())  # .numpy() waits for the device
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as exc:
            raise _worker_lost(exc, self.world) from None

    def any_rank(self, flag: bool) -> bool:
        try:
            return bool(self._any_worker(np.array([1.0 if flag else 0.0], np.float32)).numpy()[0] > 0)
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as exc:
            raise _worker_lost(exc, self.world) from None

    def get_weights(self) -> Weights:
        return tf_net.get_weights(self.net)

    def set_weights(self, weights: Weights) -> None:
        tf_net.set_weights(self.net, weights)

    def get_momentum(self) -> Weights:
        """The velocity buffers in the neutral layout (as torch's ``momentum_buffer``; zeros before the first step)."""
        v = [np.array(t.numpy()) for t in self.velocity]
        return keras_to_torch(list(zip(v[0::2], v[1::2])))

    def set_momentum(self, momentum: Weights) -> None:
        if len(momentum) != len(self.velocity) // 2:
            raise ValueError(f"expected {len(self.velocity) // 2} layers of momentum, got {len(momentum)}")
        for i, (k, b) in enumerate(torch_to_keras(momentum)):
            self.velocity[2 * i].assign(k)
            self.velocity[2 * i + 1].assign(b)

    def features(self, gray: np.ndarray) -> np.ndarray:
        """(H, W) grayscale 0..255 -> (C, H, W) L2-normalised features."""
        x = np.ascontiguousarray(gray, dtype=np.float32)[None, :, :, None]
        with tf.device(self.tf_device):
            out = self._features(x)  # (1, H, W, C)
        return np.transpose(out.numpy()[0], (2, 0, 1))


def _worker_lost(exc: Exception, world: int) -> Exception:
    """A collective failed because another worker is gone: one line, not TensorFlow's graph traceback."""
    if world == 1:
        return exc
    message = getattr(exc, "message", str(exc))
    lines = [line.strip() for line in message.splitlines() if "unhealthy" in line or "crashed" in line]
    why = lines[0][:160] if lines else type(exc).__name__
    return UserError(f"another worker of the job stopped ({why}); its own error is printed above")

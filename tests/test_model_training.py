"""The model, its train_step and the training loop (issue: core)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config, write_dataset
from wtal_tf.modeling import checkpoints as checkpointing
from wtal_tf import config as C
from wtal_tf.data import datasets as data
from wtal_tf.evaluation import metrics
from wtal_tf.inference.predictor import Predictor
from wtal_tf.training import input_pipeline
from wtal_tf.training.event_log import EventLog
from wtal_tf.training import trainer as training
from wtal_tf.modeling.model import StreamBranch, WTALModel


def branch_weights(model_dir):
  model, _ = checkpointing.restore(str(model_dir))
  return {s: [w.numpy() for w in b.weights] for s, b in model.branches.items()}


def test_branch_pools_as_eq1_eq4_and_has_no_classifier_bias():
  branch = StreamBranch(num_classes=3, attention_units=5, seed=1)
  x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
  out = branch(x)
  assert [w.shape for w in branch.classifier.weights] == [(4, 4)]
  assert [w.shape for w in branch.cluster.weights] == [(4, 2)]
  lam = out["attention"].numpy()
  assert lam.shape == (7,) and np.all((lam >= 0) & (lam <= 1))
  w = branch.classifier.kernel.numpy()
  u = branch.cluster.kernel.numpy()
  x_fg = (lam[:, None] * x).sum(0) / 7  # divide by T, not by Σλ
  x_bg = ((1 - lam)[:, None] * x).sum(0) / 7
  np.testing.assert_allclose(out["fg_logits"], x_fg @ w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["bg_logits"], x_bg @ w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["cluster_fg"], x_fg @ u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["cluster_bg"], x_bg @ u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["frame_logits"], x @ w, rtol=1e-5, atol=1e-6)
  hidden = np.maximum(x @ branch.attention_hidden.kernel.numpy()
                      + branch.attention_hidden.bias.numpy(), 0)
  expected = 1 / (1 + np.exp(-(hidden @ branch.attention_out.kernel.numpy()
                               + branch.attention_out.bias.numpy())))
  np.testing.assert_allclose(lam, expected[:, 0], rtol=1e-5)


def test_get_config_round_trips():
  model = WTALModel(5, ("rgb",), 16, C.LossConfig(losses=("fg", "sparse")).to_dict(), seed=3)
  clone = WTALModel.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  assert clone.loss_config == model.loss_config
  branch = StreamBranch(4, 8, 2)
  assert StreamBranch.from_config(branch.get_config()).get_config() == branch.get_config()
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
  assert isinstance(restored, WTALModel) and restored.streams == ("rgb",)


def test_train_step_traced_once_over_200_lengths(tmp_path):
  train = {f"t{k:03d}": (["A"] if k % 2 else ["B"], k + 1) for k in range(200)}
  data_dir = write_dataset(tmp_path / "data", train, {"e0": (["A"], 5)}, classes=("A", "B"))
  cfg = tiny_config(data_dir, tmp_path / "model", train={"train_steps": 200,
                                                         "checkpoint_every": 200})
  result = training.train(cfg)
  assert result.steps == 200
  assert result.traces <= 2, result.traces


@pytest.fixture
def three_videos(tmp_path):
  return write_dataset(tmp_path / "data", {"a": (["A"], 9), "b": (["B", "C"], 3), "c": (["C"], 1)},
                       {"x": (["A"], 4)})


def test_two_streams_equal_each_stream_alone(three_videos, tmp_path):
  both = tiny_config(three_videos, tmp_path / "both")
  training.train(both)
  weights = branch_weights(tmp_path / "both")
  for s in ("rgb", "flow"):
    alone = tiny_config(three_videos, tmp_path / s, data={"data_dir": str(three_videos),
                                                          "streams": (s,)})
    training.train(alone)
    for a, b in zip(weights[s], branch_weights(tmp_path / s)[s]):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_training_never_sees_temporal_segments(three_videos, tmp_path):
  training.train(tiny_config(three_videos, tmp_path / "orig"))
  gt_path = three_videos / "gt.json"
  gt = json.loads(gt_path.read_text())
  for name in ("a", "b", "c"):
    for k, ann in enumerate(gt["database"][name]["annotations"]):
      ann["segment"] = [100.0 + k, 250.5 + 3 * k]  # move every training instance
  gt_path.write_text(json.dumps(gt))
  training.train(tiny_config(three_videos, tmp_path / "moved"))
  for s, ws in branch_weights(tmp_path / "orig").items():
    for a, b in zip(ws, branch_weights(tmp_path / "moved")[s]):
      np.testing.assert_array_equal(a, b)


def test_resume_continues_to_the_same_weights(three_videos, tmp_path):
  training.train(tiny_config(three_videos, tmp_path / "once"))
  half = tiny_config(three_videos, tmp_path / "twice", train={
      "model_dir": str(tmp_path / "twice"), "train_steps": 10, "checkpoint_every": 10,
      "log_every": 5, "eval_every": 0, "num_vis_videos": 0})
  assert training.train(half).steps == 10
  resumed = training.train(tiny_config(three_videos, tmp_path / "twice"))
  assert resumed.steps == 20
  for s, ws in branch_weights(tmp_path / "once").items():
    for a, b in zip(ws, branch_weights(tmp_path / "twice")[s]):
      np.testing.assert_array_equal(a, b)


def test_tensorboard_logs_every_term(three_videos, tmp_path):
  cfg = tiny_config(three_videos, tmp_path / "m", loss={"losses": ("fg", "bg", "guide",
                                                                   "cluster", "sparse")})
  cfg = cfg.replace(train={"num_vis_videos": 1})
  result = training.train(cfg)
  expected = {f"{s}/{k}" for s in ("rgb", "flow")
              for k in ("fg", "bg", "guide", "cluster", "sparse", "total")} | {"total"}
  assert set(result.losses) == expected
  tags = set()
  for path in (tmp_path / "m" / "train").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags |= {v.tag for v in event.summary.value}
  assert {f"loss/{k}" for k in expected} | {"learning_rate", "steps_per_second"} <= tags
  eval_values = {}
  for path in (tmp_path / "m" / "eval").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      eval_values.update({(event.step, v.tag): tf.make_ndarray(v.tensor)
                          for v in event.summary.value if v.tag.startswith("mAP")})
  assert {"mAP@0.5", "mAP avg 0.1:0.7"} <= {tag for _, tag in eval_values}
  # A finished model's rerun evaluates it again, but logs no second point at its step
  # (found by a researcher rerunning an ablation: mAP at steps 500, ..., 2000, 2000).
  assert training.train(cfg).steps == cfg.train.train_steps
  logged = [(event.step, v.tag) for path in (tmp_path / "m" / "eval").iterdir()
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for v in event.summary.value]
  assert [s for s, tag in logged if tag == "mAP@0.5"] == [cfg.train.train_steps]
  timelines = [tag for s, tag in logged if "mAP" not in tag]  # (nor its timeline: review)
  assert len(timelines) == 1, logged
  # in percent, as the tables print it (it was a fraction)
  scores = metrics.EvalResult(tious=(0.3, 0.5), classes=("A", "B"),
                              ap=np.array([[0.5, 0.25], [0.25, 0.0]]), num_predictions=3)
  events = EventLog(str(tmp_path / "pct"))
  log_eval = training._log_eval  # pylint: disable=protected-access
  log_eval(events, scores, cfg.replace(eval={"tiou": "0.3,0.5"}), 7)
  events.flush()
  [path] = (tmp_path / "pct").iterdir()
  logged = {v.tag: float(tf.make_ndarray(v.tensor))
            for e in tf.compat.v1.train.summary_iterator(str(path)) for v in e.summary.value}
  assert logged == {"mAP@0.3": 37.5, "mAP@0.5": 12.5}


def test_fit_runs_the_same_train_step(three_videos, tmp_path):
  """model.fit works too (one trace for all lengths) and takes the very steps of the
  CLI's own loop: the same videos in the same order give the same weights and losses."""
  ds = data.load_dataset(C.DataConfig(data_dir=str(three_videos)))
  order = input_pipeline.training_order(3, 0, 1.0, 0, 0, 6)

  def stream():
    return input_pipeline.training_dataset(ds.train, order, ds.num_classes, ds.streams,
                                           ds.feature_dims,
                                           input_pipeline.FeatureCache(ds.streams, False))

  fitted = training.build_model(tiny_config(three_videos, tmp_path), ds)
  history = fitted.fit(stream(), epochs=1, verbose=0, shuffle=False)
  looped = training.build_model(tiny_config(three_videos, tmp_path), ds)
  step, _ = training.compiled_train_step(looped, ds)
  totals = [float(step(features, labels)["total"]) for features, labels in stream()]
  assert len(totals) == 6 and int(fitted.optimizer.iterations) == 6
  for a, b in zip(fitted.weights, looped.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
  # fit logs each loss's mean over the epoch ("loss": the total), as Keras does
  assert history.history["loss"] == [pytest.approx(np.mean(totals), rel=1e-5)]
  assert history.history["finite"] == [1.0]
  assert totals[0] != totals[-1]  # the weights moved between steps


def test_trains_under_a_distribution_strategy(three_videos, tmp_path):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    result = training.train(tiny_config(three_videos, tmp_path / "m"))
  assert result.steps == 20 and np.isfinite(result.losses["total"])


def test_stpn_first_logged_loss_is_the_class_averaged_cross_entropy(three_videos, tmp_path):
  """At initialisation every logit is ~0: σ-CE ≈ log 2 per class, so the class
  average is log 2 per stream (2 log 2 for two streams, not 2·C·log 2), plus
  1e-4 × Σ_t λ_t with λ ≈ 0.5 (the first video drawn has T ≤ 9 segments)."""
  cfg = tiny_config(three_videos, tmp_path / "m",
                    loss={"losses": ("fg", "sparse"), "cls_loss": "sigmoid"},
                    train={"model_dir": str(tmp_path / "m"), "train_steps": 1, "log_every": 1})
  result = training.train(cfg)
  first = result.loss_history[0][1]
  assert first == pytest.approx(2 * np.log(2), abs=2e-3)
  for s in ("rgb", "flow"):
    assert result.losses[f"{s}/fg"] == pytest.approx(np.log(2), abs=1e-3)
    assert 0 < result.losses[f"{s}/sparse"] <= 9 * 0.5 + 1e-3


# ---------------------------------------------------------------- the model as a Keras model

STREAM_DIMS = {"rgb": 8, "flow": 6}


def videos(lengths=(3, 7, 11, 4), num_classes=5, seed=0):
  rng = np.random.default_rng(seed)
  return [({s: rng.normal(size=(t, d)).astype(np.float32) for s, d in STREAM_DIMS.items()},
           np.eye(num_classes, dtype=np.float32)[t % num_classes]) for t in lengths]


def generated(items, num_classes=5):
  """A dataset of unknown length (a generator), one video per element, as a user makes."""
  signature = ({s: tf.TensorSpec([None, d]) for s, d in STREAM_DIMS.items()},
               tf.TensorSpec([num_classes]))
  return tf.data.Dataset.from_generator(lambda: iter(items), output_signature=signature)


def trained_like(model, seed=1):
  """Weights far from the initial ones (as a trained model's), so a reload that kept the
  fresh initialisation instead shows."""
  rng = np.random.default_rng(seed)
  for v in model.weights:
    v.assign(rng.normal(size=v.shape).astype(np.float32) * 0.5)
  return model


def test_a_saved_keras_model_loads_with_its_weights_and_optimizer(tmp_path):
  """Built as the project builds a model it restores (build_for), saved the Keras ways:
  `.keras` and save_weights give back the same outputs (before: an unbuilt model, fresh
  weights, no error), and the optimizer's state survives with loss terms off."""
  x = videos()[0][0]
  model = WTALModel(5, STREAM_DIMS, 16, {"losses": ["fg", "bg"]})
  model.build_for(STREAM_DIMS)
  trained_like(model)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  model.fit(generated(videos()), verbose=0)
  want = model(x)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert len(loaded.weights) == len(model.weights)
  for s in STREAM_DIMS:
    for k in want[s]:
      np.testing.assert_array_equal(loaded(x)[s][k], want[s][k])
  assert int(loaded.optimizer.iterations) == 4  # (before: 22 saved variables, 26 built, 0)
  model.save_weights(tmp_path / "m.weights.h5")
  built = WTALModel(5, STREAM_DIMS, 16, {"losses": ["fg", "bg"]})
  built.build({s: (None, d) for s, d in STREAM_DIMS.items()})  # the Keras way
  built.load_weights(tmp_path / "m.weights.h5")
  np.testing.assert_array_equal(built(x)["flow"]["attention"], want["flow"]["attention"])


def test_fit_and_evaluate_log_the_epoch_mean_of_each_loss():
  items = videos()
  model = WTALModel(5, STREAM_DIMS, 16)
  model.build_for(STREAM_DIMS)
  trained_like(model)
  model.compile(optimizer=keras.optimizers.Adam(0.0))  # the weights stay: known losses
  per_video = [model.compute_losses(v) for v in items]
  history = model.fit(generated(items), epochs=2, verbose=0).history
  for name in ("rgb/fg", "flow/guide", "rgb/total"):
    assert history[name] == [pytest.approx(np.mean([float(p[name]) for p in per_video]),
                                           rel=1e-5)] * 2, name
  mean_total = np.mean([float(p["total"]) for p in per_video])
  assert history["loss"] == [pytest.approx(mean_total, rel=1e-5)] * 2  # (before: the last)
  assert history["finite"] == [1.0, 1.0]
  scores = model.evaluate(generated(items), return_dict=True, verbose=0)
  assert scores["loss"] == pytest.approx(mean_total, rel=1e-5) and "finite" not in scores
  # A step whose loss is not finite is skipped, and its epoch's logs say so.
  bad = [items[0], ({s: np.full_like(v, np.nan) for s, v in items[1][0].items()}, items[1][1])]
  history = model.fit(generated(bad), verbose=0).history
  assert history["finite"] == [0.5] and np.isnan(history["loss"][0])


def test_the_model_takes_one_video_per_call_and_says_so():
  model = WTALModel(5, STREAM_DIMS, 16)
  x = videos()[0][0]
  with pytest.raises(ValueError, match=r"rgb_branch: expected one video's features \[T, d\] "
                                       r"\(no batch axis\), got shape \(1, 3, 8\)"):
    model({**x, "rgb": x["rgb"][None]})  # (before: pooled over the batch axis, silently)
  with pytest.raises(ValueError, match=r"\['flow'\] missing"):
    model({"rgb": x["rgb"]})
  with pytest.raises(NotImplementedError, match="call the model on one video"):
    model.predict(x)  # (before: outputs of 32-segment pieces, concatenated)
  with pytest.raises(ValueError, match=r"compile\(loss, metrics=...\): WTALModel computes"):
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])


def test_model_arguments_as_a_python_user_gives_them():
  x, labels = videos()[0]
  model = WTALModel(5, STREAM_DIMS, 16, C.LossConfig(alpha=0.5))  # a LossConfig, or its dict
  assert model.loss_config == C.LossConfig(alpha=0.5)
  assert WTALModel.from_config(model.get_config()).loss_config == model.loss_config
  for wrong in ({"num_classes": 0}, {"loss_config": {"alpha": -1.0}}):  # (before: accepted)
    with pytest.raises(ValueError, match=r"^(num_classes=0: at least 1|--alpha=-1\.0: must be "
                                         r">= 0)$"):
      WTALModel(**{"num_classes": 5, "streams": STREAM_DIMS, **wrong})
  as_ints = model.compute_losses((x, labels.astype(np.int32)))  # (before: a TypeError)
  assert float(as_ints["total"]) == float(model.compute_losses((x, labels))["total"])
  policy = keras.mixed_precision.dtype_policy()
  try:
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    with pytest.raises(ValueError, match="mixed_float16: not supported"):
      WTALModel(5, STREAM_DIMS)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")  # losses in float32
    half = WTALModel(5, STREAM_DIMS, 16)
    half.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = half.fit(generated(videos()), epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["finite"] == [1.0, 1.0]
  finally:
    keras.mixed_precision.set_dtype_policy(policy)


def test_an_exported_model_serves_videos_of_any_length(tmp_path):
  """model.export: a SavedModel whose "serve" takes one video, any T (before: Keras'
  export failed on the nested outputs)."""
  model = WTALModel(5, STREAM_DIMS, 16)
  model.build_for(STREAM_DIMS)
  trained_like(model)
  model.export(tmp_path / "served", verbose=False)
  served = tf.saved_model.load(str(tmp_path / "served"))
  for x, _ in videos(lengths=(1, 13)):
    want = model(x)
    got = served.serve(x)
    assert set(got) == {f"{s}_{k}" for s in want for k in want[s]}
    for s in want:
      for k in want[s]:
        np.testing.assert_allclose(got[f"{s}_{k}"], want[s][k], rtol=1e-6, atol=1e-6)
    by_signature = served.signatures["serve"](**{s: tf.constant(v) for s, v in x.items()})
    np.testing.assert_allclose(by_signature["rgb_attention"], want["rgb"]["attention"],
                               rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="only 'tf_saved_model'"):
    model.export(tmp_path / "x.onnx", format="onnx")


def test_the_predictor_refuses_streams_of_other_lengths_and_empty_videos():
  model = WTALModel(5, STREAM_DIMS, 16)
  predictor = Predictor(model, STREAM_DIMS, C.LocalizeConfig())
  x = videos(lengths=(9,))[0][0]
  assert predictor(x)["rgb"].attention.shape == (9,)
  for rgb, flow in ((9, 7), (0, 0)):
    with pytest.raises(ValueError, match=rf"{{'rgb': {rgb}, 'flow': {flow}}} segments per "
                                         r"stream; the streams must have the same number"):
      predictor({"rgb": x["rgb"][:rgb], "flow": x["flow"][:flow]})  # (before: outputs)

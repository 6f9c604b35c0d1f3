"""The TRL callback, on real GRPO training of a tiny language model: /metrics equals what TRL logs."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from scrape import Scrape
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerState, TrainingArguments
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

import otel_rl
from otel_rl import testing
from otel_rl.integrations.trl import OtelRLCallback

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

_WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing may come from a model hub: the model and tokenizer are built here."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model(tmp_path) -> str:
    """A randomly initialised one-layer GPT-2 and a word-level tokenizer over 32 words, saved to a directory (GRPO
    loads its reference model from the policy's path)."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(_WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(_WORDS), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=1, eos_token_id=1, pad_token_id=0))
    path = tmp_path / "tiny-gpt2"
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


def short(completions, **kwargs):
    """Reward for brevity: minus the number of words."""
    return [-float(len(c.split())) for c in completions]


def says_w3(completions, **kwargs):
    """Reward for saying "w3"."""
    return [float("w3" in c.split()) for c in completions]


def _train(model: str, tmp_path, callback: OtelRLCallback, config_cls=GRPOConfig, trainer_cls=GRPOTrainer,
           **config):
    args = config_cls(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, report_to="none", use_cpu=True, save_strategy="no", beta=0.1,
                      learning_rate=1e-3, seed=0, **config)
    dataset = Dataset.from_dict({"prompt": [f"w{i} w{i + 1}" for i in range(16)]})
    trainer = trainer_cls(model=model, reward_funcs=[short, says_w3], args=args, train_dataset=dataset,
                          callbacks=[callback])
    trainer.train()
    return trainer


@pytest.mark.parametrize(("algorithm", "config_cls", "trainer_cls"),
                         [("GRPO", GRPOConfig, GRPOTrainer), ("RLOO", RLOOConfig, RLOOTrainer)])
def test_grpo_and_rloo_record_what_trl_logs(telemetry, tiny_model, tmp_path, algorithm, config_cls, trainer_cls):
    """GRPO and RLOO, 4 steps logged every 2: iterations, the loss and entropy (one observation per log), the reward
    and completion length means, each reward function's mean, learning rate, gradient norm, KL, clip ratio, tokens
    per second and the run on /metrics equal TRL's log_history."""
    trainer = _train(tiny_model, tmp_path, OtelRLCallback(), config_cls, trainer_cls, max_steps=4, logging_steps=2)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and [entry["step"] for entry in logs] == [2, 4]
    last = logs[-1]

    scrape = Scrape(telemetry.prometheus_port)
    run = {"algorithm": algorithm, "run_id": "default"}
    assert scrape.value("rl_training_iterations_total", algorithm=algorithm) == trainer.state.global_step == 4
    assert scrape.value("rl_training_current_iteration", **run) == 4
    for series, key in [("rl_training_policy_loss", "loss"), ("rl_training_entropy", "entropy")]:
        assert scrape.value(f"{series}_count", algorithm=algorithm) == len(logs), series
        assert scrape.value(f"{series}_sum", algorithm=algorithm) == sum(entry[key] for entry in logs), series
    for series, key in [("rl_training_episode_reward_mean", "reward"),
                        ("rl_training_episode_length_mean", "completions/mean_length"),
                        ("rl_training_learning_rate", "learning_rate"),
                        ("rl_training_grad_norm", "grad_norm"),
                        ("rl_training_kl_divergence", "kl"),
                        ("rl_training_clip_fraction", "clip_ratio/region_mean")]:
        assert scrape.value(series, **run) == last[key], series
    for function in ("short", "says_w3"):
        assert scrape.value("rl_training_reward_function_mean", reward_function=function, **run) == \
            last[f"rewards/{function}/mean"]
    tokens = (last["num_tokens"] - logs[0]["num_tokens"]) / (last["step_time"] * 2)
    assert tokens > 0
    assert scrape.value("rl_training_tokens_per_second", **run) == tokens
    assert scrape.value("rl_training_runs_total", algorithm=algorithm, status="started") == 1
    assert scrape.value("rl_training_runs_total", algorithm=algorithm, status="completed") == 1
    assert scrape.value("rl_training_active", algorithm=algorithm) == 0
    assert testing.dropped("rl_training_policy_loss", "nan") == 0


def test_with_input_token_counting_every_log_is_recorded(tiny_model, tmp_path):
    """With ``include_num_input_tokens_seen``, transformers adds ``train_runtime`` and ``train_tokens_per_second``
    to every training log: those logs are recorded (not taken for the end-of-training summary), and the tokens per
    second are transformers' figure of the last log."""
    trainer = _train(tiny_model, tmp_path, OtelRLCallback(run_id="t"), max_steps=2, logging_steps=1,
                     include_num_input_tokens_seen=True)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all("train_runtime" in entry for entry in logs)
    histogram = testing.histogram("rl_training_policy_loss", algorithm="GRPO")
    assert histogram is not None and (histogram.count, histogram.sum) == (2, sum(entry["loss"] for entry in logs))
    run = {"algorithm": "GRPO", "run_id": "t"}
    assert testing.value("rl_training_episode_reward_mean", **run) == logs[-1]["reward"]
    assert testing.value("rl_training_tokens_per_second", **run) == logs[-1]["train_tokens_per_second"]


def test_dpo_records_its_loss_entropy_and_signals(tiny_model, tmp_path):
    """DPO, 2 steps on a 4-pair preference set: its loss and entropy per log, learning rate and gradient norm
    equal TRL's log_history; DPO's implicit rewards are not taken for episode rewards."""
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=2, logging_steps=1,
                     report_to="none", use_cpu=True, save_strategy="no", learning_rate=1e-3, seed=0, max_length=16)
    dataset = Dataset.from_dict({"prompt": [f"w{i} w{i + 1}" for i in range(4)],
                                 "chosen": [f" w{i + 2}" for i in range(4)],
                                 "rejected": [f" w{i + 5} w9" for i in range(4)]})
    trainer = DPOTrainer(model=tiny_model, args=args, train_dataset=dataset, callbacks=[OtelRLCallback(run_id="d")])
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and "rewards/margins" in logs[-1]
    for series, key in [("rl_training_policy_loss", "loss"), ("rl_training_entropy", "entropy")]:
        histogram = testing.histogram(series, algorithm="DPO")
        assert (histogram.count, histogram.sum) == (2, sum(entry[key] for entry in logs)), series
    run = {"algorithm": "DPO", "run_id": "d"}
    assert testing.value("rl_training_learning_rate", **run) == logs[-1]["learning_rate"]
    assert testing.value("rl_training_grad_norm", **run) == logs[-1]["grad_norm"]
    assert testing.value("rl_training_episode_reward_mean", **run) is None
    assert testing.value("rl_training_iterations_total", algorithm="DPO") == 2


def test_inside_a_training_run_a_failing_reward_function_is_a_failed_run(tiny_model, tmp_path):
    """Inside training_run the run takes its labels from there, and an exception out of the trainer (here a
    reward function) is recorded as a failed run, not a completed one."""
    def broken(completions, **kwargs):
        raise RuntimeError("reward server down")

    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=4, report_to="none", use_cpu=True, save_strategy="no", max_steps=2)
    dataset = Dataset.from_dict({"prompt": ["w1 w2", "w3 w4"]})
    trainer = GRPOTrainer(model=tiny_model, reward_funcs=[broken], args=args, train_dataset=dataset,
                          callbacks=[OtelRLCallback()])
    with pytest.raises(RuntimeError, match="reward server down"):
        with otel_rl.training_run(algorithm="GRPO-math", run_id="exp-7"):
            trainer.train()
    assert testing.value("rl_training_runs_total", algorithm="GRPO-math", status="started") == 1
    assert testing.value("rl_training_runs_total", algorithm="GRPO-math", status="failed") == 1
    assert testing.value("rl_training_runs_total", algorithm="GRPO-math", status="completed") is None
    assert testing.value("rl_training_runs_total", algorithm="GRPO", status="started") is None


def test_bad_logged_values_are_dropped_not_raised(caplog):
    """A NaN loss, a string learning rate or a None reward (TRL logs None when every reward was None) never
    raises into training: each is dropped and counted, the other figures are recorded."""
    callback = OtelRLCallback(run_id="r1")
    args, state = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True), TrainerState()
    callback.on_train_begin(args, state, None)
    state.global_step = 1
    callback.on_step_end(args, state, None)
    callback.on_log(args, state, None, logs={"loss": float("nan"), "learning_rate": "high", "reward": None,
                                             "rewards/f/mean": None, "grad_norm": 0.5, "num_tokens": "x",
                                             "step_time": 0.1})
    assert testing.dropped("rl_training_policy_loss", "nan") == 1
    assert testing.dropped("rl_training_learning_rate", "wrong_type") == 1
    assert testing.value("rl_training_grad_norm", algorithm="Trainer", run_id="r1") == 0.5
    assert testing.value("rl_training_episode_reward_mean", algorithm="Trainer", run_id="r1") is None
    assert testing.value("rl_training_iterations_total", algorithm="Trainer") == 1
    with caplog.at_level("DEBUG", logger="otel_rl"):
        for _ in range(3):
            callback.on_log(args, state, None, logs={1: 2.0})  # not a str key: a wrong log, never an exception
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "recording TRL's logged values" in r.message]
    assert len(warnings) == 1 and warnings[0].exc_info

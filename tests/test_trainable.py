"""Specification of a search member (SpiderNetTrainable) built in-process: what a round reports, and
that the run description reaches it unchanged."""

import json

import pytest
import torch

from spidernet_ray.config import SearchConfig
from spidernet_ray.data import load_dataset
from spidernet_ray.genome import MUTATIONS, Genome
from spidernet_ray.record import REPORT_TYPES, MemberReport, MutationInstruction, decode
from spidernet_ray.trainable import SpiderNetTrainable, param_space

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def splits():
    return load_dataset("synthetic", seed=0, subset=160)


@pytest.fixture(scope="module")
def config():
    return SearchConfig(reductions=1, channels=4, batch_size=32, epochs_per_round=1, initial_splits=1).validate()


def member(splits, settings, mutation=None):
    class Member(SpiderNetTrainable):
        def setup(self, config):
            super().setup(config, splits=splits)

    return Member({"settings": settings, "start_genome": None, "lr": 0.05, "weight_decay": 3e-4, "drop_path": 0.0,
                   "seed": 3, "mutation": mutation})


@pytest.fixture(scope="module")
def first_round(ray_local, splits, config):
    threads = torch.get_num_threads()
    trainable = member(splits, config)
    yield trainable, trainable.train()
    torch.set_num_threads(threads)


def test_param_space_carries_the_config_itself(config):
    space = param_space(config)
    assert space["settings"] is config and space["start_genome"] is None


def test_each_member_draws_its_pressure_around_the_configured_one(config):
    pressure = param_space(config)["pressure"]
    draws = [pressure.sample() for _ in range(50)]
    assert all(config.pressure / 3 <= p <= config.pressure * 3 for p in draws) and len(set(draws)) > 1


def test_a_round_reports_the_member_record_and_nothing_else(first_round):
    _, result = first_round
    reported = {key for key in result if key in REPORT_TYPES}
    assert {"val_accuracy", "latency_ms", "peak_memory_mb", "params", "genome", "genome_hash", "feasible"} <= reported
    assert 0 <= result["val_accuracy"] <= 1 and result["latency_ms"] > 0 and result["params"] > 0
    assert Genome.from_json(result["genome"]).hash == result["genome_hash"]
    assert "fitness" not in result
    assert result["mutation"] == "" and decode(result, "mutation") == {}
    # the supernet's step costs at least what the network it stands for would
    assert 0 < result["discrete_step_ms"] <= result["train_step_ms"]


def test_a_clone_carries_out_its_instruction_once_and_reports_it(first_round, splits, config, tmp_path):
    donor, _ = first_round
    donor.save_checkpoint(str(tmp_path))
    instruction = MutationInstruction(donor="donor_00000")
    clone = member(splits, config, mutation=instruction.to_dict())
    clone.load_checkpoint(str(tmp_path))
    report = decode(clone.train(), "mutation")
    assert report["id"] == instruction.id and report["donor"] == "donor_00000" and report["kind"] == "split"
    assert report["chosen"] in MUTATIONS  # without --proxies, a registered cell mutation chosen cheaply
    assert decode(clone.train(), "mutation") == {}  # reported once, carried out once


def test_a_member_record_encodes_nested_fields_as_json_and_leaves_none_out():
    result = MemberReport(val_accuracy=0.5, mutation={"id": "m"}, snapshots=[]).to_result()
    assert result == {"val_accuracy": 0.5, "mutation": json.dumps({"id": "m"}), "snapshots": ""}
    assert decode(result, "mutation") == {"id": "m"} and decode(result, "snapshots") == []


def test_a_mutation_instruction_round_trips_through_the_trial_config():
    instruction = MutationInstruction("a_00001", "crossover", other="a_00002", other_genome="{}")
    assert MutationInstruction.from_dict(instruction.to_dict()) == instruction
    assert len(MutationInstruction("a").id) == 12 and MutationInstruction("a").id != MutationInstruction("a").id

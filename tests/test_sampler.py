"""SPEC 3: class-balanced sampling, step by step."""
from collections import Counter

import numpy as np
import pytest

from dataset.sampler import ClassBalancedSampler, allowed_num_classes_iter, class_chunks
from utils.errors import UserInputError


def labels_of(class_sizes):
    return [label for label, size in enumerate(class_sizes) for _ in range(size)]


def batches_of(sampler):
    order = list(sampler)
    return [order[start:start + sampler.batch_size] for start in range(0, len(order), sampler.batch_size)]


CLASS_SIZES = [2, 4, 5, 7, 8, 9, 12, 3]


def test_every_batch_is_p_times_k_indices_in_k_runs_of_one_class():
    labels = labels_of(CLASS_SIZES)
    sampler = ClassBalancedSampler(labels, 3, 4)
    assert len(sampler) % 12 == 0
    for batch in batches_of(sampler):
        assert len(batch) == 12
        for start in range(0, 12, 4):
            assert len({labels[index] for index in batch[start:start + 4]}) == 1


def test_each_epoch_covers_every_image():
    labels = labels_of(CLASS_SIZES)
    sampler = ClassBalancedSampler(labels, 3, 4)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        assert set(sampler) == set(range(len(labels)))


def test_class_smaller_than_k_is_padded_with_its_own_images_then_gets_k_more():
    chunks = class_chunks(np.random.default_rng(0), np.array([10, 11]), 4)
    assert chunks.shape == (2, 4)
    assert set(chunks.ravel()) == {10, 11}


def test_class_is_padded_to_the_next_multiple_of_k_with_distinct_images():
    chunks = class_chunks(np.random.default_rng(0), np.arange(6), 4)
    assert chunks.shape == (2, 4)
    assert sorted(chunks.ravel()[:6]) == list(range(6))
    extra = chunks.ravel()[6:]
    assert len(set(extra)) == 2


def test_class_whose_size_is_a_multiple_of_k_still_gets_k_more():
    chunks = class_chunks(np.random.default_rng(0), np.arange(8), 4)
    assert chunks.shape == (3, 4)
    assert sorted(chunks.ravel()[:8]) == list(range(8))
    assert len(set(chunks.ravel()[8:])) == 4


def test_chunks_per_class_follow_the_padding_rule():
    labels = labels_of(CLASS_SIZES)
    sampler = ClassBalancedSampler(labels, 1, 4)  # P = 1: no top-up chunks
    appearances = Counter(labels[index] for index in sampler)
    expected = [(max(size, 4) // 4 + 1) * 4 for size in CLASS_SIZES]
    assert [appearances[label] for label in range(len(CLASS_SIZES))] == expected


def test_chunks_are_topped_up_to_a_multiple_of_p_with_existing_chunks():
    labels = labels_of(CLASS_SIZES)
    num_chunks = sum(max(size, 4) // 4 + 1 for size in CLASS_SIZES)  # 17
    sampler = ClassBalancedSampler(labels, 5, 4)
    order = list(sampler)
    chunks = [tuple(order[start:start + 4]) for start in range(0, len(order), 4)]
    assert len(chunks) == 20 == num_chunks + (-num_chunks % 5)
    top_up = chunks[num_chunks:]
    assert all(chunk in chunks[:num_chunks] for chunk in top_up)


def test_allowed_num_classes_iter_are_divisors_between_2_and_half_the_batch():
    assert allowed_num_classes_iter(54) == [2, 3, 6, 9, 18, 27]
    assert allowed_num_classes_iter(7) == []


def test_number_sampler_keeps_the_batch_size_and_uses_allowed_divisors():
    labels = labels_of([10] * 30)
    sampler = ClassBalancedSampler(labels, 6, 9, batch_size_sampling="NumberSampler")
    drawn = set()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        p, k = sampler.num_classes_iter, sampler.num_elements_class
        drawn.add(p)
        assert p * k == 54 and p in allowed_num_classes_iter(54)
        for batch in batches_of(sampler):
            assert len(batch) == 54
            runs = [batch[start:start + k] for start in range(0, 54, k)]
            assert all(len({labels[index] for index in run}) == 1 for run in runs)
    assert len(drawn) > 3


def test_same_seed_and_epoch_give_the_same_order_another_epoch_or_seed_another():
    labels = labels_of(CLASS_SIZES)
    first = ClassBalancedSampler(labels, 3, 4, seed=7)
    second = ClassBalancedSampler(labels, 3, 4, seed=7)
    first.set_epoch(3)
    second.set_epoch(3)
    assert list(first) == list(second)
    second.set_epoch(4)
    assert list(first) != list(second)
    other_seed = ClassBalancedSampler(labels, 3, 4, seed=8)
    other_seed.set_epoch(3)
    assert list(first) != list(other_seed)


def test_distributed_ranks_take_disjoint_batches_of_equal_count():
    labels = labels_of(CLASS_SIZES * 3)
    whole = ClassBalancedSampler(labels, 3, 4, seed=5)
    whole.set_epoch(2)
    all_batches = batches_of(whole)
    world_size = 3
    per_rank = len(all_batches) // world_size
    lengths = set()
    for rank in range(world_size):
        sampler = ClassBalancedSampler(labels, 3, 4, seed=5, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        assert batches_of(sampler) == all_batches[rank::world_size][:per_rank]
        lengths.add(len(sampler))
    assert lengths == {per_rank * 12}


def test_len_matches_what_iteration_yields():
    sampler = ClassBalancedSampler(labels_of([10] * 9), 6, 9, batch_size_sampling="NumberSampler")
    for epoch in range(10):
        sampler.set_epoch(epoch)
        assert len(sampler) == len(list(sampler))


def test_fewer_classes_than_p_names_num_classes_iter():
    with pytest.raises(UserInputError, match="train_params.num_classes_iter = 4"):
        ClassBalancedSampler(labels_of([5, 5, 5]), 4, 2)


def test_fewer_images_than_one_batch_names_both_keys():
    with pytest.raises(UserInputError, match="num_classes_iter x train_params.num_elements_class"):
        ClassBalancedSampler(labels_of([2, 2, 2]), 3, 4)


def test_unknown_batch_size_sampling_names_the_key():
    with pytest.raises(UserInputError, match="dataset.bssampling"):
        ClassBalancedSampler(labels_of([5, 5]), 2, 2, batch_size_sampling="BatchSizeSampler")


def test_more_processes_than_batches_is_refused():
    with pytest.raises(UserInputError, match="fewer batches per epoch than the 8 training processes"):
        ClassBalancedSampler(labels_of([4, 4]), 2, 4, rank=0, world_size=8)

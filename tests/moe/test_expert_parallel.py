"""Expert parallelism (rmoe_mm.moe.parallel): the layout, the settings, and
3 gloo ranks against one process (rmoe_mm/testing/expert_parallel.py says
how; the 2-rank cases run in tests/hooks/test_expert_parallel_training.py,
in the spawn that also trains)."""
import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from rmoe_mm.checkpoint.fit import check_model_state_dict
from rmoe_mm.moe import MoEConfig, RMoEFFN
from rmoe_mm.moe.parallel import ExpertParallelLayout
from rmoe_mm.testing.distributed import spawn_gloo
from rmoe_mm.testing.expert_parallel import (CASES_3, C, H, check_layer_cases,
                                             make_layer, prepare_layer_cases,
                                             run_layer_cases,
                                             tokens_and_weights)


def _three_rank_worker(rank, world, out_dir):
    with pytest.raises(ValueError) as error:  # 4 experts over 3 ranks
        MoEConfig(num_experts=4, expert_parallel=True)
    (out_dir / f'message{rank}.txt').write_text(str(error.value))
    # A DDP told nothing about the shards would average other experts.
    layer = DistributedDataParallel(make_layer(CASES_3[0]))
    with pytest.raises(RuntimeError, match='not excluded from DDP'):
        layer(tokens_and_weights(CASES_3[0], 2)[0])
    # An overflow in one rank's experts is one on every rank (fp16 AMP).
    grad = torch.ones(3)
    grad[0] = float('inf') if rank == 2 else 1.
    grad = make_layer(CASES_3[0]).expert_parallel.reduce_gradient(grad)
    assert torch.isinf(grad).all()
    # A checkpoint with another expert count is refused, not cut to fit:
    # by the strict checks of the tools (full-size shapes, no gather) and
    # by the shards' own load hook.
    six = make_layer(CASES_3[0])
    four = RMoEFFN(C, H, num_experts=4).state_dict()
    problems = [
        p for fit in check_model_state_dict(six, four, 'test')
        for p in fit.problems
    ]
    assert any(
        'residual.fc1.weight' in p and '(4, 16, 8)' in p and '(6, 16, 8)' in p
        for p in problems), problems
    with pytest.raises(ValueError, match='num_experts=6'):
        six.load_state_dict(four, strict=False)
    run_layer_cases(rank, world, CASES_3, out_dir)


@pytest.mark.slow
def test_three_ranks_equal_one_process(tmp_path):
    prepare_layer_cases(CASES_3, tmp_path)
    spawn_gloo(_three_rank_worker, 3, tmp_path)
    check_layer_cases(CASES_3, 3, tmp_path)
    message = (tmp_path / 'message0.txt').read_text()
    assert 'num_experts=4' in message and 'divisible by 3' in message


def test_layout_of_experts_and_replicas():
    layout = ExpertParallelLayout(
        num_experts=8, world_size=4, group_size=2, rank=3)
    assert layout.expert_groups() == [[0, 1], [2, 3]]
    assert layout.replica_groups() == [[0, 2], [1, 3]]
    assert layout.expert_group() == [2, 3]
    assert layout.replica_group() == [1, 3]
    assert (layout.num_local_experts, layout.first_expert) == (4, 4)


def test_settings_are_checked():
    with pytest.raises(ValueError, match='num_experts=6.*divisor of 6'):
        MoEConfig(num_experts=6, expert_parallel=True, expert_parallel_size=4)
    with pytest.raises(ValueError, match='set expert_parallel=True'):
        MoEConfig(expert_parallel_size=2)
    with pytest.raises(TypeError, match='expert_parallel must be'):
        MoEConfig(expert_parallel=1)


def test_one_process_holds_every_expert():
    """Without a process group the switch changes nothing."""
    case = CASES_3[0]
    torch.manual_seed(0)
    plain = RMoEFFN(C, H, num_experts=4, gate_noise=0., residual_std=0.1)
    torch.manual_seed(0)
    parallel = RMoEFFN(
        C,
        H,
        num_experts=4,
        gate_noise=0.,
        residual_std=0.1,
        expert_parallel=True)
    assert parallel.expert_parallel is None
    x = tokens_and_weights(case, 0)[0]
    torch.testing.assert_close(parallel(x), plain(x), rtol=0, atol=0)

"""Every RMoE setting is validated with an error that names the problem."""
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN

from rmoe_mm.moe import RMoEFFN, convert_ffn_to_moe
from rmoe_mm.registry import MODELS


@pytest.mark.parametrize('cfg, error, match', [
    (dict(num_experts=0), ValueError, 'num_experts must be >= 1'),
    (dict(num_experts=2.5), TypeError, 'num_experts must be an int'),
    (dict(top_k=0), ValueError, 'top_k must be >= 1'),
    (dict(num_experts=2,
          top_k=3), ValueError, 'top_k=3 exceeds num_experts=2'),
    (dict(router='softmax'), ValueError, "router must be one of .*'softmax'"),
    (dict(gate_noise=-1.), ValueError, 'gate_noise must be >= 0'),
    (dict(capacity_factor=-0.5), ValueError, 'capacity_factor must be >= 0'),
    (dict(capacity_factor='1.25'), TypeError, 'capacity_factor must be a'),
    (dict(balance_loss='cv'), ValueError,
     "balance_loss must be one of .*'cv'"),
    (dict(balance_loss_weight=-0.01), ValueError,
     'balance_loss_weight must be >= 0'),
    (dict(residual_std=-1e-3), ValueError, 'residual_std must be >= 0'),
    (dict(alignment='sum'), ValueError, "alignment must be one of .*'sum'"),
    (dict(residual_rank=0), ValueError, 'residual_rank must be >= 1'),
    (dict(residual_rank=8), ValueError, 'residual_rank=8 is not low-rank'),
    (dict(num_fcs=3), ValueError, 'num_fcs=2'),
])
def test_impossible_setting_raises_clear_error(cfg, error, match):
    with pytest.raises(error, match=match):
        RMoEFFN(8, 16, **cfg)


def test_unknown_setting_name_is_reported_with_a_suggestion():
    with pytest.raises(
            ValueError,
            match="'num_expert' \\(did you mean "
            "'num_experts'\\?\\)"):
        convert_ffn_to_moe(FFN(8, 16), dict(num_expert=4))
    with pytest.raises(TypeError, match='num_expert'):
        RMoEFFN(8, 16, num_expert=4)


def test_from_dense_rejects_a_module_that_is_not_a_two_layer_ffn():
    with pytest.raises(ValueError, match='mmcv FFN with num_fcs=2'):
        RMoEFFN.from_dense(FFN(8, 16, num_fcs=3))
    with pytest.raises(ValueError, match='mmcv FFN with num_fcs=2'):
        RMoEFFN.from_dense(torch.nn.Linear(8, 8))


def test_zero_capacity_factor_and_zero_std_are_valid():
    moe = RMoEFFN(8, 16, capacity_factor=0, residual_std=0., gate_noise=0.)
    assert moe.residual.fc1.weight.abs().sum() == 0
    x = torch.randn(5, 8)
    moe(x)
    assert moe.moe_stats()['dropped'] == 0


def test_from_dense_copies_dims_activation_dropout_and_mode():
    dense = FFN(
        8,
        16,
        act_cfg=dict(type='GELU'),
        ffn_drop=0.1,
        dropout_layer=dict(type='DropPath', drop_prob=0.2),
        add_identity=False).eval()
    moe = RMoEFFN.from_dense(dense, num_experts=2)
    assert not moe.training and not moe.add_identity
    assert type(moe.layers[0][1]) is type(dense.layers[0][1])  # noqa: E721
    assert moe.layers[0][2].p == 0.1 and moe.layers[2].p == 0.1
    assert type(moe.dropout_layer) is type(dense.dropout_layer)  # noqa: E721
    for key, value in dense.state_dict().items():
        torch.testing.assert_close(moe.state_dict()[key], value)


def test_registered_for_config_builds():
    moe = MODELS.build(
        dict(
            type='RMoEFFN',
            embed_dims=8,
            feedforward_channels=16,
            num_experts=2))
    assert isinstance(moe, RMoEFFN)

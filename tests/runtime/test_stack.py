from torch import nn

from weightzip.runtime.stack import linear_relu_stack


def test_stack_folds_relu_drops_dropout_and_records_positions():
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Dropout(), nn.Linear(3, 2), nn.Linear(2, 1))
    st = linear_relu_stack(seq)
    assert st.linears == [seq[0], seq[3], seq[4]]
    assert st.relu_after == [True, False, False] and st.positions == [0, 3, 4]
    assert st.chains()


def test_stack_rejects_other_layers_and_broken_chains():
    assert linear_relu_stack(nn.Linear(3, 3)) is None                               # not a Sequential
    assert linear_relu_stack(nn.Sequential(nn.ReLU(), nn.Linear(3, 3))) is None     # ReLU before any Linear
    assert linear_relu_stack(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.ReLU())) is None
    assert linear_relu_stack(nn.Sequential(nn.Linear(3, 3), nn.Tanh())) is None
    assert not linear_relu_stack(nn.Sequential(nn.Linear(3, 4), nn.Linear(3, 2))).chains()
    assert not linear_relu_stack(nn.Sequential(nn.Linear(3, 4))).chains()

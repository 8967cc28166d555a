"""The communication hooks' settings and byte accounting, and the hook itself in a 1-process group."""
import json
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import _should_compress

from weightzip.training.distributed import launch
from weightzip.training.distributed.grad_quant import (
    CommStats,
    GradQuantConfig,
    allgather_wire_bytes,
    allreduce_wire_bytes,
    estimate_step_bytes,
    powersgd_bytes,
    register_comm_hook,
    torch_pertensor_bytes,
)
from weightzip.errors import WeightzipError
from weightzip.primitives.grad_quant import decode_packets, encode_packet, packet_nbytes

LENET5 = [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 800), (500,), (10, 500), (10,)]


def test_config_parse_label_and_json_round_trip():
    c = GradQuantConfig.parse("mbit:bits=3,clip=3,error_feedback=true")
    assert (c.scheme, c.bits, c.clip, c.error_feedback) == ("mbit", 3, 3.0, True)
    assert c.label() == "3-bit clip3 EF" and c.quantized
    assert GradQuantConfig.parse(c.model_dump_json()) == c
    assert GradQuantConfig.parse(json.loads(c.model_dump_json())) == c
    assert GradQuantConfig.parse("fp32").label() == "fp32" and not GradQuantConfig.parse(None).quantized
    assert GradQuantConfig.parse("ternary:clip=none").label() == "ternary noclip"
    assert GradQuantConfig.parse("torch-pertensor").scheme == "torch_pertensor"
    for bad in ("mbit:bits=9", "nope", "mbit:clip=0", "mbit:bits=2,colour=red"):
        with pytest.raises(Exception):
            GradQuantConfig.parse(bad)
    with pytest.raises(WeightzipError, match="key=value"):
        GradQuantConfig.parse("mbit:bits")


def test_current_config_reads_the_environment(monkeypatch):
    launch.configure(None)
    monkeypatch.setenv(launch.ENV_GRAD_QUANT, "sign:error_feedback=true")
    assert launch.current_config().label() == "sign noclip EF"
    launch.configure("mbit:bits=8")
    try:
        assert launch.current_config().bits == 8  # configure() wins over the environment
    finally:
        launch.configure(None)
    monkeypatch.setenv(launch.ENV_GRAD_QUANT, "mbit:bits=1")
    with pytest.raises(WeightzipError, match="WEIGHTZIP_GRAD_QUANT"):
        launch.current_config()


def test_ring_models():
    assert allreduce_wire_bytes(1000, 2) == 1000 and allreduce_wire_bytes(1000, 4) == 1500
    assert allreduce_wire_bytes(1000, 1) == 0
    assert allgather_wire_bytes(100, 4) == 300


def _reference_powersgd(shapes, rank, rate=2.0):
    total = 0
    for s in shapes:
        n = s[0]
        m = math.prod(s) // n
        r = min(n, m, rank)
        ok, unc, comp = _should_compress(n, m, r, rate)
        total += comp if ok else unc
    return 4 * total


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_powersgd_bytes_follow_torchs_rule(rank):
    assert powersgd_bytes(LENET5, rank) == _reference_powersgd(LENET5, rank)
    assert powersgd_bytes(LENET5, rank, compressing=False) == 4 * sum(math.prod(s) for s in LENET5)
    # biases are never compressed: (n + 1) r 2 < n fails
    assert powersgd_bytes([(500,)], rank) == 2000


def test_estimates_for_lenet5():
    n = sum(math.prod(s) for s in LENET5)
    fp = estimate_step_bytes(LENET5, "fp32", world_size=2)
    assert fp == {"payload": 4 * n, "wire": 4 * n, "fp32_payload": 4 * n, "fp32_wire": 4 * n}
    two = estimate_step_bytes(LENET5, "mbit:bits=2,clip=3", world_size=2)
    assert two["payload"] == 4 * len(LENET5) + math.ceil(n * 2 / 8)
    assert two["fp32_payload"] / two["payload"] >= 12  # the target: at most 1/12 of fp32
    per_bucket = estimate_step_bytes(LENET5, "mbit:bits=2,granularity=bucket", world_size=2)
    assert per_bucket["payload"] == 4 + math.ceil(n * 2 / 8)
    four = estimate_step_bytes(LENET5, "mbit:bits=2", world_size=4)
    assert four["wire"] == 3 * two["payload"] and four["fp32_wire"] == 1.5 * 4 * n  # all-gather grows with W
    assert estimate_step_bytes(LENET5, "torch_pertensor")["payload"] == torch_pertensor_bytes(n) == 8 + n
    assert estimate_step_bytes(LENET5, "powersgd")["payload"] == powersgd_bytes(LENET5, 1)
    split = estimate_step_bytes(LENET5, "ternary", bucket_sizes=[[0, 1, 2, 3], [4, 5, 6, 7]])
    assert split["payload"] == packet_nbytes([500, 20, 25000, 50], scheme="ternary") + packet_nbytes(
        [400000, 500, 5000, 10], scheme="ternary")


def test_comm_stats_arithmetic():
    a = CommStats(steps=2, buckets=2, elements=10, payload_bytes=10, wire_bytes=10.0, fp32_payload_bytes=80,
                  fp32_wire_bytes=80.0)
    b = CommStats(steps=5, buckets=5, elements=25, payload_bytes=25, wire_bytes=25.0, fp32_payload_bytes=200,
                  fp32_wire_bytes=200.0)
    d = (b - a).as_dict()
    assert d["steps"] == 3 and d["payload_bytes"] == 15 and d["payload_ratio"] == 8.0
    assert d["payload_bytes_per_step"] == 5.0
    assert CommStats().as_dict()["payload_ratio"] == 0.0


@pytest.fixture
def single_process_group():
    """A gloo group of one process (this one) on 127.0.0.1, destroyed afterwards."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{launch.free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_hook_in_one_process_quantizes_per_tensor_with_error_feedback(single_process_group):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    ddp = nn.parallel.DistributedDataParallel(model)
    cfg = GradQuantConfig(scheme="mbit", bits=3, clip=None, error_feedback=True, seed=4)
    state = register_comm_hook(ddp, cfg)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    # the exact fp32 gradients, on a copy
    ref = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    ref.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(ref(x), y).backward()
    nn.functional.cross_entropy(ddp(x), y).backward()
    # one bucket; one scale per parameter tensor, in the bucket's order (forward or reverse)
    lengths = state.layouts[0]
    order = [0, 1, 2, 3] if lengths == [p.numel() for p in model.parameters()] else [3, 2, 1, 0]
    params = [list(model.parameters())[i] for i in order]
    assert lengths == [p.numel() for p in params]
    g = torch.cat([list(ref.parameters())[i].grad.reshape(-1) for i in order])
    q = torch.cat([p.grad.reshape(-1) for p in params])
    # the same generator draws reproduce the hook's packet (seeded by (seed, rank))
    gen = torch.Generator().manual_seed(4 * 1_000_003 + 1)
    pkt, own = encode_packet(g, lengths, scheme="mbit", bits=3, generator=gen, return_decoded=True)
    assert torch.equal(q, decode_packets(pkt, lengths, scheme="mbit", bits=3))
    assert torch.equal(q, own)
    assert torch.allclose(state.residuals[0], g - own)  # what the next step adds back
    for p, L in zip(params, lengths):
        vals = p.grad.reshape(-1)
        s = vals.abs().max()
        assert torch.allclose(vals / s * 3, (vals / s * 3).round(), atol=1e-5)  # per-tensor grid
    st = state.stats.as_dict()
    assert st["steps"] == 1 and st["payload_bytes"] == packet_nbytes(lengths, scheme="mbit", bits=3)
    assert st["wire_bytes"] == 0  # one process sends nothing to anyone
    assert st["fp32_payload_bytes"] == 4 * sum(lengths)


@pytest.mark.distributed
def test_trainer_stays_local_in_a_one_process_group(single_process_group):
    from weightzip.training.trainer import Trainer

    class L:
        train = [(torch.randn(4, 3), torch.randint(0, 2, (4,)))]
        val = None
        task = "classify"

    t = Trainer(nn.Linear(3, 2), {"epochs": 1, "progress": False, "device": "cpu"}, L())
    assert t.dist is None and t.train_module is t.model


def test_pertensor_hook_is_refused_on_gloo_with_the_reason(single_process_group):
    ddp = nn.parallel.DistributedDataParallel(nn.Linear(3, 2))
    with pytest.raises(WeightzipError, match="NCCL only"):
        register_comm_hook(ddp, "torch_pertensor")


def test_torchrun_command_and_option_stripping():
    args = ["train", "lenet5", "-d", "mnist", "--nproc-per-node", "4", "--nnodes=2", "-o", "x.pt",
            "--rdzv-endpoint", "h:29500", "--grad-bits", "2"]
    assert launch.strip_launch_options(args) == ["train", "lenet5", "-d", "mnist", "-o", "x.pt", "--grad-bits", "2"]
    one = launch.torchrun_command(args, 4, python="py")
    assert one[:6] == ["py", "-m", "torch.distributed.run", "--nproc-per-node", "4", "--standalone"]
    assert one[6:9] == ["-m", "weightzip", "train"]
    multi = launch.torchrun_command(args, 2, nnodes=2, rdzv_endpoint="h:29500", python="py")
    assert multi[5:13] == ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "h:29500",
                           "--rdzv-id", "weightzip"]
    with pytest.raises(WeightzipError, match="rdzv-endpoint"):
        launch.torchrun_command(args, 2, nnodes=2)


def test_describe_comm_error():
    msg = launch.describe_comm_error(RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
    assert msg.startswith("rank 0 of 1: a collective operation failed") and "Connection reset" in msg
    assert launch.describe_comm_error(ValueError("shapes do not match")) is None
    with pytest.raises(WeightzipError, match="another worker"):
        with launch.comm_errors():
            raise RuntimeError("Connection closed by peer [127.0.0.1]:1234")
    with pytest.raises(KeyError):
        with launch.comm_errors():
            raise KeyError("x")


def test_cli_train_relaunches_itself_under_torchrun(monkeypatch):
    from typer.testing import CliRunner

    from weightzip.cli import app

    seen = {}

    def fake_relaunch(args, nproc, nnodes=None, rdzv_endpoint=None):
        seen.update(args=list(args), nproc=nproc, nnodes=nnodes, rdzv=rdzv_endpoint)
        return 0

    monkeypatch.setattr(launch, "relaunch", fake_relaunch)
    args = ["train", "mlp_tiny", "-d", "mnist", "-o", "x.pt", "--nproc-per-node", "2", "--grad-bits", "2",
            "--grad-clip-sigma", "3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == {"args": args, "nproc": 2, "nnodes": None, "rdzv": None}
    assert launch.strip_launch_options(seen["args"])[-4:] == ["--grad-bits", "2", "--grad-clip-sigma", "3"]


def test_cli_setup_outside_torchrun_only_configures():
    try:
        assert launch.cli_setup(bits=3, clip_sigma=3.0, error_feedback=True) == (0, 1)
        assert launch.current_config().label() == "3-bit clip3 EF"
        launch.cli_setup(grad_quant="ternary", clip_sigma=0.0)
        assert launch.current_config().label() == "ternary noclip"
        launch.cli_setup(grad_quant="powersgd")
        assert launch.current_config().scheme == "powersgd"
    finally:
        launch.configure(None)

"""Replicas, node ranks and multi-node wiring."""

import pytest

from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan


def value(argv, flag):
    return argv[list(argv).index(flag) + 1]


def test_h100x16_is_one_replica_of_tp16_over_two_nodes():
    p = plan("h100x16")
    assert (len(p.replicas), p.tp, p.nodes_per_replica) == (1, 16, 2)
    head, worker = p.nodes
    assert (head.node_name, head.node_rank, head.is_head) == ("node0", 0, True)
    assert (worker.node_name, worker.node_rank, worker.is_head) == ("node1", 1, False)
    for n in p.nodes:
        assert value(n.argv, "--nnodes") == "2"
        assert value(n.argv, "--node-rank") == str(n.node_rank)
        assert value(n.argv, "--dist-init-addr") == "node0:20000"
        assert value(n.argv, "--host") == n.node_name   # each node listens on its own address
    # same command on every node apart from the rank and the node's own listening address
    strip = lambda a: [x for i, x in enumerate(a) if not (i > 0 and a[i - 1] in ("--node-rank", "--host"))]
    assert strip(list(head.argv)) == strip(list(worker.argv))


def test_multinode_uses_the_real_head_address_and_port():
    p = plan("h100x16", PlanOptions(dist_init_port=23456), node_names=["gpu-a", "gpu-b"],
             node_addresses=["10.0.0.5", "10.0.0.6"])
    assert {value(n.argv, "--dist-init-addr") for n in p.nodes} == {"10.0.0.5:23456"}
    assert [n.node_name for n in p.nodes] == ["gpu-a", "gpu-b"]


def test_h100x32_bf16_is_two_replicas_of_two_nodes():
    p = plan("h100x32")
    assert [r.node_indexes for r in p.replicas] == [(0, 1), (2, 3)]
    assert [(n.replica, n.node_rank, n.node_name) for n in p.nodes] == [
        (0, 0, "node0"), (0, 1, "node1"), (1, 0, "node2"), (1, 1, "node3")]
    assert value(p.nodes[2].argv, "--dist-init-addr") == "node2:20000"
    assert value(p.nodes[3].argv, "--dist-init-addr") == "node2:20000"


def test_h200x16_fp8_is_two_single_node_replicas():
    p = plan("h200x16", PlanOptions(precision="fp8"))
    assert (len(p.replicas), p.tp, p.nodes_per_replica) == (2, 8, 1)
    for n in p.nodes:
        assert "--nnodes" not in n.argv and "--dist-init-addr" not in n.argv


def test_small_model_packs_several_replicas_per_node_on_their_own_gpus_and_ports():
    p = plan("h200x8", PlanOptions(model="122b"))  # TP 4
    assert [(r.gpu_ids, r.port) for r in p.replicas] == [((0, 1, 2, 3), 30000), ((4, 5, 6, 7), 30001)]
    assert "--base-gpu-id" not in p.nodes[0].argv
    assert value(p.nodes[1].argv, "--base-gpu-id") == "4"
    assert value(p.nodes[1].argv, "--port") == "30001"


def test_gpus_per_node_override_spreads_a_replica_over_more_nodes():
    p = plan("h100x16", gpus_per_node=4)
    assert p.cluster.node_count == 4 and p.nodes_per_replica == 4
    assert [n.node_rank for n in p.nodes] == [0, 1, 2, 3]


def test_leftover_gpus_are_reported_idle():
    p = plan("h100x24")
    assert len(p.replicas) == 1 and p.idle_gpus == 8
    assert any("8 GPU(s) stay idle" in n for n in p.notes)


def test_memory_explanation_for_the_flagship():
    m = plan("h100x16").memory
    assert m.weights_per_gpu_gb == 50.0
    assert round(m.static_pool_gb, 1) == 68.4 and round(m.kv_and_state_gb, 1) == 18.4 and m.fits
    assert "18.4 GB for KV cache" in m.explain()


def test_an_id_ending_in_x_may_share_the_separator():
    assert plan("mi300x8").cluster.name == "mi300xx8"
    assert plan("mi355xx4").cluster.name == "mi355xx4"


def test_the_gateway_goes_on_the_first_head_or_the_node_named_and_only_with_several_replicas():
    from qwen35_prov.errors import UserError

    p = plan("h100x32", PlanOptions())
    assert p.router == {"host": "node0", "port": 30080, "metrics_port": 29000, "listen": "node0",
                        "metrics_listen": "node0"}
    # the client port follows the bind, as SGLang's --host does; the keyless metrics never leave the fleet address
    every = plan("h100x32", PlanOptions(bind="all")).router
    assert (every["listen"], every["metrics_listen"]) == ("0.0.0.0", "node0")
    assert plan("h100x32", PlanOptions(router_host="node3")).router["host"] == "node3"
    assert plan("h200x8").router is None                                     # one replica: its head is the endpoint
    with pytest.raises(UserError, match="not a node of h100x32; its nodes: node0, node1, node2, node3"):
        plan("h100x32", PlanOptions(router_host="gpu-99"))
    with pytest.raises(UserError, match="holds one replica"):
        plan("h200x8", PlanOptions(router_host="node0"))

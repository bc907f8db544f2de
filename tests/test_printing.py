"""Printing helpers: rank 0 prints, lines come in rank order, the global tensor is formatted once."""
import io

import torch

import torchheat as th


def test_print0_prints_on_rank_0_only(comm, capsys):
    th.print0("total", th.distribute(torch.arange(5.0), split=0).sum().item())
    out = capsys.readouterr().out
    assert out == ("total 10.0\n" if comm.rank == 0 else "")


def test_print_ranks_in_rank_order(comm):
    buf = io.StringIO()
    th.print_ranks("rows", th.distribute(torch.ones(7, 2), split=0).lshape[0], file=buf)
    counts = th.layout.balanced_counts(7, comm.size)
    expected = "".join(f"[rank {r}/{comm.size}] rows {c}\n" for r, c in enumerate(counts))
    assert buf.getvalue() == (expected if comm.rank == 0 else "")


def test_global_str_formats_the_global_tensor(comm):
    t = torch.arange(6.0).reshape(3, 2)
    text = th.global_str(th.distribute(t, split=0))
    assert text == (f"{t!r} (split=0, ranks={comm.size})" if comm.rank == 0 else "")

"""Parallel I/O: HDF5, npy and CSV files written and read by torchheat, checked against plain
h5py/numpy reading or writing the same files in one process; modes, slices and bad input."""
import os

import h5py
import numpy as np
import pytest
import torch

import torchheat as th
from torchheat import layout
from torchheat.io import _common
from torchheat.testing import assert_dist_close, layouts, skewed_counts

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
          torch.float64, torch.complex64, torch.complex128]
FORMATS = [".h5", ".npy", ".csv"]


@pytest.fixture
def folder(comm, tmp_path):
    """One directory that every rank uses: rank 0's tmp_path."""
    return comm.allgather_obj(str(tmp_path) if comm.rank == 0 else None)[0]


def sample(shape, dtype):
    """Values covering the dtype's range, specials included (NaN, infinities, -0, subnormals)."""
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if not dtype.is_floating_point and not dtype.is_complex:
        info = torch.iinfo(dtype)
        return torch.randint(info.min, info.max, shape, dtype=torch.int64 if dtype != torch.uint8 else torch.int32).to(dtype)
    real = torch.float32 if dtype == torch.complex64 else torch.float64 if dtype == torch.complex128 else dtype
    t = (torch.randn(shape, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, shape)).to(real)
    flat = t.view(-1)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, torch.finfo(real).tiny / 4], dtype=real)
    flat[:min(len(specials), flat.numel())] = specials[:flat.numel()]
    return torch.complex(t, t.flip(-1) if t.dim() else t) if dtype.is_complex else t


def plain_read(path):
    """The file's contents read by plain h5py/numpy in this one process."""
    if path.endswith(".h5"):
        with h5py.File(path, "r") as f:
            return torch.from_numpy(np.asarray(f["data"][()]))
    if path.endswith(".npy"):
        return torch.from_numpy(np.load(path))
    raise ValueError(path)


def same(a: torch.Tensor, b: torch.Tensor):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# -- round trips ---------------------------------------------------------------------------
def check_file(path, t, splits, dtype=None):
    """The file at ``path`` holds ``t``: read by plain h5py/numpy, and by torchheat with each of ``splits``."""
    if path.endswith(".csv"):
        t = t if t.dim() == 2 else t.reshape(-1, 1)
        t = t if t.numel() else torch.zeros(0, 0, dtype=t.dtype)  # no line: no fields to count
    else:
        same(plain_read(path), t)
    for split in splits:
        y = th.io.load(path, split=split, **({"dtype": t.dtype} if path.endswith(".csv") else {}))
        assert_dist_close(y, t, split=split, rtol=0, atol=0)


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_every_dtype(comm, folder, ext):
    """Lossless for every dtype the format stores; saved split along 1 with an empty rank."""
    for dtype in DTYPES:
        t = sample((7, 3), dtype)
        x = th.distribute(t, split=1, counts=skewed_counts(3, comm.size))
        path = os.path.join(folder, str(dtype)[6:] + ext)
        th.io.save(x, path)
        check_file(path, t, (0,))


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_every_layout(comm, folder, ext):
    """Saved from every layout (replicated, each split, balanced and with an empty rank) and
    loaded with every split; fewer rows than ranks, empty tensors, three dimensions."""
    shapes = [(7, 3), (2,), (0, 3)] + ([(2, 3, 4)] if ext != ".csv" else [])
    for shape in shapes:
        t = sample(shape, torch.float64)
        for i, x in enumerate(layouts(t)):
            path = os.path.join(folder, f"{len(shape)}-{i}{ext}")
            th.io.save(x, path)
            check_file(path, t, [None] + list(range(max(t.dim(), 2 if ext == ".csv" else 0))) if i == 0 else [0])


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_counts_and_plain_tensor(comm, folder, ext):
    t = torch.randn(5, 2, dtype=torch.float64)
    path = os.path.join(folder, "x" + ext)
    th.io.save(t, path)  # a plain tensor, the same on every rank
    y = th.io.load(path, split=0, **({"dtype": torch.float64} if ext == ".csv" else {}))
    assert y.counts == layout.balanced_counts(5, comm.size) and y.is_leaf
    assert_dist_close(y, t, split=0, rtol=0, atol=0)
    assert th.io.load(path, split=0, device="cpu", dtype=torch.float32).dtype == torch.float32


def test_zero_dim(comm, folder):
    for ext in (".h5", ".npy"):
        path = os.path.join(folder, "s" + ext)
        th.io.save(th.distribute(torch.tensor(2.5)), path)
        same(plain_read(path), torch.tensor(2.5))
        assert_dist_close(th.io.load(path, split=None), torch.tensor(2.5), split=None)


# -- files written by plain h5py/numpy ------------------------------------------------------
def test_reads_plain_files(comm, folder):
    t = torch.randn(9, 4, 3, dtype=torch.float64)
    paths = {k: os.path.join(folder, k) for k in ("c.npy", "f.npy", "be.npy", "z.h5", "u.npy")}
    if comm.rank == 0:
        np.save(paths["c.npy"], t.numpy())
        np.save(paths["f.npy"], np.asfortranarray(t.numpy()))
        np.save(paths["be.npy"], t.numpy().astype(">f8"))
        np.save(paths["u.npy"], np.arange(7, dtype=np.uint16))
        with h5py.File(paths["z.h5"], "w") as f:
            f.create_dataset("g/d", data=t.numpy(), chunks=(2, 4, 1), compression="gzip")
    comm.barrier()
    for split in (None, 0, 1, 2):
        for name in ("c.npy", "f.npy", "be.npy"):
            assert_dist_close(th.io.load_npy(paths[name], split=split), t, split=split, rtol=0, atol=0)
        assert_dist_close(th.io.load_hdf5(paths["z.h5"], "g/d", split=split), t, split=split, rtol=0, atol=0)
    assert_dist_close(th.io.load_npy(paths["u.npy"]), torch.arange(7).to(torch.uint16), rtol=0, atol=0)


def test_slices(comm, folder):
    t = torch.arange(6 * 5 * 4, dtype=torch.int32).reshape(6, 5, 4)
    path = os.path.join(folder, "s.h5")
    th.io.save_hdf5(th.distribute(t, split=1), path, "d")
    selections = [slice(1, 5), (slice(None), 2), (slice(0, 6, 2), slice(1, None)), (3, slice(-4, -1), slice(None, None, 3)),
                  (slice(2, 2),), 4, (slice(None), slice(None), slice(None))]
    with h5py.File(path, "r") as f:
        expected = [torch.from_numpy(np.asarray(f["d"][s])) for s in selections]
    for s, e in zip(selections, expected):
        for split in [None] + list(range(e.dim())):
            assert_dist_close(th.io.load_hdf5(path, "d", split=split, slices=s), e, split=split, rtol=0, atol=0)


# -- modes ---------------------------------------------------------------------------------
def test_hdf5_modes(comm, folder):
    path = os.path.join(folder, "m.h5")
    a, b = torch.arange(6.0).reshape(3, 2), torch.ones(4, dtype=torch.int64)
    th.io.save_hdf5(th.distribute(a, split=0), path, "a", chunks=(1, 2), compression="gzip", attrs={"unit": "m", "n": 3})
    th.io.save_hdf5(th.distribute(b, split=0), path, "b", mode="a")  # adds to the file
    th.io.save_hdf5(th.distribute(b, split=0), path, "g/c", mode="r+")
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["a", "b", "g"]
        assert f["a"].chunks == (1, 2) and f["a"].compression == "gzip" and dict(f["a"].attrs) == {"unit": "m", "n": 3}
    assert_dist_close(th.io.load_hdf5(path, "a"), a)
    assert_dist_close(th.io.load_hdf5(path, "g/c"), b)
    with pytest.raises(ValueError, match="already has 'b'"):
        th.io.save_hdf5(th.distribute(a, split=0), path, "b", mode="a")
    assert_dist_close(th.io.load_hdf5(path, "b"), b)  # the existing dataset is untouched
    with pytest.raises(FileExistsError, match="mode='w-'"):
        th.io.save_hdf5(th.distribute(a, split=0), path, "x", mode="w-")
    with pytest.raises(FileNotFoundError, match="r\\+"):
        th.io.save_hdf5(th.distribute(a, split=0), os.path.join(folder, "none.h5"), "x", mode="r+")
    th.io.save_hdf5(th.distribute(b, split=0), os.path.join(folder, "new.h5"), "x", mode="a")  # "a" creates a missing file
    assert_dist_close(th.io.load_hdf5(os.path.join(folder, "new.h5"), "x"), b)
    th.io.save_hdf5(th.distribute(b, split=0), path, "only")  # "w" replaces the file
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["only"]
    with pytest.raises(ValueError, match="mode='r'"):
        th.io.save_hdf5(b, path, "x", mode="r")


def test_save_replaces_existing_npy_and_csv(comm, folder):
    for ext in (".npy", ".csv"):
        path = os.path.join(folder, "r" + ext)
        th.io.save(th.zeros(8, 2, split=0), path)
        th.io.save(th.ones(3, 2, split=0), path)
        assert_dist_close(th.io.load(path), torch.ones(3, 2))


# -- CSV text --------------------------------------------------------------------------------
def test_csv_text(comm, folder):
    path = os.path.join(folder, "t.csv")
    text = "x;y\n# not a comment\n1;2\n\n3;-4.5\r\n5e-1;nan\n" + "".join(f"{i};{i * i}\n" for i in range(6)) + "7;8"
    if comm.rank == 0:
        with open(path, "w", newline="") as f:
            f.write(text)
    comm.barrier()
    expected = torch.tensor([[1, 2], [3, -4.5], [0.5, float("nan")]] + [[i, i * i] for i in range(6)] + [[7, 8]])
    for split in (None, 0, 1):
        assert_dist_close(th.io.load_csv(path, sep=";", header_lines=2, split=split), expected, split=split)
    th.io.save_csv(th.distribute(expected, split=1), path, sep="\t", header="a\tb")
    with open(path) as f:
        assert f.readline() == "a\tb\n" and len(f.readlines()) == len(expected)
    assert_dist_close(th.io.load_csv(path, sep="\t", header_lines=1), expected)


def test_csv_few_long_lines_and_empty(comm, folder):
    path = os.path.join(folder, "long.csv")
    t = torch.randn(2, 300, dtype=torch.float64)  # lines longer than each rank's byte range
    th.io.save_csv(t, path)
    assert_dist_close(th.io.load_csv(path, dtype=torch.float64), t, rtol=0, atol=0)
    if comm.rank == 0:
        open(os.path.join(folder, "empty.csv"), "w").close()
    comm.barrier()
    assert th.io.load_csv(os.path.join(folder, "empty.csv")).shape == (0, 0)


def test_progress_bar_on_rank_0(comm, folder, capsys):
    x = th.arange(1000.0, split=0)
    for ext in FORMATS:
        path = os.path.join(folder, "p" + ext)
        th.io.save(x, path, progress=True)
        th.io.load(path, progress=True)
    err = capsys.readouterr().err
    assert ("save_npy (rank 0" in err and "load_hdf5 (rank 0" in err) == (comm.rank == 0)


# -- bad input -----------------------------------------------------------------------------
def raises_everywhere(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_missing_file_dataset_and_partial_readability(comm, folder):
    missing = os.path.join(folder, "missing")
    for loader, ext in ((th.io.load_npy, ".npy"), (th.io.load_csv, ".csv"), (th.io.load, ".h5")):
        raises_everywhere(FileNotFoundError, f"{ext}' does not exist on rank", loader, missing + ext)
    path = os.path.join(folder, "d.h5")
    th.io.save(th.arange(4, split=0), path)
    raises_everywhere(KeyError, "has no dataset 'nope'", th.io.load_hdf5, path, "nope")
    # A path that only rank 0 can read: every rank raises, naming the ranks that could not.
    mine = path if comm.rank == 0 else missing + ".h5"
    if comm.size > 1:
        raises_everywhere(FileNotFoundError, "missing.h5' does not exist on rank 1", th.io.load_hdf5, mine, "data")
    if comm.rank == 0:
        with open(os.path.join(folder, "bad.npy"), "wb") as f:
            f.write(b"not an npy file")
    comm.barrier()
    raises_everywhere(ValueError, "cannot read .*bad.npy", th.io.load_npy, os.path.join(folder, "bad.npy"))
    raises_everywhere(ValueError, "from its extension '.txt'", th.io.load, os.path.join(folder, "a.txt"))


def test_files_that_differ_between_ranks(comm, folder):
    paths = [os.path.join(folder, f"r{r}.npy") for r in range(comm.size)]
    th.io.save_npy(torch.zeros(comm.rank + 1), paths[comm.rank], comm=th.comm.SelfCommunicator())
    comm.barrier()
    if comm.size > 1:
        raises_everywhere(ValueError, "not the same file on every rank", th.io.load_npy, paths[comm.rank])


def test_slices_that_do_not_fit(comm, folder):
    path = os.path.join(folder, "s.h5")
    th.io.save(th.zeros(4, 3, split=0), path)
    for bad, match in (((slice(0, 5),), "does not fit dimension 0"), ((0, 0, 0), "has 3 entries"), ((1, 3), "index 3 is out of range"),
                       ((slice(None, None, -1),), "positive steps")):
        raises_everywhere(ValueError, match, th.io.load_hdf5, path, "data", slices=bad)
    raises_everywhere(TypeError, "expected slices and ints", th.io.load_hdf5, path, "data", slices=([0, 1],))


def test_csv_wrong_number_of_fields(comm, folder):
    path = os.path.join(folder, "bad.csv")
    lines = [f"{i},{i}" for i in range(10)]
    lines[7] = "7,7,7"
    if comm.rank == 0:
        with open(path, "w") as f:
            f.write("h\n" + "\n".join(lines) + "\n")
    comm.barrier()
    raises_everywhere(ValueError, "line 9 of .*bad.csv' has 3 fields, expected 2", th.io.load_csv, path, header_lines=1)
    if comm.rank == 0:
        with open(path, "w") as f:
            f.write("a,b\n1,2\n")
    comm.barrier()
    raises_everywhere(ValueError, "cannot parse its lines .* as torch.float32", th.io.load_csv, path)  # a header read as data
    raises_everywhere(ValueError, "fewer than header_lines=20", th.io.load_csv, path, header_lines=20)
    raises_everywhere(ValueError, "sep=', '", th.io.load_csv, path, sep=", ")


def test_unstorable_dtypes(comm, folder):
    x = th.ones(4, split=0, dtype=torch.bfloat16)
    for ext in (".h5", ".npy"):
        raises_everywhere(TypeError, r"cannot store torch.bfloat16 .*x.float\(\)", th.io.save, x, os.path.join(folder, "b" + ext))
    raises_everywhere(ValueError, "1-D or 2-D", th.io.save_csv, th.zeros(2, 2, 2, split=0), os.path.join(folder, "c.csv"))
    assert not [n for n in os.listdir(folder) if n.startswith((".b", "b", ".c", "c"))]


@pytest.mark.parametrize("ext", FORMATS)
def test_failed_save_leaves_no_file(comm, folder, monkeypatch, ext):
    """A write that fails on the last rank only: every rank raises, no file (nor temporary) is left."""
    last = comm.size - 1
    target = (h5py.Dataset, "__setitem__") if ext == ".h5" else (_common, "pwrite_all")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    if comm.rank == last:
        monkeypatch.setattr(*target, broken)
    path = os.path.join(folder, "f" + ext)
    x = th.arange(3 * comm.size, split=0, dtype=torch.float64)
    raises_everywhere(OSError, "disk full", th.io.save, x, path)
    assert os.listdir(folder) == []
    if ext == ".h5":  # adding to an existing file: the half-written dataset is removed again
        monkeypatch.undo()
        th.io.save(x, path, "keep")
        if comm.rank == last:
            monkeypatch.setattr(*target, broken)
        raises_everywhere(OSError, "disk full", th.io.save_hdf5, x, path, "half", mode="a")
        with h5py.File(path, "r") as f:
            assert list(f.keys()) == ["keep"]
    comm.barrier()


def test_torch_save_per_rank_still_works(comm, folder):
    x = th.distribute(torch.randn(5, 2), split=0, counts=skewed_counts(5, comm.size))
    path = os.path.join(folder, f"ckpt.{comm.rank}.pt")
    torch.save(x, path)
    y = torch.load(path)
    assert y.counts == x.counts
    assert_dist_close(y, x.full())

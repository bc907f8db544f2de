"""K-means on the iris data set, split across processes, compared with scikit-learn.

    python examples/kmeans_iris.py
    mpiexec -n 2 python examples/kmeans_iris.py

The iris measurements come with scikit-learn (a test dependency of torchheat, used here
for the data and the comparison only): ``pip install scikit-learn`` if it is missing.
"""
import sys

import torch

import torchheat as th

try:
    from sklearn.cluster import KMeans as SklearnKMeans
    from sklearn.datasets import load_iris
except ImportError:
    th.print0("this example loads iris from scikit-learn and compares with it: pip install scikit-learn")
    sys.exit(0)

comm = th.get_comm()
iris = torch.tensor(load_iris().data)  # 150 samples, 4 features
x = th.distribute(iris, split=0)  # every rank keeps its rows
th.print_ranks("my rows of iris:", tuple(x.lshape))

# k-means++ seeding from a seed: the same centers on any number of processes.
km = th.cluster.KMeans(n_clusters=3, init="k-means++", random_state=0).fit(x)
th.print0("centroids:\n", km.cluster_centers_)
th.print0(f"inertia {km.inertia_:.4f} after {km.n_iter_} iterations")
sizes = torch.bincount(km.labels_, minlength=3)  # labels_ stay split like x; bincount is global
th.print0("cluster sizes:", sizes.tolist())

# From the same initial centers, scikit-learn finds the same clustering.
init = km.cluster_centers_.clone()
ours = th.cluster.KMeans(n_clusters=3, init=init).fit(x)
ref = SklearnKMeans(n_clusters=3, init=init.numpy(), n_init=1).fit(iris.numpy())
same_labels = bool((ours.labels_.full() == torch.tensor(ref.labels_)).all())
shift = (ours.cluster_centers_ - torch.tensor(ref.cluster_centers_)).abs().max().item()
th.print0(f"vs scikit-learn: same labels {same_labels}, largest centroid difference {shift:.1e}, "
          f"inertia {ours.inertia_:.6f} vs {ref.inertia_:.6f}")
th.print0("silhouette score:", round(th.cluster.silhouette_score(x, km.labels_), 4))

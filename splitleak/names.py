"""The names of every pluggable implementation, for validating a config in any process.

The implementations live with the parties that own them (defenses in
party_label, attacks in adversary); the shared core must not import them,
so that the feature party never loads the label party's code (or Opacus).
tests/test_names.py checks that these lists equal the registries.
"""

__all__ = ["ATTACK_NAMES", "BUILTIN_ARCHS", "DATASET_NAMES", "DEFENSE_NAMES"]

DEFENSE_NAMES = ("dp_sgd", "grad_compression", "label_dp", "marvell", "none")
ATTACK_NAMES = (
    "cross_kmeans",
    "direction",
    "distance",
    "kmeans_hungarian",
    "kmeans_seeded",
    "norm",
    "prototype",
    "random",
    "tracking",
    "train_centroids",
    "train_knn",
)
DATASET_NAMES = (
    "breast_cancer",
    "cifar10",
    "csv",
    "digits",
    "fashion_mnist",
    "image_folder",
    "mnist",
    "npz",
    "synthetic",
)
BUILTIN_ARCHS = ("resnet18", "simplenet")

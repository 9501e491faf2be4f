"""The shared core validates names without importing the parties that implement them."""

import subprocess
import sys

from adversary.attacks import ATTACKS
from party_label.defenses import DEFENSES
from splitleak.data import DATASETS
from splitleak.models import ARCHS
from splitleak.names import ATTACK_NAMES, BUILTIN_ARCHS, DATASET_NAMES, DEFENSE_NAMES


def test_the_name_lists_are_the_registries():
    assert tuple(DEFENSES) == DEFENSE_NAMES
    assert tuple(ATTACKS) == ATTACK_NAMES
    assert tuple(DATASETS) == DATASET_NAMES
    assert tuple(ARCHS) == BUILTIN_ARCHS


def test_the_feature_party_loads_a_config_without_the_other_parties_code():
    """Loading and validating any config (a defense and attacks named) imports no label-party or adversary
    module, and not Opacus, in the feature party's process."""
    probe = (
        "import sys\n"
        "from party_feature.party import build_feature_party\n"
        "from splitleak.config import load_config\n"
        "load_config(None, ['label_party.defense.name=dp_sgd', 'label_party.defense.epsilon=1',"
        " 'adversary.attacks.per_epoch=[distance,kmeans_seeded]'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'party_label', 'adversary', 'opacus'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

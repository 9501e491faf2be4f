"""The feature party: raw features, bottom model, and the training and inference loops (gRPC client)."""

from party_feature.party import FeatureParty, RunReport, build_feature_party

__all__ = ["FeatureParty", "RunReport", "build_feature_party"]

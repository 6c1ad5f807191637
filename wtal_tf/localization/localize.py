"""Detections of one video by the configured proposal source (SPEC §4; STPN's own for "stpn")."""

from typing import Mapping

from wtal_tf.config import LocalizeConfig
from wtal_tf.localization import stpn_proposals
from wtal_tf.localization import threshold_proposals
from wtal_tf.localization.detections import Detections
from wtal_tf.localization.outputs import StreamOutput

METHODS = {"attention": threshold_proposals.localize, "tcam": threshold_proposals.localize,
           "stpn": stpn_proposals.localize}


def localize(outputs: Mapping[str, StreamOutput], cfg: LocalizeConfig) -> Detections:
  """All detections of one video; cfg.proposal_source must be resolved (for_model)."""
  if cfg.proposal_source not in METHODS:
    raise ValueError(f"proposal_source {cfg.proposal_source!r}: resolve it with for_model()")
  return METHODS[cfg.proposal_source](outputs, cfg)
